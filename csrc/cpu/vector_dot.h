// The CPU kernel's arithmetic: float32 lanes held in the ISA level's native vectors, loads of
// float32 / bfloat16 / float16 features, and the dot products of tokens with query rows, each
// sum formed in one fixed order whatever the level, grouping or loop (so results are the same
// bits everywhere). Included by select_cpu.cpp only, inside its anonymous namespace, so that
// every helper is compiled into each ISA level's hot loops.
#pragma once

constexpr float kEps = 1e-12f;

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

// The order of every sum of products over D (dot products and norms), the same at every level:
// the elements below the last multiple of 32 form 32 chains, element d in chain d % 32, each
// chain adding its products block by block in order; reduce_chains then adds the 32 chain sums
// in a fixed tree, and the tail (the D % 32 elements past them) is added last, in order. Chains
// are independent, so any level may sweep them in parts of its native width.
IDSELECT_INLINE float reduce_chains(const float* chains) {
  // Four-lane vectors (every level has them): element-wise adds round like the scalar tree
  // t[l] = c[l] + c[l + 16], then t[l] + t[l + 8], t[l] + t[l + 4], t[l] + t[l + 2], t[0] + t[1].
  typedef float f4 __attribute__((vector_size(16)));
  f4 c[8];
  std::memcpy(c, chains, sizeof(c));
  const f4 t0 = c[0] + c[4], t1 = c[1] + c[5], t2 = c[2] + c[6], t3 = c[3] + c[7];  // l = 0..15
  const f4 v0 = t0 + t2, v1 = t1 + t3;  // l = 0..7: t[l] + t[l + 8]
  const f4 w = v0 + v1;                 // l = 0..3: + [l + 4]
  const float x0 = w[0] + w[2], x1 = w[1] + w[3];       // l = 0, 1: + [l + 2]
  return x0 + x1;
}

// NaN-propagating max(norm, eps), as torch.clamp_min does.
IDSELECT_INLINE float clamp_norm(float n) { return n < kEps ? kEps : n; }

template <int W, typename T>
IDSELECT_INLINE float token_norm(const T* __restrict x, int64_t D) {
  Lanes16<W> acc0 = zero16<W>(), acc1 = zero16<W>();  // chains 0..15 and 16..31
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    const Lanes16<W> x0 = load16<W>(x + d), x1 = load16<W>(x + d + 16);
    add_product(acc0, x0, x0);
    add_product(acc1, x1, x1);
  }
  float chains[32];
  std::memcpy(chains, acc0.part, 16 * sizeof(float));
  std::memcpy(chains + 16, acc1.part, 16 * sizeof(float));
  float tail = 0.f;
  for (int64_t e = d; e < D; ++e) tail += load(x[e]) * load(x[e]);
  return clamp_norm(std::sqrt(reduce_chains(chains) + tail));
}

// Dot products of a tile of tokens with the pass's query rows: the GEMM-like register tile of
// the similarity rows. Each product of a token part and a query part is one native vector
// multiply and add into one register per (token, query) pair, so a tile of T tokens and M
// queries does T x M multiply-adds for T + M loads (a one-token loop: 2 loads per multiply-add;
// loads, not arithmetic, bound it, issue 20). The chains are swept in parts of the native width
// W (32 / W sweeps over the same D chunk, re-read from L1), D in chunks of kChunk elements so
// that the tile's rows stay in L1 at any width. Sized to the registers, T x M accumulators next
// to T token parts and a query part: v4 6 x 4 of 32 zmm, v3 and baseline 3 x 3 of 16 ymm / xmm.
template <int W>
constexpr int kTileTokens = W == 16 ? 6 : 3;
template <int W>
constexpr int kTileQueries = W == 16 ? 4 : 3;
constexpr int kMaxTileTokens = 6;
constexpr int64_t kChunk = 1024;  // elements of D per sweep (a multiple of 32)
static_assert(kChunk % 32 == 0, "a chunk holds whole 32-element blocks");

// Adds the products of chunk [c0, c1) of D (c1 - c0 a multiple of 32) to the chains of T
// tokens and M queries q[m * D]; chains of pair (t, m) at chains[t * chain_stride + m * 32].
// Token t's element d is x[t][d - c0 + x_base] (x_base = c0: the features; 0: a converted
// chunk). The first chunk starts the chains at zero.
template <int W, int T, int M>
IDSELECT_INLINE void sweep_tile(const float* const* __restrict x, const float* __restrict q, int64_t D,
                                int64_t x_base, int64_t c0, int64_t c1, float* __restrict chains,
                                int64_t chain_stride) {
  typedef typename VecTypes<W>::f V;
  for (int p = 0; p < 32; p += W) {
    V acc[T][M];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        if (c0 == 0) acc[t][m] = V{};
        else std::memcpy(&acc[t][m], chains + t * chain_stride + m * 32 + p, sizeof(V));
      }
    for (int64_t d = c0 + p; d < c1; d += 32) {
      V xt[T];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) xt[t] = load_part<W>(x[t] + (d - c0 + x_base));
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const V qm = load_part<W>(q + m * D + d);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) acc[t][m] += xt[t] * qm;
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) std::memcpy(chains + t * chain_stride + m * 32 + p, &acc[t][m], sizeof(V));
  }
}

