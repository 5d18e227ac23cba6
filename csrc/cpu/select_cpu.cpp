// Native CPU kernel of idselect::select (ID-Selection greedy selection with suppression).
//
// Per batch row: one pass computes the token norms, then each greedy step needs one row of
// cosine similarities to the token just picked. That row costs a full read of the row's
// features, so the kernel is bound by memory traffic at LLM widths (D = 1024 .. 4096).
// To read the features fewer times it computes the similarity rows of several likely next
// picks in the same pass ("lookahead"): the picked token plus the best-scored candidates, as
// many as the last pass showed to be useful (adaptive). A row is a pure function of the
// features, computed by the same code whatever else is in the pass, so lookahead never changes
// the result, only how often features are read. Within a pass, tiles of tokens and query rows
// share their loads in registers (vector_dot.h); the thread pool of the passes is token_passes.h.
//
// Arithmetic is float32 with FP contraction off (see setup.py / CMakeLists.txt), so the
// results are the same on every x86 ISA level the kernel is compiled for.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../select_checks.h"
#include "token_passes.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// The hot loops are compiled once per x86-64 ISA level; isa_setting() picks one per call: the
// best the CPU supports, or the level IDSELECT_CPU_ISA asks for (benchmarks compare levels in
// one process, tests check that every level gives the same bits).
#define IDSELECT_X86_LEVELS 1
#define IDSELECT_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define IDSELECT_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define IDSELECT_TARGET_V4
#define IDSELECT_TARGET_V3
#endif

namespace idselect {
namespace {

constexpr int kMaxLookahead = 32;  // similarity rows computed per pass, at most

#include "vector_dot.h"

// A count from the environment variable `name`: unset, empty or "auto" gives auto_value; else
// decimal digits for an integer in [1, max]; anything else is a ValueError naming the variable.
int count_setting(const char* name, int auto_value, int max) {
  const char* env = std::getenv(name);
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return auto_value;
  char* end = nullptr;
  const long value = env[0] >= '0' && env[0] <= '9' ? std::strtol(env, &end, 10) : 0;
  TORCH_CHECK_VALUE(end != nullptr && *end == '\0' && value >= 1 && value <= max, "idselect.select: ", name,
                    " must be auto or an integer in [1, ", max, "], got '", env, "'");
  return static_cast<int>(value);
}

// IDSELECT_CPU_TILE_TOKENS=N caps the tokens per register tile at N (1 = one token per pass of
// the query rows; for comparisons, the same bits); auto: the level's tile (6 at v4, 3 below),
// which also caps a larger N.
inline int tile_tokens_setting() {
  return count_setting("IDSELECT_CPU_TILE_TOKENS", kMaxTileTokens, kMaxTileTokens);
}

// Dot products of tokens [j, j + count) with the queries, count <= the level's tile.
template <int W, typename T>
IDSELECT_INLINE void dots_for_tokens(int count, int num_queries, const T* const* x, const float* queries, int64_t D,
                                     float* dots) {
  switch (count) {
#define IDSELECT_CASE(C) \
  case C:                \
    if constexpr (C <= kTileTokens<W>) {                                                    \
      dots_for_tile<W, C>(num_queries, x, queries, D, dots);                                 \
      return;                                                                                \
    }                                                                                        \
    std::abort();
    IDSELECT_CASE(1) IDSELECT_CASE(2) IDSELECT_CASE(3) IDSELECT_CASE(4) IDSELECT_CASE(5) IDSELECT_CASE(6)
#undef IDSELECT_CASE
    default: std::abort();  // unreachable: weights_any caps count at the level's tile
  }
}

// Weights w[m][j] = exp(-gamma (1 - cos(q_m, x_j))^2) for tokens j in [j0, j1), m < num_queries.
template <int W, typename T>
IDSELECT_INLINE void weights_any(
    int num_queries, const T* base, int64_t token_stride, int64_t j0, int64_t j1, int64_t D,
    const float* queries, const float* query_norms, const float* norms, float neg_gamma,
    float* w, int64_t w_stride, int tile_tokens) {
  const int tile = std::min(tile_tokens, kTileTokens<W>);
  float dots[kMaxTileTokens * kMaxLookahead];
  const T* x[kMaxTileTokens];
  for (int64_t j = j0; j < j1;) {
    const int count = static_cast<int>(std::min<int64_t>(tile, j1 - j));
    for (int t = 0; t < count; ++t) x[t] = base + (j + t) * token_stride;
    dots_for_tokens<W>(count, num_queries, x, queries, D, dots);
    for (int t = 0; t < count; ++t, ++j) {
      for (int m = 0; m < num_queries; ++m) {
        float c = dots[t * kMaxLookahead + m] / (norms[j] * query_norms[m]);
        c = c < -1.f ? -1.f : (c > 1.f ? 1.f : c);  // keeps NaN, like torch.clamp
        const float u = 1.f - c;
        w[m * w_stride + j] = std::exp(neg_gamma * (u * u));
      }
    }
  }
}

// The hot loops, one entry per ISA level (the helpers above are inlined into each, so each is
// compiled for its level; nothing that passes a vector crosses between levels).
#define IDSELECT_DEFINE_HOT(LEVEL, TARGET, W)                                                 \
  template <typename T>                                                                     \
  TARGET void weights_rows_##LEVEL(int num_queries, const T* base, int64_t token_stride,    \
                                   int64_t j0, int64_t j1, int64_t D, const float* queries, \
                                   const float* query_norms, const float* norms,            \
                                   float neg_gamma, float* w, int64_t w_stride, int tile_tokens) { \
    weights_any<W, T>(num_queries, base, token_stride, j0, j1, D, queries, query_norms,     \
                      norms, neg_gamma, w, w_stride, tile_tokens);                                \
  }                                                                                         \
  template <typename T>                                                                     \
  TARGET void norms_rows_##LEVEL(const T* base, int64_t token_stride, int64_t j0, int64_t j1, \
                                 int64_t D, float* norms) {                                 \
    for (int64_t j = j0; j < j1; ++j) norms[j] = token_norm<W>(base + j * token_stride, D); \
  }                                                                                         \
  template <typename T>                                                                     \
  TARGET void to_float_##LEVEL(const T* src, int64_t D, float* dst) {                       \
    for (int64_t d = 0; d < D; ++d) dst[d] = load(src[d]);                                  \
  }                                                                                         \
  TARGET int64_t suppress_##LEVEL(float* S, const float* w, const uint8_t* available, int64_t n, \
                                  float s_pick) {                                           \
    return suppress_and_pick<W>(S, w, available, n, s_pick);                                \
  }
