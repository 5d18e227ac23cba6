// The CPU kernel's arithmetic: float32 lanes held in the ISA level's native vectors, loads of
// float32 / bfloat16 / float16 features, and the dot products of tokens with query rows, each
// sum formed in one fixed order whatever the level, grouping or loop (so results are the same
// bits everywhere). Included by select_cpu.cpp only, inside its anonymous namespace, so that
// every helper is compiled into each ISA level's hot loops.
#pragma once

constexpr float kEps = 1e-12f;
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
