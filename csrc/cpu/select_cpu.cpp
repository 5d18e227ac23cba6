// Native CPU kernel of idselect::select (ID-Selection greedy selection with suppression).
//
// Per batch row: one pass computes the token norms, then each greedy step needs one row of
// cosine similarities to the token just picked. That row costs a full read of the row's
// features, so the kernel is bound by memory traffic at LLM widths (D = 1024 .. 4096).
// To read the features fewer times it computes the similarity rows of several likely next
// picks in the same pass ("lookahead"): the picked token plus the best-scored candidates.
// A row is a pure function of the features, computed by the same code whatever else is in
// the pass, so lookahead never changes the result, only how often features are read.
//
// Arithmetic is float32 with FP contraction off (see setup.py / CMakeLists.txt), so the
// results are the same on every x86 ISA level the kernel is compiled for.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../select_checks.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// One clone per ISA level; the loader picks the best the CPU supports.
#define IDSELECT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define IDSELECT_HOT
#endif

namespace idselect {
namespace {

constexpr float kEps = 1e-12f;
constexpr int kMaxLookahead = 8;  // similarity rows computed per pass, at most

// Helpers that take or return vectors are always inlined: a call across target clones would
// pass a 64-byte vector under two different ABIs (zmm register vs memory).
#define IDSELECT_INLINE inline __attribute__((always_inline))

// 16 float32 lanes. Element-wise vector ops round exactly like the scalar ones, and a
// compiler without the ISA splits them, so the summation order below is the same on every
// target; the accumulators stay in registers, which plain float arrays did not.
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

IDSELECT_INLINE float load(float x) { return x; }
IDSELECT_INLINE float load(c10::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
IDSELECT_INLINE float load(c10::Half x) {
#if defined(__FLT16_MAX__)
  _Float16 h;  // one instruction where the CPU has F16C
  std::memcpy(&h, &x.x, sizeof(h));
  return static_cast<float>(h);
#else
  return static_cast<float>(x);
#endif
}

IDSELECT_INLINE f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
IDSELECT_INLINE f32x16 load16(const c10::BFloat16* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof(h));
  const u32x16 bits = __builtin_convertvector(h, u32x16) << 16;
  f32x16 v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}
// Exact float16 -> float32 with integer vector ops: the compiler turns a _Float16 vector
// conversion into one instruction per element on CPUs without AVX512-FP16, 2x slower overall.
IDSELECT_INLINE f32x16 load16(const c10::Half* p) {
  typedef int32_t i32x16 __attribute__((vector_size(64)));
  u16x16 h;
  std::memcpy(&h, p, sizeof(h));
  const u32x16 bits = __builtin_convertvector(h, u32x16);
  const u32x16 sign = (bits & 0x8000u) << 16;
  const u32x16 magnitude = (bits & 0x7fffu) << 13;  // exponent and mantissa, float-aligned
  // Rebias the exponent by multiplying by 2^112 (exact, and right for subnormal halves too).
  f32x16 scaled;
  std::memcpy(&scaled, &magnitude, sizeof(scaled));
  scaled *= 0x1.0p112f;
  u32x16 out;
  std::memcpy(&out, &scaled, sizeof(out));
  const i32x16 special = (bits & 0x7c00u) == 0x7c00u;  // inf / NaN: all-ones exponent
  out = (u32x16)(((i32x16)(magnitude | 0x7f800000u) & special) | ((i32x16)out & ~special));
  out |= sign;
  f32x16 v;
  std::memcpy(&v, &out, sizeof(v));
  return v;
}

// Sum of the 16 lanes in a fixed pairwise order.
IDSELECT_INLINE float reduce_lanes(f32x16 v) {
  float t[8];
  for (int l = 0; l < 8; ++l) t[l] = v[l] + v[l + 8];
  for (int w = 4; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] + t[l + w];
  return t[0];
}

// Dot products of one token x[0..D) with M float32 queries q[m*D ..]. Each query's sum is
// formed in the same order for every M (two 16-lane accumulators over 32-element blocks,
// then a scalar tail), so lookahead cannot change a result.
template <int M, typename T>
IDSELECT_INLINE void dot_many(const T* __restrict x,
                                                    const float* __restrict q, int64_t D,
                                                    float* __restrict out) {
  f32x16 acc0[M], acc1[M];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = f32x16{};
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    const f32x16 x0 = load16(x + d), x1 = load16(x + d + 16);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      acc0[m] += x0 * load16(q + m * D + d);
      acc1[m] += x1 * load16(q + m * D + d + 16);
    }
  }
  for (int m = 0; m < M; ++m) {
    float tail = 0.f;
    for (int64_t e = d; e < D; ++e) tail += load(x[e]) * q[m * D + e];
    out[m] = reduce_lanes(acc0[m] + acc1[m]) + tail;
  }
}

// NaN-propagating max(norm, eps), as torch.clamp_min does.
IDSELECT_INLINE float clamp_norm(float n) { return n < kEps ? kEps : n; }

