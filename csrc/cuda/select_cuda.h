// Torch-free interface of the fused CUDA kernel of idselect::select. The glue
// (select_cuda_glue.cpp) checks the inputs and passes raw pointers and the current stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace idselect {
namespace cuda {

enum class FeatureType { kFloat32, kFloat16, kBFloat16 };

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
  float* workspace;         // workspace_floats(B, N) floats, no initialisation needed
};

// Floats of device workspace the launch needs: current scores and norms of every token.
inline size_t workspace_floats(int64_t B, int64_t N) { return static_cast<size_t>(2 * B * N); }

// Tokens of one row are split over this many CTAs of a thread-block cluster (Hopper), so that
// small batches use many SMs; large batches use one CTA per row.
int cluster_size_for(int64_t B, int num_sms, int compute_major);

// Enqueues the whole selection on `stream`: no host synchronisation, graph-capturable.
cudaError_t launch_select(const SelectParams& params, cudaStream_t stream);

}  // namespace cuda
}  // namespace idselect
