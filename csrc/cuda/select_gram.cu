// Gram path of idselect::select (select_dispatch.h, Path::kGram and Path::kArgmaxOnly):
//
//   1. norm_kernel     the norm of every token (warp_norm: the same bits as the stream path).
//   2. gram_kernel     per row of a group, the weights W[i, j] = exp(-gamma (1 - cos_ij)^2)
//                      of every token pair, as 64 x 64 tiles over the upper triangle
//                      (tile i <= tile j), each tile written to W[i, j] and W[j, i]. bf16/fp16:
//                      tensor cores (WMMA 16x16x16, fp32 accumulate; bf16 x bf16 and
//                      fp16 x fp16 products are exact in fp32). fp32: FMA on CUDA cores (never
//                      TF32: it would round the inputs to 10 bits).
//   3. greedy_kernel   one CTA per row: the row's scores in shared memory, per step one
//                      packed (score, index) max over the block and an update of every score
//                      from the pick's row of W. One __syncthreads per step, no inter-SM
//                      synchronisation.
//
// Every launch has a configuration fixed by (N, D, dtype), never by B, and no atomics, so a
// row's result is independent of its batch and deterministic run to run. The argmax is exact
// (a max is order-independent); the only rounding that differs from the reference is the
// summation order of the dot products (docs/algorithm.md, "Tolerance per path").

#include "select_cuda.h"

#include <mma.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "select_cuda_common.cuh"

namespace idselect {
namespace cuda {
namespace {

using detail::suppressed;
using detail::warp_norm;
using detail::warp_norm_one_pass;
using detail::weight_from_dot;

// kTuned (IDSELECT_CUDA_TUNED=1, SelectParams::tuned): the review v2 fixes G4-G6, opt-in until a
// GPU run verifies them with the tests and compute-sanitizer (bench/NOTES_CUDA.md). Each changes
// how values move, never an operation or its order, so the results are the same bits.

// ---------------------------------------------------------------------------------------
// 1. Norms: one warp per token, all tokens of all rows.

constexpr int kNormThreads = 256;

template <typename T, bool kVector, bool kTuned>
__global__ void __launch_bounds__(kNormThreads) norm_kernel(SelectParams p, float* norms) {
  const int lane = threadIdx.x % 32;
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * (kNormThreads / 32);
  const int64_t tokens = p.B * p.N;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * (kNormThreads / 32) + threadIdx.x / 32;
       t < tokens; t += warps_in_grid) {
    const int64_t b = t / p.N, j = t % p.N;
    const T* x = static_cast<const T*>(p.features) + b * p.batch_stride + j * p.token_stride;
    const float norm = kTuned ? warp_norm_one_pass<T, kVector>(x, p.D, lane) : warp_norm<T, kVector>(x, p.D, lane);
    if (lane == 0) norms[t] = norm;
  }
}

// ---------------------------------------------------------------------------------------
// 2. Weights: 64 x 64 tiles of F_b F_b^T with the weight epilogue.

constexpr int kTile = 64;          // tokens per tile side
constexpr int kTileK = 32;         // feature elements per stage
constexpr int kGramThreads = 128;  // 4 warps, each a 32 x 32 quarter of the tile
constexpr int kStagePad = 8;       // keeps WMMA's 16-byte row alignment, spreads banks
constexpr int kAccPad = 4;         // float accumulator rows: a multiple of 4 for WMMA

// WMMA loads and stores need 256-bit aligned tile pointers: every tile row offset used is a
// multiple of 32 bytes from this base.
template <typename T>
struct __align__(128) GramShared {
  T a[kTile][kTileK + kStagePad];  // tokens of tile i, elements d0 .. d0 + kTileK
  T b[kTile][kTileK + kStagePad];  // tokens of tile j
  float acc[kTile][kTile + kAccPad];
};

// Upper-triangle tile pair number -> (tile_i, tile_j), tile_i <= tile_j; pairs are numbered
// column by column: (0,0), (0,1), (1,1), (0,2), ...
__device__ __forceinline__ void tile_pair(int64_t pair, int64_t* ti, int64_t* tj) {
  int64_t j = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(pair) + 1.0) - 1.0) / 2.0);
  while (j * (j + 1) / 2 > pair) --j;
  while ((j + 1) * (j + 2) / 2 <= pair) ++j;
  *tj = j;
  *ti = pair - j * (j + 1) / 2;
}

