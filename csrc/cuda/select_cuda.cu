// CUDA paths of idselect::select: the entry point launch_select (which follows a Plan from
// select_dispatch.h) and the streaming path; the Gram path lives in select_gram.cu.
//
// Streaming path (v1, with the review's fixes F1-F6): one launch for the whole batch; each
// batch row is served by a thread-block cluster of C CTAs (C = 1 for large batches). CTA r of
// the cluster owns a contiguous slice of the row's tokens; per step it computes the
// similarity of each owned token to the current pick (one warp per token), updates the owned
// scores, and reduces the best owned candidate. The C candidates are exchanged through
// distributed shared memory after one cluster barrier, so every CTA derives the same next
// pick without a trip through global memory or the host. No N x N buffer: the workspace is
// the current score and the norm of each token.
//
// Determinism: every token's dot product is summed by one warp in one fixed order whatever
// the load width (F3), the argmax compares (score, index) with ties to the smallest index,
// and the cluster exchange merges in rank order, so a row's result does not depend on the
// batch, the strides or on scheduling.

#include "select_cuda.h"

#include <cooperative_groups.h>

#include <climits>
#include <cstdint>

#include "select_cuda_common.cuh"

namespace cg = cooperative_groups;

namespace idselect {
namespace cuda {
namespace {

using detail::suppressed;
using detail::warp_dot;
using detail::warp_norm;
using detail::weight_from_dot;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCluster = 8;  // portable cluster size: no opt-in attribute needed

struct StreamParams {
  SelectParams p;
  int cluster_size;  // what the host launched; the device traps on a mismatch (F2)
};

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
__global__ void __launch_bounds__(kThreads, 1) stream_kernel(StreamParams sp) {
  __shared__ Candidate scratch[kWarps];
  __shared__ Candidate exchange[2];  // per step parity: this CTA's best, read by the cluster
  const SelectParams& p = sp.p;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int csize = static_cast<int>(cluster.num_blocks());
  if (csize != sp.cluster_size) __trap();  // F2: never index rows with a wrong cluster size
#else
  const int rank = 0, csize = 1;
  if (sp.cluster_size != 1) __trap();  // F2: an image without clusters launched as clusters
#endif
  const int64_t b = blockIdx.x / csize;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  const int64_t N = p.N, D = p.D, k = p.k;
  int64_t n = p.lengths ? p.lengths[b] : N;
  n = n < k ? k : (n > N ? N : n);  // bad lengths cannot lead out of bounds
  const int64_t chunk = (n + csize - 1) / csize;
  const int64_t j0 = min(n, rank * chunk), j1 = min(n, j0 + chunk);

  const T* base = static_cast<const T*>(p.features) + b * p.batch_stride;
  float* norms = p.workspace + b * N;
  float* S = p.workspace + (p.B + b) * N;
  const float* scores = p.scores + b * N;

  // Norms (only read when a step follows, k > 1) and clamped scores of the owned tokens.
  for (int64_t j = j0 + warp; j < j1; j += kWarps) {
    const float norm = k > 1 ? warp_norm<T, kVector>(base + j * p.token_stride, D, lane) : 0.f;
    if (lane == 0) {
      norms[j] = norm;
      const float s = scores[j];
      S[j] = s > 0.f ? s : 0.f;  // NaN scores count as 0
    }
  }
  __syncthreads();

  for (int64_t step = 0;; ++step) {
    // Reduce the owned candidates, then merge the cluster's in rank order.
    const Candidate mine = block_best(S, j0, j1, scratch);
    if (threadIdx.x == 0) exchange[step & 1] = mine;
    Candidate pick = mine;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (csize > 1) {
      cluster.sync();  // release/acquire: exchange slots and owned global writes are visible
      pick = Candidate{-1.f, INT64_MAX};
      for (int r = 0; r < csize; ++r) {
        const Candidate c = *cluster.map_shared_rank(&exchange[step & 1], r);
        if (better(c, pick)) pick = c;
      }
      // F1: on the last step no later barrier orders the peers' reads of this CTA's
      // exchange slot before its exit; this one does.
      if (step == k - 1) cluster.sync();
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
      if (lane == 0) S[j] = suppressed(s, weight_from_dot(dot, norms[j], q_norm, p.gamma), s_pick);
    }
    __syncthreads();
  }
}

template <typename T, bool kVector>
cudaError_t launch_typed(const SelectParams& p, int num_sms, cudaStream_t stream) {
  cudaFuncAttributes attributes{};
  cudaError_t err = cudaFuncGetAttributes(&attributes, stream_kernel<T, kVector>);
  if (err != cudaSuccess) return err;
  const int csize = cluster_size_for(p.B, num_sms, attributes.ptxVersion);
  // F5: the grid holds B * csize CTAs in a signed 32-bit count.
  if (p.B > INT_MAX / csize) return cudaErrorInvalidValue;
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
  return cudaLaunchKernelEx(&config, stream_kernel<T, kVector>, StreamParams{p, csize});
}

template <typename T>
cudaError_t launch_vector_or_not(const SelectParams& p, int num_sms, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  // Strides of size-1 dimensions are never used, so they do not count. The load width
  // changes no result (one summation order, F3); it only decides the speed.
  const bool aligned = reinterpret_cast<uintptr_t>(p.features) % 16 == 0 && p.D % V == 0 &&
                       (p.N <= 1 || p.token_stride % V == 0) &&
                       (p.B <= 1 || p.batch_stride % V == 0);
  return aligned ? launch_typed<T, true>(p, num_sms, stream)
                 : launch_typed<T, false>(p, num_sms, stream);
}

}  // namespace

int cluster_size_for(int64_t B, int num_sms, int kernel_ptx_version) {
  if (kernel_ptx_version < 90 || B <= 0) return 1;
  int csize = 1;
  while (csize < kMaxCluster && B * csize * 2 <= num_sms) csize *= 2;
  return csize;
}

cudaError_t launch_stream_path(const SelectParams& p, cudaStream_t stream) {
  int num_sms = 0;
  const cudaError_t err = current_sm_count(&num_sms);
  if (err != cudaSuccess) return err;
  switch (p.feature_type) {
    case FeatureType::kFloat32: return launch_vector_or_not<float>(p, num_sms, stream);
    case FeatureType::kFloat16: return launch_vector_or_not<__half>(p, num_sms, stream);
    case FeatureType::kBFloat16: return launch_vector_or_not<__nv_bfloat16>(p, num_sms, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t plan_for_current_device(int64_t B, int64_t N, int64_t D, int64_t k,
                                    FeatureType dtype, PathRequest request, Plan* plan) {
  int device = 0, major = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err != cudaSuccess) return err;
  *plan = plan_select(B, N, D, k, dtype, major, request);
  return cudaSuccess;
}

cudaError_t launch_select(const SelectParams& p, const Plan& plan, cudaStream_t stream) {
  // F6: a raw caller gets an error, never an out-of-bounds access.
  if (p.B < 0 || p.N < 0 || p.D < 0 || p.k < 0 || p.k > p.N) return cudaErrorInvalidValue;
  if (p.B == 0 || p.k == 0) return cudaSuccess;
  // G3: a [B, N, 0] tensor has no storage; with D == 0 no kernel reads the features.
  if ((p.features == nullptr && p.D > 0) || p.scores == nullptr || p.out == nullptr || p.workspace == nullptr)
    return cudaErrorInvalidValue;
  switch (plan.path) {
    case Path::kStream: return launch_stream_path(p, stream);
    case Path::kArgmaxOnly:
    case Path::kGram: return launch_gram_path(p, plan, stream);
    case Path::kNone: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace idselect