template <typename T>
IDSELECT_INLINE float token_norm(const T* __restrict x, int64_t D) {
  f32x16 acc0{}, acc1{};
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    const f32x16 x0 = load16(x + d), x1 = load16(x + d + 16);
    acc0 += x0 * x0;
    acc1 += x1 * x1;
  }
  float tail = 0.f;
  for (int64_t e = d; e < D; ++e) tail += load(x[e]) * load(x[e]);
  return clamp_norm(std::sqrt(reduce_lanes(acc0 + acc1) + tail));
}

// Weights w[m][j] = exp(-gamma (1 - cos(q_m, x_j))^2) for tokens j in [j0, j1).
template <int M, typename T>
IDSELECT_INLINE void weights_block(
    const T* base, int64_t token_stride, int64_t j0, int64_t j1, int64_t D,
    const float* queries, const float* query_norms, const float* norms, float neg_gamma,
    float* w, int64_t w_stride) {
  for (int64_t j = j0; j < j1; ++j) {
    float dots[M];
    dot_many<M>(base + j * token_stride, queries, D, dots);
    for (int m = 0; m < M; ++m) {
      float c = dots[m] / (norms[j] * query_norms[m]);
      c = c < -1.f ? -1.f : (c > 1.f ? 1.f : c);  // keeps NaN, like torch.clamp
      const float u = 1.f - c;
      w[m * w_stride + j] = std::exp(neg_gamma * (u * u));
    }
  }
}

template <typename T>
IDSELECT_INLINE void weights_any(
    int num_queries, const T* base, int64_t token_stride, int64_t j0, int64_t j1, int64_t D,
    const float* queries, const float* query_norms, const float* norms, float neg_gamma,
    float* w, int64_t w_stride) {
  switch (num_queries) {
#define IDSELECT_CASE(M)                                                                   \
  case M:                                                                                  \
    return weights_block<M>(base, token_stride, j0, j1, D, queries, query_norms, norms,    \
                            neg_gamma, w, w_stride);
    IDSELECT_CASE(1) IDSELECT_CASE(2) IDSELECT_CASE(3) IDSELECT_CASE(4)
    IDSELECT_CASE(5) IDSELECT_CASE(6) IDSELECT_CASE(7) IDSELECT_CASE(8)
#undef IDSELECT_CASE
  }
}

// The hot loops, one multiversioned entry per feature dtype.
#define IDSELECT_DEFINE_HOT(T)                                                             \
  IDSELECT_HOT void weights_rows(int num_queries, const T* base, int64_t token_stride,     \
                                 int64_t j0, int64_t j1, int64_t D, const float* queries,  \
                                 const float* query_norms, const float* norms,             \
                                 float neg_gamma, float* w, int64_t w_stride) {            \
    weights_any<T>(num_queries, base, token_stride, j0, j1, D, queries, query_norms,       \
                   norms, neg_gamma, w, w_stride);                                         \
  }                                                                                        \
  IDSELECT_HOT void norms_rows(const T* base, int64_t token_stride, int64_t j0, int64_t j1, \
                               int64_t D, float* norms) {                                  \
    for (int64_t j = j0; j < j1; ++j) norms[j] = token_norm(base + j * token_stride, D);   \
  }                                                                                        \
  IDSELECT_HOT void to_float(const T* src, int64_t D, float* dst) {                        \
    for (int64_t d = 0; d < D; ++d) dst[d] = load(src[d]);                                 \
  }
IDSELECT_DEFINE_HOT(float)
IDSELECT_DEFINE_HOT(c10::BFloat16)
IDSELECT_DEFINE_HOT(c10::Half)
#undef IDSELECT_DEFINE_HOT

int lookahead_setting() {
  // Similarity rows per feature pass. IDSELECT_CPU_LOOKAHEAD overrides it (read per call, so
  // the benchmark can compare settings in one process); 1 = one row per step, no lookahead.
  const char* env = std::getenv("IDSELECT_CPU_LOOKAHEAD");
  const int value = env ? std::atoi(env) : 4;
  return std::max(1, std::min(value, kMaxLookahead));
}

// Runs fn(j0, j1) over [0, n), split across threads when the work is large enough.
template <typename Fn>
void for_tokens(int64_t n, int64_t work_per_token, bool parallel, const Fn& fn) {
  if (!parallel) return fn(0, n);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_token));
  at::parallel_for(0, n, grain, fn);
}