// Stage kTile tokens (from `first`) x kTileK elements (from d0) into smem; rows or elements
// past the end are zero. The load width changes no value, only the speed.
template <typename T, bool kVector>
__device__ __forceinline__ void stage_tile(const T* row_base, int64_t token_stride, int64_t first,
                                           int64_t N, int64_t d0, int64_t D,
                                           T (*dst)[kTileK + kStagePad]) {
  constexpr int V = 16 / sizeof(T);
  constexpr int kChunksPerRow = kTileK / V;
  for (int c = threadIdx.x; c < kTile * kChunksPerRow; c += kGramThreads) {
    const int r = c / kChunksPerRow, e0 = (c % kChunksPerRow) * V;
    const int64_t token = first + r, d = d0 + e0;
    const T* src = row_base + token * token_stride + d;
    if constexpr (kVector) {
      uint4 raw = make_uint4(0, 0, 0, 0);
      if (token < N && d < D) raw = *reinterpret_cast<const uint4*>(src);  // D % V == 0
      *reinterpret_cast<uint4*>(&dst[r][e0]) = raw;
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e)
        dst[r][e0 + e] = (token < N && d + e < D) ? src[e] : detail::zero_of<T>();
    }
  }
}

// G4 (kTuned, 16-byte loads): a stage's chunks go through registers, so the next stage's
// global loads are all issued before the current stage's products and land while they run.
// Thread t holds the chunks c = t + i * kGramThreads, as stage_tile's loop visits them, so the
// staged tile holds the same values.
template <typename T>
constexpr int kStageLoads = kTile * (kTileK / (16 / sizeof(T))) / kGramThreads;

template <typename T>
__device__ __forceinline__ void fetch_stage(const T* row_base, int64_t token_stride, int64_t first, int64_t N,
                                            int64_t d0, int64_t D, uint4 (&regs)[kStageLoads<T>]) {
  constexpr int V = 16 / sizeof(T);
  constexpr int kChunksPerRow = kTileK / V;
  static_assert(kTile * kChunksPerRow % kGramThreads == 0, "every thread stages the same number of chunks");
#pragma unroll
  for (int i = 0; i < kStageLoads<T>; ++i) {
    const int c = threadIdx.x + i * kGramThreads;
    const int r = c / kChunksPerRow, e0 = (c % kChunksPerRow) * V;
    const int64_t token = first + r, d = d0 + e0;
    regs[i] = make_uint4(0, 0, 0, 0);
    if (token < N && d < D) regs[i] = __ldg(reinterpret_cast<const uint4*>(row_base + token * token_stride + d));
  }
}

template <typename T>
__device__ __forceinline__ void put_stage(const uint4 (&regs)[kStageLoads<T>], T (*dst)[kTileK + kStagePad]) {
  constexpr int V = 16 / sizeof(T);
  constexpr int kChunksPerRow = kTileK / V;
#pragma unroll
  for (int i = 0; i < kStageLoads<T>; ++i) {
    const int c = threadIdx.x + i * kGramThreads;
    *reinterpret_cast<uint4*>(&dst[c / kChunksPerRow][(c % kChunksPerRow) * V]) = regs[i];
  }
}

// Tile product on tensor cores (bf16/fp16) or on CUDA cores (fp32) into shared.acc.
template <typename T>
__device__ __forceinline__ void tile_product_stage(GramShared<T>& sh, float (&acc_simt)[4][8]) {
  if constexpr (std::is_same_v<T, float>) {
    (void)sh;
    // Thread (ty, tx) owns rows 4 ty .. 4 ty + 3 and columns tx, tx + 8, ..., tx + 56 of
    // the tile (strided columns avoid bank conflicts); fixed order over the stage's elements.
    const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
#pragma unroll 4
    for (int e = 0; e < kTileK; ++e) {
      float a[4], b[8];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = sh.a[4 * ty + r][e];
#pragma unroll
      for (int c = 0; c < 8; ++c) b[c] = sh.b[tx + 8 * c][e];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 8; ++c) acc_simt[r][c] = __fmaf_rn(a[r], b[c], acc_simt[r][c]);
    }
  } else {
    (void)acc_simt;
  }
}

template <typename T, bool kVector, bool kTuned>
__device__ __forceinline__ void gram_tiles(const SelectParams& p, int64_t row_begin, int64_t rows,
                                           const float* norms, float* weights);