// Dot products of T tokens x[t] with queries [0, num_queries): out[t * kMaxLookahead + m].
// The query rows go in groups of the level's M, the last group smaller; each sum has the order
// above whatever the tile or group, so a result does not depend on the lookahead or the tile.
template <int W, int T, typename F>
IDSELECT_INLINE void dots_for_tile(int num_queries, const F* const* x, const float* q, int64_t D, float* out) {
  constexpr int M = kTileQueries<W>;
  alignas(64) float chains[T * kMaxLookahead * 32];
  const int64_t chain_stride = static_cast<int64_t>(num_queries) * 32;
  const int64_t full = D - D % 32;
  if (full == 0) std::memset(chains, 0, sizeof(float) * T * chain_stride);  // D < 32: only a tail
  // 16-bit tokens are converted once per chunk (exactly) into float rows for all query groups.
  constexpr bool kConvert = !std::is_same_v<F, float>;
  alignas(64) float converted[kConvert ? T * kChunk : 1];
  const float* rows[T];
  for (int64_t c0 = 0; c0 < full; c0 += kChunk) {
    const int64_t c1 = std::min(full, c0 + kChunk);
    const float* const* xs;
    int64_t base = c0;  // where the chunk starts in the rows that xs points to
    if constexpr (kConvert) {
      for (int t = 0; t < T; ++t) {
        for (int64_t d = c0; d < c1; d += 16) {
          const Lanes16<W> v = load16<W>(x[t] + d);
          std::memcpy(converted + t * kChunk + (d - c0), v.part, sizeof(v.part));
        }
        rows[t] = converted + t * kChunk;
      }
      xs = rows;
      base = 0;
    } else {
      xs = x;
    }
    int g = 0;
    for (; g + M <= num_queries; g += M)
      sweep_tile<W, T, M>(xs, q + g * D, D, base, c0, c1, chains + g * 32, chain_stride);
    switch (num_queries - g) {
#define IDSELECT_CASE(R)                                                                                     \
  case R:                                                                                                    \
    if constexpr (R < M) sweep_tile<W, T, R>(xs, q + g * D, D, base, c0, c1, chains + g * 32, chain_stride); \
    break;
      IDSELECT_CASE(1) IDSELECT_CASE(2) IDSELECT_CASE(3)
#undef IDSELECT_CASE
      default: break;
    }
  }
  for (int t = 0; t < T; ++t)
    for (int m = 0; m < num_queries; ++m) {
      float tail = 0.f;
      for (int64_t e = full; e < D; ++e) tail += load(x[t][e]) * q[m * D + e];
      out[t * kMaxLookahead + m] = reduce_chains(chains + t * chain_stride + m * 32) + tail;
    }
}

// One greedy step's suppression and the next pick, in one sweep: S[j] = max(S[j] - w[j] s, 0)
// (NaN -> 0) for every token, and the first available token of the largest S (-1 if none).
// Element-wise in native vectors (a multiply, then a subtract: the scalar roundings); each lane
// keeps the first index of its best, so the lanes' best, ties to the smallest index, is the
// scalar sweep's pick. The tokens past the last full vector follow in order.
template <int W>
IDSELECT_INLINE int64_t suppress_and_pick(float* __restrict S, const float* __restrict w,
                                          const uint8_t* __restrict available, int64_t n, float s_pick) {
  typedef typename VecTypes<W>::f V;
  typedef typename VecTypes<W>::i I;
  typedef uint8_t B __attribute__((vector_size(W)));
  const V zero = V{}, none = zero - 1.f;
  V best_v = none;
  I best_j = I{} - 1, lane_j;
  for (int l = 0; l < W; ++l) lane_j[l] = l;
  int64_t j = 0;
  for (; j + W <= n && j + W <= INT32_MAX; j += W) {
    const V u = load_part<W>(S + j) - load_part<W>(w + j) * s_pick;
    const V s = (V)((I)u & (I)(u > zero));
    std::memcpy(S + j, &s, sizeof(s));
    B bytes;
    std::memcpy(&bytes, available + j, sizeof(bytes));
    const I open = __builtin_convertvector(bytes, I) != 0;
    const V candidate = (V)(((I)s & open) | ((I)none & ~open));
    const I better = candidate > best_v;
    best_v = (V)(((I)candidate & better) | ((I)best_v & ~better));
    best_j = (lane_j & better) | (best_j & ~better);
    lane_j += W;  // past the loop's end it may wrap (n near 2^31); never read then
  }
  float best = -1.f;
  int64_t next = -1;
  for (int l = 0; l < W; ++l)  // lanes still at -1 saw no available token
    if (best_v[l] > best || (best_v[l] == best && best_v[l] > -1.f && best_j[l] < next))
      best = best_v[l], next = best_j[l];
  for (; j < n; ++j) {
    const float u = S[j] - w[j] * s_pick;
    S[j] = u > 0.f ? u : 0.f;
    if (available[j] && S[j] > best) best = S[j], next = j;
  }
  return next;
}