// Greedy selection for one batch row; writes k indices to out.
template <typename T>
void select_row(const T* base, int64_t token_stride, int64_t n, int64_t D, int64_t k,
                float neg_gamma, const float* scores, int64_t* out, bool parallel) {
  if (k == 0) return;
  std::vector<float> S(n), norms(n);
  std::vector<uint8_t> available(n, 1);
  for (int64_t j = 0; j < n; ++j) S[j] = scores[j] > 0.f ? scores[j] : 0.f;  // NaN -> 0

  for_tokens(n, D, parallel,
             [&](int64_t j0, int64_t j1) { norms_rows(base, token_stride, j0, j1, D, norms.data()); });

  const int lookahead = lookahead_setting();
  std::vector<float> weights(static_cast<size_t>(lookahead) * n);
  std::vector<float> queries(static_cast<size_t>(lookahead) * D);
  std::vector<float> query_norms(lookahead);
  int64_t cached[kMaxLookahead];
  int num_cached = 0;

  // First pick: scores are >= 0 and never NaN, so -1 is below every candidate.
  int64_t pick = 0;
  float best = -1.f;
  for (int64_t j = 0; j < n; ++j)
    if (S[j] > best) best = S[j], pick = j;

  for (int64_t step = 0; step < k; ++step) {
    out[step] = pick;
    available[pick] = 0;
    if (step == k - 1) break;

    int slot = -1;
    for (int c = 0; c < num_cached; ++c)
      if (cached[c] == pick) slot = c;
    if (slot < 0) {
      // Rows still needed after this one: steps step+1 .. k-2.
      const int rows = static_cast<int>(std::min<int64_t>(lookahead, k - 1 - step));
      cached[0] = pick;
      num_cached = 1;
      // Speculate on the best-scored available tokens (ties -> smallest index).
      while (num_cached < rows) {
        int64_t cand = -1;
        float cand_score = -1.f;
        for (int64_t j = 0; j < n; ++j) {
          if (!available[j] || S[j] <= cand_score) continue;
          bool taken = false;
          for (int c = 1; c < num_cached; ++c) taken |= cached[c] == j;
          if (!taken) cand = j, cand_score = S[j];
        }
        if (cand < 0) break;
        cached[num_cached++] = cand;
      }
      for (int c = 0; c < num_cached; ++c) {
        to_float(base + cached[c] * token_stride, D, queries.data() + c * D);
        query_norms[c] = norms[cached[c]];
      }
      for_tokens(n, D * num_cached, parallel, [&](int64_t j0, int64_t j1) {
        weights_rows(num_cached, base, token_stride, j0, j1, D, queries.data(),
                     query_norms.data(), norms.data(), neg_gamma, weights.data(), n);
      });
      slot = 0;
    }

    // Suppress, and find the next pick in the same sweep.
    const float* w = weights.data() + static_cast<int64_t>(slot) * n;
    const float s_pick = S[pick];
    best = -1.f;
    int64_t next = -1;
    for (int64_t j = 0; j < n; ++j) {
      const float u = S[j] - w[j] * s_pick;
      S[j] = u > 0.f ? u : 0.f;  // NaN -> 0
      if (available[j] && S[j] > best) best = S[j], next = j;
    }
    pick = next;  // k <= n guarantees an available token remains
  }
}

at::Tensor select_cpu(const at::Tensor& features_in, const at::Tensor& scores_in, int64_t k,
                      double gamma, const std::optional<at::Tensor>& lengths_in) {
  check_select_inputs(features_in, scores_in, k, gamma, lengths_in);
  const int64_t B = features_in.size(0), N = features_in.size(1), D = features_in.size(2);
  at::Tensor out = at::empty({B, k}, features_in.options().dtype(at::kLong));
  if (B == 0 || k == 0) return out;

  // Tokens are read with any batch/token stride; only the feature dim must be dense.
  const at::Tensor features = features_in.stride(2) == 1 ? features_in : features_in.contiguous();
  const at::Tensor scores = scores_in.to(at::kFloat).contiguous();
  std::vector<int64_t> lengths(B, N);
  if (lengths_in.has_value()) {
    const at::Tensor len = lengths_in->contiguous();
    std::memcpy(lengths.data(), len.data_ptr<int64_t>(), B * sizeof(int64_t));
  }
  const float neg_gamma = -static_cast<float>(gamma);
  const int64_t batch_stride = features.stride(0), token_stride = features.stride(1);
  int64_t* out_ptr = out.data_ptr<int64_t>();
  const float* scores_ptr = scores.data_ptr<float>();
  // Few rows: parallelise each step over tokens; many rows: one row per task.
  const bool rows_in_parallel = B >= at::get_num_threads();

  auto run = [&](auto* data) {
    auto one_row = [&](int64_t b) {
      select_row(data + b * batch_stride, token_stride, effective_length(lengths[b], k, N), D,
                 k, neg_gamma, scores_ptr + b * N, out_ptr + b * k, !rows_in_parallel);
    };
    if (rows_in_parallel) {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) one_row(b);
      });
    } else {
      for (int64_t b = 0; b < B; ++b) one_row(b);
    }
  };
  switch (features.scalar_type()) {
    case at::kFloat: run(features.data_ptr<float>()); break;
    case at::kBFloat16: run(features.data_ptr<c10::BFloat16>()); break;
    case at::kHalf: run(features.data_ptr<c10::Half>()); break;
    default: TORCH_CHECK(false, "unreachable: dtype checked above");
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(idselect, CPU, m) { m.impl("select", &select_cpu); }

}  // namespace idselect