IDSELECT_DEFINE_HOT(v4, IDSELECT_TARGET_V4, 16)
IDSELECT_DEFINE_HOT(v3, IDSELECT_TARGET_V3, 8)
IDSELECT_DEFINE_HOT(baseline, , 4)
#undef IDSELECT_DEFINE_HOT

enum class Isa { kBaseline = 0, kV3 = 1, kV4 = 2 };

const char* isa_name(Isa isa) {
  return isa == Isa::kV4 ? "x86-64-v4" : isa == Isa::kV3 ? "x86-64-v3" : "baseline";
}

Isa best_isa() {
#ifdef IDSELECT_X86_LEVELS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::kV4;
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::kV3;
#endif
  return Isa::kBaseline;
}

// The level of this call: IDSELECT_CPU_ISA (auto | v4 | v3 | baseline, read per call), else
// the best the CPU has. Every level gives the same results (FP contraction off, one order).
Isa isa_setting() {
  static const Isa best = best_isa();
  const char* env = std::getenv("IDSELECT_CPU_ISA");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return best;
  Isa want;
  if (std::strcmp(env, "v4") == 0) want = Isa::kV4;
  else if (std::strcmp(env, "v3") == 0) want = Isa::kV3;
  else if (std::strcmp(env, "baseline") == 0) want = Isa::kBaseline;
  else TORCH_CHECK_VALUE(false, "idselect.select: IDSELECT_CPU_ISA must be auto, v4, v3 or baseline, got '", env, "'");
  TORCH_CHECK_VALUE(want <= best, "idselect.select: IDSELECT_CPU_ISA=", env, " asks for ", isa_name(want),
                    ", but this CPU (or build) offers at most ", isa_name(best));
  return want;
}

// The hot loops of one ISA level, for features of type T.
template <typename T>
struct HotLoops {
  void (*weights_rows)(int, const T*, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                       const float*, float, float*, int64_t, int);
  void (*norms_rows)(const T*, int64_t, int64_t, int64_t, int64_t, float*);
  void (*to_float)(const T*, int64_t, float*);
  int64_t (*suppress)(float*, const float*, const uint8_t*, int64_t, float);
};

template <typename T>
HotLoops<T> hot_loops(Isa isa) {
  switch (isa) {
    case Isa::kV4: return {weights_rows_v4<T>, norms_rows_v4<T>, to_float_v4<T>, suppress_v4};
    case Isa::kV3: return {weights_rows_v3<T>, norms_rows_v3<T>, to_float_v3<T>, suppress_v3};
    case Isa::kBaseline: break;
  }
  return {weights_rows_baseline<T>, norms_rows_baseline<T>, to_float_baseline<T>, suppress_baseline};
}

// Similarity rows per feature pass: 0 = adaptive (the default), else that many.
// IDSELECT_CPU_LOOKAHEAD fixes it (read per call, so the benchmark can compare settings in one
// process); 1 = one row per step, no lookahead.
int lookahead_setting() { return count_setting("IDSELECT_CPU_LOOKAHEAD", 0, kMaxLookahead); }