// G2: below sm_80 the bf16 WMMA fragments are incomplete types, so the 16-bit body must not
// even be instantiated there: the branch that names it is discarded by `if constexpr` (the
// plan never sends bf16/fp16 to this kernel below sm_80: tensor_cores_ok).
template <typename T, bool kVector, bool kTuned>
__global__ void __launch_bounds__(kGramThreads) gram_kernel(SelectParams p, int64_t row_begin,
                                                            int64_t rows, const float* norms,
                                                            float* weights) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (!std::is_same_v<T, float>) {
    __trap();
  } else {
    gram_tiles<T, kVector, kTuned>(p, row_begin, rows, norms, weights);
  }
#else
  gram_tiles<T, kVector, kTuned>(p, row_begin, rows, norms, weights);
#endif
}

template <typename T, bool kVector, bool kTuned>
__device__ __forceinline__ void gram_tiles(const SelectParams& p, int64_t row_begin, int64_t rows,
                                           const float* norms, float* weights) {
  constexpr bool kPrefetch = kTuned && kVector;  // G4: registers carry the next stage
  __shared__ GramShared<T> sh;
  __shared__ float tile_norms[2][kTile];  // G4 (kTuned): the epilogue's norms, loaded once
  const int64_t N = p.N, D = p.D;
  const int64_t tiles = (N + kTile - 1) / kTile;
  const int64_t pairs = tiles * (tiles + 1) / 2;
  const int warp = threadIdx.x / 32;
  const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;

  for (int64_t work = blockIdx.x; work < rows * pairs; work += gridDim.x) {
    const int64_t row = work / pairs;
    int64_t ti, tj;
    tile_pair(work % pairs, &ti, &tj);
    const int64_t b = row_begin + row;
    const T* row_base = static_cast<const T*>(p.features) + b * p.batch_stride;

    float acc_simt[4][8] = {};
    [[maybe_unused]] nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> frag_acc[2][2];
    if constexpr (!std::is_same_v<T, float>) {
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int n = 0; n < 2; ++n) nvcuda::wmma::fill_fragment(frag_acc[m][n], 0.f);
    }

    [[maybe_unused]] uint4 next_a[kStageLoads<T>], next_b[kStageLoads<T>];
    if constexpr (kPrefetch) {
      fetch_stage<T>(row_base, p.token_stride, ti * kTile, N, 0, D, next_a);
      fetch_stage<T>(row_base, p.token_stride, tj * kTile, N, 0, D, next_b);
    }
    for (int64_t d0 = 0; d0 < D; d0 += kTileK) {
      if constexpr (kPrefetch) {
        put_stage<T>(next_a, sh.a);
        put_stage<T>(next_b, sh.b);
        __syncthreads();
        if (d0 + kTileK < D) {  // in flight during this stage's products
          fetch_stage<T>(row_base, p.token_stride, ti * kTile, N, d0 + kTileK, D, next_a);
          fetch_stage<T>(row_base, p.token_stride, tj * kTile, N, d0 + kTileK, D, next_b);
        }
      } else {
        stage_tile<T, kVector>(row_base, p.token_stride, ti * kTile, N, d0, D, sh.a);
        stage_tile<T, kVector>(row_base, p.token_stride, tj * kTile, N, d0, D, sh.b);
        __syncthreads();
      }
      if constexpr (std::is_same_v<T, float>) {
        tile_product_stage<T>(sh, acc_simt);
      } else {
#pragma unroll
        for (int e = 0; e < kTileK; e += 16) {
          nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, T, nvcuda::wmma::row_major> fa[2];
          nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, T, nvcuda::wmma::col_major> fb[2];
#pragma unroll
          for (int m = 0; m < 2; ++m)
            nvcuda::wmma::load_matrix_sync(fa[m], &sh.a[warp_row + 16 * m][e], kTileK + kStagePad);
#pragma unroll
          for (int n = 0; n < 2; ++n)  // column n of B^T is token n of tile j: col_major
            nvcuda::wmma::load_matrix_sync(fb[n], &sh.b[warp_col + 16 * n][e], kTileK + kStagePad);
#pragma unroll
          for (int m = 0; m < 2; ++m)
#pragma unroll
            for (int n = 0; n < 2; ++n) nvcuda::wmma::mma_sync(frag_acc[m][n], fa[m], fb[n], frag_acc[m][n]);
        }
      }
      __syncthreads();  // the stage buffers are refilled next
    }

    // Dots into shared, then the weight epilogue.
    if constexpr (std::is_same_v<T, float>) {
      const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 8; ++c) sh.acc[4 * ty + r][tx + 8 * c] = acc_simt[r][c];
    } else {
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int n = 0; n < 2; ++n)
          nvcuda::wmma::store_matrix_sync(&sh.acc[warp_row + 16 * m][warp_col + 16 * n], frag_acc[m][n],
                                          kTile + kAccPad, nvcuda::wmma::mem_row_major);
    }
    __syncthreads();

    const float* row_norms = norms + b * N;
    float* W = weights + row * N * N;
    if constexpr (kTuned) {
      // G4: the tile's norms in shared memory, so no weight store waits for a norm load.
      for (int e = threadIdx.x; e < 2 * kTile; e += kGramThreads) {
        const int64_t token = (e < kTile ? ti : tj) * kTile + e % kTile;
        tile_norms[e / kTile][e % kTile] = token < N ? row_norms[token] : 0.f;
      }
      __syncthreads();
    }
    // The norm of token `token` of this tile pair: from shared memory (kTuned) or global.
    auto norm_of = [&](int side, int within, int64_t token) {
      if constexpr (kTuned) return tile_norms[side][within];
      else return row_norms[token];
    };
    // W[i, j] row-major (coalesced along j), then, off the diagonal, W[j, i] from the same
    // dots: the weight is computed from identical operands, so W is exactly symmetric there.
    for (int e = threadIdx.x; e < kTile * kTile; e += kGramThreads) {
      const int r = e / kTile, c = e % kTile;
      const int64_t i = ti * kTile + r, j = tj * kTile + c;
      if (i < N && j < N) W[i * N + j] = weight_from_dot(sh.acc[r][c], norm_of(0, r, i), norm_of(1, c, j), p.gamma);
    }
    if (ti != tj) {
      for (int e = threadIdx.x; e < kTile * kTile; e += kGramThreads) {
        const int r = e / kTile, c = e % kTile;  // r: token of tile j, c: token of tile i
        const int64_t j = tj * kTile + r, i = ti * kTile + c;
        if (i < N && j < N) W[j * N + i] = weight_from_dot(sh.acc[c][r], norm_of(0, c, i), norm_of(1, r, j), p.gamma);
      }
    }
    __syncthreads();  // sh.acc is rewritten by the next tile
  }
}

