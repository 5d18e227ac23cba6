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

constexpr float kEps = 1e-12f;
constexpr int kMaxLookahead = 32;  // similarity rows computed per pass, at most
constexpr int kQueryGroup = 8;  // queries per compiled dot-product block (larger passes loop over groups)

// Helpers that take or return vectors are always inlined: a call across ISA levels would pass
// a vector under two different ABIs (register vs memory).
#define IDSELECT_INLINE inline __attribute__((always_inline))

// 16 float32 lanes, held as 16 / W parts of the level's native width W (x86-64-v4: one 16-lane
// zmm; v3: two 8-lane ymm; baseline: four 4-lane xmm). A 64-byte generic vector on a 32-byte
// ISA is lowered through the stack, which made the v3 clone 3-7x slower than v4 (issue 20);
// parts of the native width stay in registers. Every op is element-wise and rounds like the
// scalar one, so lane l holds the same value at every width: results are the same bits on
// every level.
template <int W>
struct VecTypes {
  static_assert(W == 16 || W == 8 || W == 4, "native widths: 16 (v4), 8 (v3), 4 (baseline) lanes");
  typedef float f __attribute__((vector_size(4 * W)));
  typedef uint32_t u __attribute__((vector_size(4 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
  typedef uint16_t h __attribute__((vector_size(2 * W)));
};

template <int W>
struct Lanes16 {
  static constexpr int kParts = 16 / W;
  typename VecTypes<W>::f part[kParts];
};
template <int W>
IDSELECT_INLINE Lanes16<W> zero16() {
  Lanes16<W> v;
  for (int p = 0; p < Lanes16<W>::kParts; ++p) v.part[p] = typename VecTypes<W>::f{};
  return v;
}
template <int W>
IDSELECT_INLINE void add_product(Lanes16<W>& acc, const Lanes16<W>& a, const Lanes16<W>& b) {
  for (int p = 0; p < Lanes16<W>::kParts; ++p) acc.part[p] += a.part[p] * b.part[p];
}

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

template <int W>
IDSELECT_INLINE typename VecTypes<W>::f load_part(const float* p) {
  typename VecTypes<W>::f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
IDSELECT_INLINE typename VecTypes<W>::f load_part(const c10::BFloat16* p) {
  typename VecTypes<W>::h h;
  std::memcpy(&h, p, sizeof(h));
  const typename VecTypes<W>::u bits = __builtin_convertvector(h, typename VecTypes<W>::u) << 16;
  typename VecTypes<W>::f v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}
// Exact float16 -> float32 with integer vector ops: the compiler turns a _Float16 vector
// conversion into one instruction per element on CPUs without AVX512-FP16, 2x slower overall.
template <int W>
IDSELECT_INLINE typename VecTypes<W>::f load_part(const c10::Half* p) {
  typedef typename VecTypes<W>::u u;
  typedef typename VecTypes<W>::i i;
  typename VecTypes<W>::h h;
  std::memcpy(&h, p, sizeof(h));
  const u bits = __builtin_convertvector(h, u);
  const u sign = (bits & 0x8000u) << 16;
  const u magnitude = (bits & 0x7fffu) << 13;  // exponent and mantissa, float-aligned
  // Rebias the exponent by multiplying by 2^112 (exact, and right for subnormal halves too).
  typename VecTypes<W>::f scaled;
  std::memcpy(&scaled, &magnitude, sizeof(scaled));
  scaled *= 0x1.0p112f;
  u out;
  std::memcpy(&out, &scaled, sizeof(out));
  const i special = (bits & 0x7c00u) == 0x7c00u;  // inf / NaN: all-ones exponent
  out = (u)(((i)(magnitude | 0x7f800000u) & special) | ((i)out & ~special));
  out |= sign;
  typename VecTypes<W>::f v;
  std::memcpy(&v, &out, sizeof(v));
  return v;
}
template <int W, typename T>
IDSELECT_INLINE Lanes16<W> load16(const T* p) {
  Lanes16<W> v;
  for (int part = 0; part < Lanes16<W>::kParts; ++part) v.part[part] = load_part<W>(p + part * W);
  return v;
}

// Sum of the 16 lanes in a fixed pairwise order.
template <int W>
IDSELECT_INLINE float reduce_lanes(const Lanes16<W>& v) {
  float lanes[16];
  std::memcpy(lanes, v.part, sizeof(lanes));
  float t[8];
  for (int l = 0; l < 8; ++l) t[l] = lanes[l] + lanes[l + 8];
  for (int w = 4; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] + t[l + w];
  return t[0];
}
template <int W>
IDSELECT_INLINE Lanes16<W> sum16(const Lanes16<W>& a, const Lanes16<W>& b) {
  Lanes16<W> v;
  for (int p = 0; p < Lanes16<W>::kParts; ++p) v.part[p] = a.part[p] + b.part[p];
  return v;
}

// Queries whose accumulators fit the level's registers next to the token's parts: 2 x 16
// lanes per query, so 8 queries in 32 zmm, 2 in 16 ymm, 1 in 16 xmm. More lookahead rows are
// done in groups, the token re-read from L1; each query's sum is formed in the same order.
template <int W>
constexpr int kQueriesPerPass = W == 16 ? 8 : (W == 8 ? 2 : 1);

// Dot products of one token x[0..D) with M float32 queries q[m*D ..]. Each query's sum is
// formed in the same order for every M and every grouping (two 16-lane accumulators over
// 32-element blocks, then a scalar tail), so lookahead cannot change a result.
template <int W, int M, typename T>
IDSELECT_INLINE void dot_group(const T* __restrict x, const float* __restrict q, int64_t D,
                               float* __restrict out) {
  Lanes16<W> acc0[M], acc1[M];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = zero16<W>();
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    const Lanes16<W> x0 = load16<W>(x + d), x1 = load16<W>(x + d + 16);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      add_product(acc0[m], x0, load16<W>(q + m * D + d));
      add_product(acc1[m], x1, load16<W>(q + m * D + d + 16));
    }
  }
  for (int m = 0; m < M; ++m) {
    float tail = 0.f;
    for (int64_t e = d; e < D; ++e) tail += load(x[e]) * q[m * D + e];
    out[m] = reduce_lanes(sum16(acc0[m], acc1[m])) + tail;
  }
}

template <int W, int M, typename T>
IDSELECT_INLINE void dot_many(const T* __restrict x, const float* __restrict q, int64_t D,
                              float* __restrict out) {
  constexpr int G = M < kQueriesPerPass<W> ? M : kQueriesPerPass<W>;
  int m = 0;
  for (; m + G <= M; m += G) dot_group<W, G>(x, q + m * D, D, out + m);
  if constexpr (M % G != 0) dot_group<W, M % G>(x, q + m * D, D, out + m);
}

// NaN-propagating max(norm, eps), as torch.clamp_min does.
IDSELECT_INLINE float clamp_norm(float n) { return n < kEps ? kEps : n; }

template <int W, typename T>
IDSELECT_INLINE float token_norm(const T* __restrict x, int64_t D) {
  Lanes16<W> acc0 = zero16<W>(), acc1 = zero16<W>();
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    const Lanes16<W> x0 = load16<W>(x + d), x1 = load16<W>(x + d + 16);
    add_product(acc0, x0, x0);
    add_product(acc1, x1, x1);
  }
  float tail = 0.f;
  for (int64_t e = d; e < D; ++e) tail += load(x[e]) * load(x[e]);
  return clamp_norm(std::sqrt(reduce_lanes(sum16(acc0, acc1)) + tail));
}

// Dot products of token x with queries [0, num_queries): full groups of kQueryGroup, then the
// rest, each by dot_many (the token stays in L1 between groups; sums do not depend on grouping).
template <int W, typename T>
IDSELECT_INLINE void dots_for_token(int num_queries, const T* __restrict x, const float* __restrict q, int64_t D,
                                    float* __restrict out) {
  int g = 0;
  for (; g + kQueryGroup <= num_queries; g += kQueryGroup) dot_many<W, kQueryGroup>(x, q + g * D, D, out + g);
  switch (num_queries - g) {
#define IDSELECT_CASE(M) \
  case M:                \
    return dot_many<W, M>(x, q + g * D, D, out + g);
    IDSELECT_CASE(1) IDSELECT_CASE(2) IDSELECT_CASE(3) IDSELECT_CASE(4)
    IDSELECT_CASE(5) IDSELECT_CASE(6) IDSELECT_CASE(7)
#undef IDSELECT_CASE
    default: return;
  }
}

// Experimental switch: IDSELECT_CPU_PAIRS=0 turns the two-token kernel off.
inline bool pair_kernel_setting() {
  const char* env = std::getenv("IDSELECT_CPU_PAIRS");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// Queries per pass of the two-token kernel (dot_pair): each query's row is loaded once for two
// tokens, so a product costs fewer loads (the one-token loop is load-bound). Sized to the
// registers: v4 2 x 8 zmm accumulators; v3 2 x 3 x 2 ymm (3 measured 10-15% faster than 2);
// baseline 2 x 1 x 4 xmm.
template <int W>
constexpr int kPairQueries = W == 16 ? 8 : (W == 8 ? 3 : 1);

// Dot products of two tokens xa, xb with M queries. Each sum is split into its two halves, the
// elements [32b, 32b + 16) and [32b + 16, 32b + 32) of every 32-block b, swept one after the
// other: a half's 16 lanes add the same products in the same order as dot_group's acc0 / acc1,
// then the same reduction and tail, so the results are dot_group's bits.
template <int W, int M, typename T>
IDSELECT_INLINE void dot_pair(const T* __restrict xa, const T* __restrict xb, const float* __restrict q,
                              int64_t D, float* __restrict out_a, float* __restrict out_b) {
  Lanes16<W> halves[2][2][M];  // [half][token][query]
  const int64_t full = D - D % 32;
  for (int h = 0; h < 2; ++h) {
    Lanes16<W> acc_a[M], acc_b[M];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) acc_a[m] = acc_b[m] = zero16<W>();
    for (int64_t d = 16 * h; d < full; d += 32) {
      const Lanes16<W> a = load16<W>(xa + d), b = load16<W>(xb + d);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const Lanes16<W> qm = load16<W>(q + m * D + d);
        add_product(acc_a[m], a, qm);
        add_product(acc_b[m], b, qm);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) halves[h][0][m] = acc_a[m], halves[h][1][m] = acc_b[m];
  }
  for (int m = 0; m < M; ++m) {
    float tail_a = 0.f, tail_b = 0.f;
    for (int64_t e = full; e < D; ++e) tail_a += load(xa[e]) * q[m * D + e];
    for (int64_t e = full; e < D; ++e) tail_b += load(xb[e]) * q[m * D + e];
    out_a[m] = reduce_lanes(sum16(halves[0][0][m], halves[1][0][m])) + tail_a;
    out_b[m] = reduce_lanes(sum16(halves[0][1][m], halves[1][1][m])) + tail_b;
  }
}

// dot_pair for queries [0, num_queries), in groups of kPairQueries.
template <int W, typename T>
IDSELECT_INLINE void dots_for_pair(int num_queries, const T* xa, const T* xb, const float* q, int64_t D,
                                   float* out_a, float* out_b) {
  constexpr int G = kPairQueries<W>;
  int g = 0;
  for (; g + G <= num_queries; g += G) dot_pair<W, G>(xa, xb, q + g * D, D, out_a + g, out_b + g);
  switch (num_queries - g) {
#define IDSELECT_CASE(M) \
  case M:                \
    if constexpr (M < G) dot_pair<W, M>(xa, xb, q + g * D, D, out_a + g, out_b + g); \
    return;
    IDSELECT_CASE(1) IDSELECT_CASE(2) IDSELECT_CASE(3) IDSELECT_CASE(4)
    IDSELECT_CASE(5) IDSELECT_CASE(6) IDSELECT_CASE(7)
#undef IDSELECT_CASE
    default: return;
  }
}

// Weights w[m][j] = exp(-gamma (1 - cos(q_m, x_j))^2) for tokens j in [j0, j1), m < num_queries.
template <int W, typename T>
IDSELECT_INLINE void weights_any(
    int num_queries, const T* base, int64_t token_stride, int64_t j0, int64_t j1, int64_t D,
    const float* queries, const float* query_norms, const float* norms, float neg_gamma,
    float* w, int64_t w_stride) {
  float dots[2][kMaxLookahead];
  const bool pairs = pair_kernel_setting();
  for (int64_t j = j0; j < j1;) {
    const int count = pairs && j + 1 < j1 ? 2 : 1;
    if (count == 2)
      dots_for_pair<W>(num_queries, base + j * token_stride, base + (j + 1) * token_stride, queries, D, dots[0],
                       dots[1]);
    else
      dots_for_token<W>(num_queries, base + j * token_stride, queries, D, dots[0]);
    for (int t = 0; t < count; ++t, ++j) {
      for (int m = 0; m < num_queries; ++m) {
        float c = dots[t][m] / (norms[j] * query_norms[m]);
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
                                   float neg_gamma, float* w, int64_t w_stride) {           \
    weights_any<W, T>(num_queries, base, token_stride, j0, j1, D, queries, query_norms,     \
                      norms, neg_gamma, w, w_stride);                                       \
  }                                                                                         \
  template <typename T>                                                                     \
  TARGET void norms_rows_##LEVEL(const T* base, int64_t token_stride, int64_t j0, int64_t j1, \
                                 int64_t D, float* norms) {                                 \
    for (int64_t j = j0; j < j1; ++j) norms[j] = token_norm<W>(base + j * token_stride, D); \
  }                                                                                         \
  template <typename T>                                                                     \
  TARGET void to_float_##LEVEL(const T* src, int64_t D, float* dst) {                       \
    for (int64_t d = 0; d < D; ++d) dst[d] = load(src[d]);                                  \
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
                       const float*, float, float*, int64_t);
  void (*norms_rows)(const T*, int64_t, int64_t, int64_t, int64_t, float*);
  void (*to_float)(const T*, int64_t, float*);
};

template <typename T>
HotLoops<T> hot_loops(Isa isa) {
  switch (isa) {
    case Isa::kV4: return {weights_rows_v4<T>, norms_rows_v4<T>, to_float_v4<T>};
    case Isa::kV3: return {weights_rows_v3<T>, norms_rows_v3<T>, to_float_v3<T>};
    case Isa::kBaseline: break;
  }
  return {weights_rows_baseline<T>, norms_rows_baseline<T>, to_float_baseline<T>};
}

// Similarity rows per feature pass: 0 = adaptive (the default), else that many.
// IDSELECT_CPU_LOOKAHEAD fixes it (read per call, so the benchmark can compare settings in one
// process); 1 = one row per step, no lookahead.
int lookahead_setting() {
  const char* env = std::getenv("IDSELECT_CPU_LOOKAHEAD");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return 0;
  return std::max(1, std::min(std::atoi(env), kMaxLookahead));
}

// Adaptive lookahead: a pass whose rows all served a step doubles the next pass's rows (up to
// kAdaptiveMax); a pass cut short by a pick outside its rows sizes the next one to the steps it
// served, plus one. Features whose picks follow the scores (little suppression) get few passes;
// clustered ones, where suppression reorders the candidates, waste few speculative rows.
constexpr int kAdaptiveStart = 4;
constexpr int kAdaptiveMax = 16;


// Greedy selection for one batch row; writes k indices to out.
template <typename T>
void select_row(const HotLoops<T>& hot, const T* base, int64_t token_stride, int64_t n, int64_t D,
                int64_t k, float neg_gamma, const float* scores, int64_t* out, bool parallel) {
  if (k == 0) return;
  std::vector<float> S(n), norms(n);
  std::vector<uint8_t> available(n, 1);
  for (int64_t j = 0; j < n; ++j) S[j] = scores[j] > 0.f ? scores[j] : 0.f;  // NaN -> 0

  for_tokens(n, D, parallel,
             [&](int64_t j0, int64_t j1) { hot.norms_rows(base, token_stride, j0, j1, D, norms.data()); });

  const int fixed_lookahead = lookahead_setting();
  const int ceiling = kAdaptiveMax;
  const int max_rows = fixed_lookahead > 0 ? fixed_lookahead : ceiling;
  int lookahead = fixed_lookahead > 0 ? fixed_lookahead : std::min(kAdaptiveStart, ceiling);
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
        hot.to_float(base + cached[c] * token_stride, D, queries.data() + c * D);
        query_norms[c] = norms[cached[c]];
      }
      for_tokens(n, D * num_cached, parallel, [&](int64_t j0, int64_t j1) {
        hot.weights_rows(num_cached, base, token_stride, j0, j1, D, queries.data(),
                     query_norms.data(), norms.data(), neg_gamma, weights.data(), n);
      });
      slot = 0;
    }
    ++served;

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

  const Isa isa = isa_setting();

  auto run = [&](auto* data) {
    const auto hot = hot_loops<std::remove_pointer_t<decltype(data)>>(isa);
    auto one_row = [&](int64_t b) {
      select_row(hot, data + b * batch_stride, token_stride, effective_length(lengths[b], k, N), D,
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