// Adaptive lookahead: a pass whose rows all served a step doubles the next pass's rows (up to
// kAdaptiveMax, or kAdaptiveMaxBig for a big row, below); a pass cut short by a pick outside
// its rows sizes the next one to the steps it served, plus one. Features whose picks follow the scores (little suppression) get few passes;
// clustered ones, where suppression reorders the candidates, waste few speculative rows.
// A row whose features are large (over kBigRowBytes, several times a core's L2) makes every pass
// a read from L3 or memory, so its passes start at 8 rows and grow to 32 (bench/NOTES.md).
constexpr int kAdaptiveStart = 4;
constexpr int kAdaptiveMax = 16;
constexpr int kAdaptiveStartBig = 8;
constexpr int kAdaptiveMaxBig = 32;
constexpr int64_t kBigRowBytes = int64_t(8) << 20;
static_assert(kAdaptiveMaxBig <= kMaxLookahead, "adaptive passes fit the lookahead buffers");


// The per-call settings of the environment (read once, on the calling thread).
struct Settings {
  int fixed_lookahead;  // 0: adaptive
  int tile_tokens;      // tokens per register tile, at most
};

// Greedy selection for one batch row; writes k indices to out.
template <typename T>
void select_row(const HotLoops<T>& hot, const Settings& settings, const T* base, int64_t token_stride, int64_t n,
                int64_t D, int64_t k, float neg_gamma, const float* scores, int64_t* out, bool parallel) {
  if (k == 0) return;
  std::vector<float> S(n), norms(n);
  std::vector<uint8_t> available(n, 1);
  for (int64_t j = 0; j < n; ++j) S[j] = scores[j] > 0.f ? scores[j] : 0.f;  // NaN -> 0

  for_tokens(n, D, parallel,
             [&](int64_t j0, int64_t j1) { hot.norms_rows(base, token_stride, j0, j1, D, norms.data()); });

  const int fixed_lookahead = settings.fixed_lookahead;
  const bool big = n * D * static_cast<int64_t>(sizeof(T)) > kBigRowBytes;
  const int ceiling = big ? kAdaptiveMaxBig : kAdaptiveMax;
  const int max_rows = fixed_lookahead > 0 ? fixed_lookahead : ceiling;
  int lookahead = fixed_lookahead > 0 ? fixed_lookahead : (big ? kAdaptiveStartBig : kAdaptiveStart);
  std::vector<float> weights(static_cast<size_t>(max_rows) * n);
  std::vector<float> queries(static_cast<size_t>(max_rows) * D);
  std::vector<float> query_norms(max_rows);
  int64_t cached[kMaxLookahead];
  int num_cached = 0;
  int served = 0;  // steps the current pass's rows have served

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
      if (fixed_lookahead == 0 && num_cached > 0)
        lookahead = served >= num_cached ? std::min(2 * lookahead, ceiling) : served + 1;
      served = 0;
      // Rows still needed after this one: steps step+1 .. k-2.
      const int rows = static_cast<int>(std::min<int64_t>(lookahead, k - 1 - step));
      cached[0] = pick;
      num_cached = 1;
      // Speculate on the best-scored available tokens, best first (ties -> smallest index): one
      // sweep keeps them sorted, a later token entering only ahead of strictly lower scores.
      float cached_score[kMaxLookahead];
      for (int64_t j = 0; j < n && rows > 1; ++j) {
        if (!available[j] || (num_cached == rows && S[j] <= cached_score[rows - 1])) continue;
        int at = num_cached < rows ? num_cached++ : rows - 1;
        for (; at > 1 && cached_score[at - 1] < S[j]; --at)
          cached[at] = cached[at - 1], cached_score[at] = cached_score[at - 1];
        cached[at] = j, cached_score[at] = S[j];
      }
      for (int c = 0; c < num_cached; ++c) {
        hot.to_float(base + cached[c] * token_stride, D, queries.data() + c * D);
        query_norms[c] = norms[cached[c]];
      }
      for_tokens(n, D * num_cached, parallel, [&](int64_t j0, int64_t j1) {
        hot.weights_rows(num_cached, base, token_stride, j0, j1, D, queries.data(),
                     query_norms.data(), norms.data(), neg_gamma, weights.data(), n, settings.tile_tokens);
      });
      slot = 0;
    }
    ++served;

    // Suppress, and find the next pick in the same sweep.
    const float* w = weights.data() + static_cast<int64_t>(slot) * n;
    pick = hot.suppress(S.data(), w, available.data(), n, S[pick]);  // k <= n: one remains available
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

  const Isa isa = isa_setting();
  // Read here, on the calling thread: a bad value raises before any work (and never in a helper).
  const Settings settings{lookahead_setting(), tile_tokens_setting()};

  auto run = [&](auto* data) {
    const auto hot = hot_loops<std::remove_pointer_t<decltype(data)>>(isa);
    auto one_row = [&](int64_t b) {
      select_row(hot, settings, data + b * batch_stride, token_stride, effective_length(lengths[b], k, N), D,
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

// The ISA level a call made now would run at (honours IDSELECT_CPU_ISA; throws for a bad value).
const char* cpu_isa_name() {
  try {
    return isa_name(isa_setting());
  } catch (const c10::Error& error) {  // the message without the C++ backtrace
    throw std::invalid_argument(error.what_without_backtrace());
  }
}

TORCH_LIBRARY_IMPL(idselect, CPU, m) { m.impl("select", &select_cpu); }

}  // namespace idselect