// ---------------------------------------------------------------------------------------
// 3. Greedy loop: one CTA per row, scores in shared memory.

constexpr int kGreedyThreads = 512;
constexpr int kGreedyWarps = kGreedyThreads / 32;

// (score, index) as one integer whose maximum is the highest score, ties to the smallest
// index: score bits are monotone for scores >= 0 (+inf included); 0 means "unavailable".
__device__ __forceinline__ uint64_t pack(float score, int64_t j) {
  return (static_cast<uint64_t>(__float_as_uint(score)) << 32) |
         static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(j));
}

__device__ __forceinline__ uint64_t warp_max(uint64_t key) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const uint64_t other = __shfl_xor_sync(0xffffffffu, key, offset);
    key = other > key ? other : key;
  }
  return key;
}

// Tokens a thread owns at most (launch_gram_path refuses N > kGramMaxTokens).
constexpr int kOwnedTokens = static_cast<int>(kGramMaxTokens / kGreedyThreads);
static_assert(kGramMaxTokens % kGreedyThreads == 0, "every token has an owner within kOwnedTokens");

// weights == nullptr: k == 1 (Path::kArgmaxOnly), no step reads a weight.
// One owned token's update by a step's pick, its weight read only where it is used: a token
// picked earlier stays out, the pick leaves, any other is suppressed and bids for the next pick.
template <typename Weight>
__device__ __forceinline__ void update_owned(float* S, int64_t j, int64_t pick, float s_pick, const Weight& weight,
                                             uint64_t& best) {
  const float s = S[j];
  if (s < 0.f) return;  // picked earlier
  if (j == pick) {
    S[j] = -1.f;
    return;
  }
  const float updated = suppressed(s, weight(), s_pick);
  S[j] = updated;
  const uint64_t candidate = pack(updated, j);
  best = candidate > best ? candidate : best;
}

template <bool kTuned>
__device__ __forceinline__ void greedy_rows(const SelectParams& p, int64_t row_begin, int64_t rows,
                                            const float* weights);

// The verified kernel, and G5's variant (kTuned), bounded to 64 registers a thread so that two
// CTAs fit an SM (its 16 weights would otherwise take 80 and leave room for one).
__global__ void __launch_bounds__(kGreedyThreads) greedy_kernel(SelectParams p, int64_t row_begin, int64_t rows,
                                                                const float* weights) {
  greedy_rows<false>(p, row_begin, rows, weights);
}
__global__ void __launch_bounds__(kGreedyThreads, 2) greedy_kernel_tuned(SelectParams p, int64_t row_begin,
                                                                         int64_t rows, const float* weights) {
  greedy_rows<true>(p, row_begin, rows, weights);
}

