// Fused CUDA kernel of idselect::select: cosine similarity, greedy argmax and suppression in
// one kernel, one launch for the whole batch.
//
// Layout: each batch row is served by a thread-block cluster of C CTAs (C = 1 for large
// batches). CTA r of the cluster owns a contiguous slice of the row's tokens; per step it
// computes the similarity of each owned token to the current pick (one warp per token, 16-byte
// loads across D), updates the owned scores, and reduces the best owned candidate. The C
// candidates are exchanged through distributed shared memory after one cluster barrier, so
// every CTA derives the same next pick without a trip through global memory or the host.
// No N x N buffer: the workspace is the current score and the norm of each token.
//
// Determinism: every token's dot product is summed by one warp in a fixed order, the argmax
// compares (score, index) with ties to the smallest index, and the cluster exchange merges in
// rank order, so a row's result does not depend on the batch or on scheduling.

#include "select_cuda.h"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace cg = cooperative_groups;

namespace idselect {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;  // portable cluster size: no opt-in attribute needed
constexpr float kEps = 1e-12f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// 16 bytes of T as floats.
template <typename T>
struct Vec16 {
  static constexpr int kCount = 16 / sizeof(T);
  __device__ __forceinline__ static void load(const T* p, float* out) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < kCount; ++e) out[e] = to_float(v[e]);
  }
};

