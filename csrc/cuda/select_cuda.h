// Torch-free interface of the CUDA kernels of idselect::select. The glue
// (select_cuda_glue.cpp) checks the inputs, plans the path (select_dispatch.h), allocates the
// workspace, and passes raw pointers and the current stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "select_dispatch.h"

namespace idselect {
namespace cuda {

struct SelectParams {
  const void* features;     // [B, N, D], element stride 1 along D
  int64_t batch_stride;     // in elements
  int64_t token_stride;     // in elements
  FeatureType feature_type;
  const float* scores;      // [B, N] float32, contiguous
  const int64_t* lengths;   // [B] or nullptr; clamped to [k, N] on the device
  int64_t B, N, D, k;
  float gamma;
  int64_t* out;             // [B, k]
  float* workspace;         // workspace_floats(plan, B, N) floats, no initialisation needed
  // The Gram path's review-v2 variants (G4-G6: prefetched stages, weights loaded per step,
  // one-pass norms; the same bits): opt-in (IDSELECT_CUDA_TUNED=1) until a GPU verifies them.
  bool tuned = false;
};

// Floats of device workspace a plan needs: the norm and the current score of every token,
// and on the Gram path the weights of one row group.
inline size_t workspace_floats(const Plan& plan, int64_t B, int64_t N) {
  const size_t per_token = static_cast<size_t>(2 * B * N);
  return per_token + (plan.path == Path::kGram ? plan.weight_bytes / sizeof(float) : 0);
}

// The plan for this call on the current device (its compute capability; no memory query, so
// no synchronisation, capture-safe, and the same path whatever the allocator holds).
cudaError_t plan_for_current_device(int64_t B, int64_t N, int64_t D, int64_t k,
                                    FeatureType dtype, PathRequest request, Plan* plan);

// Enqueues the whole selection on `stream` along `plan`: no host synchronisation,
// graph-capturable. Validates the sizes itself (k <= N, B within the grid) and returns
// cudaErrorInvalidValue for inconsistent parameters.
cudaError_t launch_select(const SelectParams& params, const Plan& plan, cudaStream_t stream);

// The Gram path's norms and weights alone (a test hook, idselect::_gram_weights): for all B rows
// at once, norms into workspace[0, B N) and weights into workspace[2 B N, 2 B N + B N^2).
cudaError_t launch_gram_weights(const SelectParams& params, cudaStream_t stream);

// The current device's SM count, which sizes the kernels' grids.
inline cudaError_t current_sm_count(int* num_sms) {
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  return err == cudaSuccess ? cudaDeviceGetAttribute(num_sms, cudaDevAttrMultiProcessorCount, device) : err;
}

// The two families of kernels (select_cuda.cu, select_gram.cu), called by launch_select.
cudaError_t launch_stream_path(const SelectParams& params, cudaStream_t stream);
cudaError_t launch_gram_path(const SelectParams& params, const Plan& plan, cudaStream_t stream);

// Tokens of one row are split over this many CTAs of a thread-block cluster (Hopper), so that
// small batches use many SMs; large batches use one CTA per row. kernel_ptx_version: the PTX
// version (e.g. 90) of the kernel image that will run, from cudaFuncGetAttributes: clusters
// only where that image was compiled for sm_90 or newer.
int cluster_size_for(int64_t B, int num_sms, int kernel_ptx_version);

}  // namespace cuda
}  // namespace idselect