template <bool kTuned>
__device__ __forceinline__ void greedy_rows(const SelectParams& p, int64_t row_begin, int64_t rows,
                                            const float* weights) {
  extern __shared__ float S[];  // [N]: current score, -1 once picked or out of the row
  __shared__ uint64_t partial[2][kGreedyWarps];  // per step parity: each warp's best key
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t N = p.N, k = p.k;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row_begin + row;
    int64_t n = p.lengths ? p.lengths[b] : N;
    n = n < k ? k : (n > N ? N : n);  // bad lengths cannot lead out of bounds
    const float* scores = p.scores + b * N;
    const float* W = weights ? weights + row * N * N : nullptr;

    // Each thread owns tokens threadIdx.x + m * kGreedyThreads: only it reads or writes
    // their scores, so S needs no barrier; only the reduction's partials are shared.
    uint64_t best = 0;
    for (int64_t j = threadIdx.x; j < N; j += kGreedyThreads) {
      const float s = scores[j];
      const float clamped = s > 0.f ? s : 0.f;  // NaN scores count as 0
      S[j] = j < n ? clamped : -1.f;
      if (j < n) {
        const uint64_t key = pack(clamped, j);
        best = key > best ? key : best;
      }
    }

    for (int64_t step = 0;; ++step) {
      const int parity = static_cast<int>(step & 1);
      best = warp_max(best);
      if (lane == 0) partial[parity][warp] = best;
      __syncthreads();  // also orders this parity's reads two steps ago before these writes
      uint64_t key = lane < kGreedyWarps ? partial[parity][lane] : 0;
      key = warp_max(key);  // every warp derives the same pick
      // k <= n guarantees an available token: key != 0.
      const int64_t pick = static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key));
      const float s_pick = __uint_as_float(static_cast<uint32_t>(key >> 32));
      if (threadIdx.x == 0) p.out[b * k + step] = pick;
      if (step == k - 1) break;

      const float* w_row = W + pick * N;
      best = 0;
      if constexpr (kTuned) {
        // G5: all of this thread's weights of the pick's row are loaded before any is used
        // (one round trip per step, not one per owned token); the update is the same.
        float w_owned[kOwnedTokens];
#pragma unroll
        for (int m = 0; m < kOwnedTokens; ++m) {
          const int64_t j = threadIdx.x + static_cast<int64_t>(m) * kGreedyThreads;
          w_owned[m] = j < n ? __ldg(w_row + j) : 0.f;
        }
#pragma unroll
        for (int m = 0; m < kOwnedTokens; ++m) {
          const int64_t j = threadIdx.x + static_cast<int64_t>(m) * kGreedyThreads;
          if (j >= n) break;
          update_owned(S, j, pick, s_pick, [&] { return w_owned[m]; }, best);
        }
      } else {
        for (int64_t j = threadIdx.x; j < n; j += kGreedyThreads)
          update_owned(S, j, pick, s_pick, [&] { return __ldg(w_row + j); }, best);
      }
    }
    __syncthreads();  // S and partial are reused by the block's next row
  }
}

// ---------------------------------------------------------------------------------------

int grid_for(int64_t work, int64_t per_sm_cap, int num_sms) {
  const int64_t cap = static_cast<int64_t>(num_sms) * per_sm_cap;
  return static_cast<int>(work < cap ? (work > 0 ? work : 1) : cap);  // grid-stride beyond
}

template <typename T>
bool vector_loads_ok(const SelectParams& p) {
  constexpr int V = 16 / sizeof(T);
  return reinterpret_cast<uintptr_t>(p.features) % 16 == 0 && p.D % V == 0 &&
         (p.N <= 1 || p.token_stride % V == 0) && (p.B <= 1 || p.batch_stride % V == 0);
}

