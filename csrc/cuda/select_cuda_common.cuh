// Device helpers shared by the CUDA paths of idselect::select (select_cuda.cu: streaming path;
// select_gram.cu: Gram + greedy path). Every path computes a token's norm with warp_norm, so
// both paths see bit-identical norms, and every similarity weight with weight_from_dot, so
// they differ only in how the dot product <f_i, f_j> is summed.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace idselect {
namespace cuda {
namespace detail {

constexpr float kEps = 1e-12f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Zero of T without the implicit conversions torch builds disable (__CUDA_NO_HALF_CONVERSIONS__).
template <typename T>
__device__ __forceinline__ T zero_of();
template <>
__device__ __forceinline__ float zero_of<float>() { return 0.f; }
template <>
__device__ __forceinline__ __half zero_of<__half>() { return __float2half_rn(0.f); }
template <>
__device__ __forceinline__ __nv_bfloat16 zero_of<__nv_bfloat16>() { return __float2bfloat16_rn(0.f); }

// Elements of T in 16 bytes: the chunk one lane owns per pass of warp_dot.
template <typename T>
__host__ __device__ constexpr int chunk_elements() { return 16 / static_cast<int>(sizeof(T)); }

// V consecutive elements starting at p as floats; kVector: one 16-byte load (p aligned, no
// tail), otherwise element by element with the elements at or past `end` read as 0.
template <typename T, bool kVector>
__device__ __forceinline__ void load_chunk(const T* p, int64_t d, int64_t end, float* out) {
  constexpr int V = chunk_elements<T>();
  if constexpr (kVector) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p + d);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = to_float(v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = d + e < end ? to_float(p[d + e]) : 0.f;
  }
}

// Dot product of x and y (length D) by one warp; every lane gets the result. One summation
// order for both load paths (so a row's result never depends on its strides or alignment):
// lane l accumulates chunks l, l + 32, l + 64, ... of V elements, element by element, with an
// explicit fused multiply-add; then a fixed xor-tree across lanes. Missing tail elements
// contribute fmaf(0, 0, acc) = acc exactly.
template <typename T, bool kVector>
__device__ __forceinline__ float warp_dot(const T* __restrict__ x, const T* __restrict__ y,
                                          int64_t D, int lane) {
  constexpr int V = chunk_elements<T>();
  float acc = 0.f;
#pragma unroll 2
  for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += 32 * V) {
    float xv[V], yv[V];
    load_chunk<T, kVector>(x, d, D, xv);
    load_chunk<T, kVector>(y, d, D, yv);
#pragma unroll
    for (int e = 0; e < V; ++e) acc = __fmaf_rn(xv[e], yv[e], acc);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, offset));
  return acc;
}

// max(|x|, eps) by one warp, NaN when x holds a NaN or Inf (so every cosine with it is NaN,
// as in the reference, whatever the dot product's hardware does with Inf), NaN kept like
// torch.clamp_min. Uses warp_dot's order, so all paths share the norms bit for bit.
template <typename T, bool kVector>
__device__ __forceinline__ float warp_norm(const T* __restrict__ x, int64_t D, int lane) {
  constexpr int V = chunk_elements<T>();
  bool finite = true;
  for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += 32 * V) {
    float xv[V];
    load_chunk<T, kVector>(x, d, D, xv);
#pragma unroll
    for (int e = 0; e < V; ++e) finite = finite && isfinite(xv[e]);
  }
  finite = __all_sync(0xffffffffu, finite);
  const float norm = __fsqrt_rn(warp_dot<T, kVector>(x, x, D, lane));
  if (!finite) return __int_as_float(0x7fffffff);  // NaN
  return norm < kEps ? kEps : norm;  // NaN kept
}

// warp_norm in one pass (review v2, G6; opt-in with IDSELECT_CUDA_TUNED=1 until a GPU run
// verifies it): the finiteness flag and the sum of squares from the same loaded registers.
// The sum is warp_dot(x, x)'s: the same chunks per lane, the same FMA order, the same shuffle
// tree, so the same bits as warp_norm.
template <typename T, bool kVector>
__device__ __forceinline__ float warp_norm_one_pass(const T* __restrict__ x, int64_t D, int lane) {
  constexpr int V = chunk_elements<T>();
  bool finite = true;
  float acc = 0.f;
#pragma unroll 4
  for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += 32 * V) {
    float xv[V];
    load_chunk<T, kVector>(x, d, D, xv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      finite = finite && isfinite(xv[e]);
      acc = __fmaf_rn(xv[e], xv[e], acc);
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, offset));
  finite = __all_sync(0xffffffffu, finite);
  const float norm = __fsqrt_rn(acc);
  if (!finite) return __int_as_float(0x7fffffff);  // NaN
  return norm < kEps ? kEps : norm;  // NaN kept
}

// Suppression weight exp(-gamma (1 - c)^2) with c = clamp(dot / (norm_i norm_j), -1, 1),
// every operation rounded on its own (no contraction), in the reference's order.
__device__ __forceinline__ float weight_from_dot(float dot, float norm_i, float norm_j, float gamma) {
  float c = __fdiv_rn(dot, __fmul_rn(norm_i, norm_j));
  c = c < -1.f ? -1.f : (c > 1.f ? 1.f : c);  // keeps NaN
  const float u = __fsub_rn(1.f, c);
  return expf(__fmul_rn(-gamma, __fmul_rn(u, u)));
}

// The update of a score by a pick: max(0, s - w * s_pick) with w * s_pick rounded first (as
// the reference and the CPU kernel); NaN (inf - inf, 0 * inf, NaN weights) becomes 0.
__device__ __forceinline__ float suppressed(float s, float w, float s_pick) {
  const float u = __fsub_rn(s, __fmul_rn(w, s_pick));
  return u > 0.f ? u : 0.f;
}

}  // namespace detail
}  // namespace cuda
}  // namespace idselect