// Dot product of x and y (length D) by one warp; every lane gets the result. kVector: both
// rows 16-byte aligned and D a multiple of the vector width.
template <typename T, bool kVector>
__device__ __forceinline__ float warp_dot(const T* __restrict__ x, const T* __restrict__ y,
                                          int64_t D, int lane) {
  float acc = 0.f;
  if constexpr (kVector) {
    constexpr int V = Vec16<T>::kCount;
#pragma unroll 4
    for (int64_t d = static_cast<int64_t>(lane) * V; d < D; d += 32 * V) {
      float xv[V], yv[V];
      Vec16<T>::load(x + d, xv);
      Vec16<T>::load(y + d, yv);
#pragma unroll
      for (int e = 0; e < V; ++e) acc += xv[e] * yv[e];
    }
  } else {
#pragma unroll 4
    for (int64_t d = lane; d < D; d += 32) acc += to_float(x[d]) * to_float(y[d]);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  return acc;
}

struct Candidate {
  float score;    // -1 marks "none" (available scores are >= 0)
  int64_t index;
};

__device__ __forceinline__ bool better(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Best available owned token: scores >= 0 are available, picked tokens hold -1.
__device__ Candidate block_best(const float* S, int64_t j0, int64_t j1, Candidate* scratch) {
  Candidate best{-1.f, INT64_MAX};
  for (int64_t j = j0 + threadIdx.x; j < j1; j += kThreads) {
    const float s = S[j];
    if (s >= 0.f && s > best.score) best = {s, j};  // ascending j: ties keep the smaller
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    Candidate other{__shfl_xor_sync(0xffffffffu, best.score, offset),
                    __shfl_xor_sync(0xffffffffu, best.index, offset)};
    if (better(other, best)) best = other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = best;
  __syncthreads();
  best = scratch[0];
  for (int w = 1; w < kWarps; ++w)
    if (better(scratch[w], best)) best = scratch[w];
  __syncthreads();  // scratch is reused by the next call
  return best;
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads, 1) select_kernel(SelectParams p) {
  __shared__ Candidate scratch[kWarps];
  __shared__ Candidate exchange[2];  // per step parity: this CTA's best, read by the cluster

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int csize = static_cast<int>(cluster.num_blocks());
#else
  const int rank = 0, csize = 1;
#endif
  const int64_t b = blockIdx.x / csize;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  const int64_t N = p.N, D = p.D, k = p.k;
  int64_t n = p.lengths ? p.lengths[b] : N;
  n = n < k ? k : (n > N ? N : n);  // bad lengths cannot lead out of bounds
  const int64_t chunk = (n + csize - 1) / csize;
  const int64_t j0 = min(n, rank * chunk), j1 = min(n, j0 + chunk);

  const T* base = static_cast<const T*>(p.features) + b * p.batch_stride;
  float* S = p.workspace + b * N;
  float* norms = p.workspace + (p.B + b) * N;
  const float* scores = p.scores + b * N;

  // Norms and clamped scores of the owned tokens (NaN scores count as 0).
  for (int64_t j = j0 + warp; j < j1; j += kWarps) {
    const T* x = base + j * p.token_stride;
    const float sq = warp_dot<T, kVector>(x, x, D, lane);
    if (lane == 0) {
      const float norm = sqrtf(sq);
      norms[j] = norm < kEps ? kEps : norm;  // NaN kept, like torch.clamp_min
      const float s = scores[j];
      S[j] = s > 0.f ? s : 0.f;
    }
  }
  __syncthreads();

  for (int64_t step = 0;; ++step) {
    // Reduce the owned candidates, then merge the cluster's in rank order.
    const Candidate mine = block_best(S, j0, j1, scratch);
    if (threadIdx.x == 0) exchange[step & 1] = mine;
    Candidate pick = mine;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cluster.sync();  // release/acquire: exchange slots and owned global writes are visible
    pick = Candidate{-1.f, INT64_MAX};
    for (int r = 0; r < csize; ++r) {
      const Candidate c = *cluster.map_shared_rank(&exchange[step & 1], r);
      if (better(c, pick)) pick = c;
    }
#endif
    // k <= n guarantees an available token, so pick.index is valid here.
    if (rank == 0 && threadIdx.x == 0) p.out[b * k + step] = pick.index;
    if (step == k - 1) break;

    const T* q = base + pick.index * p.token_stride;
    const float q_norm = __ldcg(norms + pick.index);  // written by the owning CTA
    const float s_pick = pick.score;
    for (int64_t j = j0 + warp; j < j1; j += kWarps) {
      const float s = S[j];  // uniform across the warp
      if (s < 0.f) continue;  // picked earlier
      if (j == pick.index) {
        if (lane == 0) S[j] = -1.f;
        continue;
      }
      const float dot = warp_dot<T, kVector>(base + j * p.token_stride, q, D, lane);
      if (lane == 0) {
        float c = dot / (norms[j] * q_norm);
        c = c < -1.f ? -1.f : (c > 1.f ? 1.f : c);  // keeps NaN
        const float u = 1.f - c;
        const float updated = s - expf(-p.gamma * (u * u)) * s_pick;
        S[j] = updated > 0.f ? updated : 0.f;  // NaN -> 0
      }
    }
    __syncthreads();
  }
}

template <typename T, bool kVector>
cudaError_t launch_typed(const SelectParams& p, int csize, cudaStream_t stream) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(p.B * csize));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  config.numAttrs = 0;
  if (csize > 1) {
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = csize;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&config, select_kernel<T, kVector>, p);
}

template <typename T>
cudaError_t launch_vector_or_not(const SelectParams& p, int csize, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(p.features) % 16 == 0 && p.D % V == 0 &&
                       p.token_stride % V == 0 && p.batch_stride % V == 0;
  return aligned ? launch_typed<T, true>(p, csize, stream) : launch_typed<T, false>(p, csize, stream);
}

}  // namespace

int cluster_size_for(int64_t B, int num_sms, int compute_major) {
  if (compute_major < 9 || B <= 0) return 1;
  int csize = 1;
  while (csize < kMaxCluster && B * csize * 2 <= num_sms) csize *= 2;
  return csize;
}

cudaError_t launch_select(const SelectParams& p, cudaStream_t stream) {
  if (p.B == 0 || p.k == 0) return cudaSuccess;
  int device = 0, num_sms = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err != cudaSuccess) return err;
  const int csize = cluster_size_for(p.B, num_sms, major);
  switch (p.feature_type) {
    case FeatureType::kFloat32: return launch_vector_or_not<float>(p, csize, stream);
    case FeatureType::kFloat16: return launch_vector_or_not<__half>(p, csize, stream);
    case FeatureType::kBFloat16: return launch_vector_or_not<__nv_bfloat16>(p, csize, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace idselect