// weights_only: norms and weights, no greedy steps (launch_gram_weights).
template <typename T, bool kVector, bool kTuned>
cudaError_t launch_gram_typed(const SelectParams& p, const Plan& plan, int num_sms, cudaStream_t stream,
                              bool weights_only) {
  float* norms = p.workspace;                 // [B * N]
  float* weights = p.workspace + 2 * p.B * p.N;  // [rows_per_group, N, N]
  const int64_t tokens = p.B * p.N;
  norm_kernel<T, kVector, kTuned><<<grid_for((tokens + kNormThreads / 32 - 1) / (kNormThreads / 32), 16, num_sms),
                            kNormThreads, 0, stream>>>(p, norms);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t tiles = (p.N + kTile - 1) / kTile;
  const int64_t pairs = tiles * (tiles + 1) / 2;
  const size_t scores_bytes = static_cast<size_t>(p.N) * sizeof(float);
  for (int64_t row_begin = 0; row_begin < p.B; row_begin += plan.rows_per_group) {
    const int64_t rows = p.B - row_begin < plan.rows_per_group ? p.B - row_begin : plan.rows_per_group;
    gram_kernel<T, kVector, kTuned><<<grid_for(rows * pairs, 8, num_sms), kGramThreads, 0, stream>>>(
        p, row_begin, rows, norms, weights);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    if (weights_only) continue;
    const auto greedy = kTuned ? greedy_kernel_tuned : greedy_kernel;
    greedy<<<grid_for(rows, 4, num_sms), kGreedyThreads, scores_bytes, stream>>>(p, row_begin, rows, weights);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T, bool kTuned>
cudaError_t launch_gram_tuned_or_not(const SelectParams& p, const Plan& plan, int num_sms, cudaStream_t stream,
                                     bool weights_only) {
  return vector_loads_ok<T>(p) ? launch_gram_typed<T, true, kTuned>(p, plan, num_sms, stream, weights_only)
                               : launch_gram_typed<T, false, kTuned>(p, plan, num_sms, stream, weights_only);
}

template <typename T>
cudaError_t launch_gram_dtype(const SelectParams& p, const Plan& plan, int num_sms, cudaStream_t stream,
                              bool weights_only) {
  return p.tuned ? launch_gram_tuned_or_not<T, true>(p, plan, num_sms, stream, weights_only)
                 : launch_gram_tuned_or_not<T, false>(p, plan, num_sms, stream, weights_only);
}

cudaError_t launch_gram_any(const SelectParams& p, const Plan& plan, cudaStream_t stream, bool weights_only) {
  int num_sms = 0;
  const cudaError_t err = current_sm_count(&num_sms);
  if (err != cudaSuccess) return err;
  switch (p.feature_type) {
    case FeatureType::kFloat32: return launch_gram_dtype<float>(p, plan, num_sms, stream, weights_only);
    case FeatureType::kFloat16: return launch_gram_dtype<__half>(p, plan, num_sms, stream, weights_only);
    case FeatureType::kBFloat16: return launch_gram_dtype<__nv_bfloat16>(p, plan, num_sms, stream, weights_only);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_gram_path(const SelectParams& p, const Plan& plan, cudaStream_t stream) {
  if (p.N > kGramMaxTokens) return cudaErrorInvalidValue;  // S must fit in shared memory (G1: plan_select)
  // G8: a raw caller's plan must describe a workspace that holds its row groups' weights.
  if (plan.path == Path::kGram &&
      (plan.rows_per_group < 1 ||
       static_cast<std::size_t>(plan.rows_per_group) * weight_bytes_per_row(p.N) > plan.weight_bytes))
    return cudaErrorInvalidValue;
  if (plan.path == Path::kArgmaxOnly) {
    if (p.k != 1) return cudaErrorInvalidValue;
    int num_sms = 0;
    const cudaError_t err = current_sm_count(&num_sms);
    if (err != cudaSuccess) return err;
    greedy_kernel<<<grid_for(p.B, 4, num_sms), kGreedyThreads, static_cast<size_t>(p.N) * sizeof(float),
                    stream>>>(p, 0, p.B, nullptr);
    return cudaGetLastError();
  }
  if (plan.path != Path::kGram || plan.rows_per_group < 1) return cudaErrorInvalidValue;
  return launch_gram_any(p, plan, stream, /*weights_only=*/false);
}

cudaError_t launch_gram_weights(const SelectParams& p, cudaStream_t stream) {
  if (p.B < 1 || p.N < 1 || p.N > kGramMaxTokens || p.D < 0 || p.workspace == nullptr ||
      (p.D > 0 && p.features == nullptr))
    return cudaErrorInvalidValue;
  Plan plan;
  plan.path = Path::kGram;
  plan.rows_per_group = p.B;  // every row's weights at once: the caller sized the workspace
  plan.weight_bytes = static_cast<std::size_t>(p.B) * weight_bytes_per_row(p.N);
  return launch_gram_any(p, plan, stream, /*weights_only=*/true);
}

}  // namespace cuda
}  // namespace idselect
