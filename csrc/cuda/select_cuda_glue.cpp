// Registers the fused CUDA kernel (select_cuda.cu) as the CUDA backend of idselect::select
// (verified on an H100 with the tests and compute-sanitizer: bench/results/gpu_session_fb7bc26),
// unless IDSELECT_CUDA_KERNEL=0 is set as the library loads; then the Python package serves
// CUDA tensors with batched tensor ops (docs/algorithm.md, "Backends and routing").
// Compiled only when torch has CUDA; the kernel itself has no torch headers.
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../select_checks.h"
#include "select_cuda.h"

namespace idselect {
namespace {

cuda::FeatureType feature_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::FeatureType::kFloat32;
    case at::kHalf: return cuda::FeatureType::kFloat16;
    default: return cuda::FeatureType::kBFloat16;  // the only other dtype the checks allow
  }
}

// IDSELECT_CUDA_PATH=gram|stream asks for a path (tests, benchmarks); read per call.
cuda::PathRequest requested_path() {
  const char* value = std::getenv("IDSELECT_CUDA_PATH");
  if (value == nullptr) return cuda::PathRequest::kAuto;
  if (std::strcmp(value, "gram") == 0) return cuda::PathRequest::kGram;
  if (std::strcmp(value, "stream") == 0) return cuda::PathRequest::kStream;
  TORCH_CHECK_VALUE(std::strcmp(value, "auto") == 0 || value[0] == '\0',
                    "idselect.select: IDSELECT_CUDA_PATH must be auto, gram or stream, got '", value, "'");
  return cuda::PathRequest::kAuto;
}

at::Tensor select_cuda(const at::Tensor& features_in, const at::Tensor& scores_in, int64_t k,
                       double gamma, const std::optional<at::Tensor>& lengths_in) {
  check_select_inputs(features_in, scores_in, k, gamma, lengths_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const int64_t B = features_in.size(0), N = features_in.size(1), D = features_in.size(2);
  // F5: every launch indexes rows with 32-bit grid counts.
  TORCH_CHECK_VALUE(B <= std::numeric_limits<int32_t>::max(),
                    "idselect.select: the CUDA kernel takes at most 2^31 - 1 rows, got features with B=", B);
  at::Tensor out = at::empty({B, k}, features_in.options().dtype(at::kLong));
  if (B == 0 || k == 0) return out;

  // Only the feature dim must be dense; token and batch strides are passed through.
  const at::Tensor features = features_in.stride(2) == 1 ? features_in : features_in.contiguous();
  const at::Tensor scores = scores_in.to(at::kFloat).contiguous();
  at::Tensor lengths;
  if (lengths_in.has_value()) lengths = lengths_in->contiguous();

  const cuda::FeatureType dtype = feature_type(features.scalar_type());
  cuda::Plan plan;
  C10_CUDA_CHECK(cuda::plan_for_current_device(B, N, D, k, dtype, requested_path(), &plan));
  at::Tensor workspace;
  try {
    workspace = at::empty({static_cast<int64_t>(cuda::workspace_floats(plan, B, N))}, scores.options());
  } catch (const c10::OutOfMemoryError&) {
    if (plan.path != cuda::Path::kGram) throw;
    // G7: no room for the Gram path's weights (at most 1 GiB): the streaming path needs none.
    C10_CUDA_CHECK(cuda::plan_for_current_device(B, N, D, k, dtype, cuda::PathRequest::kStream, &plan));
    workspace = at::empty({static_cast<int64_t>(cuda::workspace_floats(plan, B, N))}, scores.options());
  }

  cuda::SelectParams params;
  params.features = features.data_ptr();
  params.batch_stride = features.stride(0);
  params.token_stride = features.stride(1);
  params.feature_type = dtype;
  params.scores = scores.data_ptr<float>();
  params.lengths = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
  params.B = B;
  params.N = N;
  params.D = D;
  params.k = k;
  params.gamma = static_cast<float>(gamma);
  params.out = out.data_ptr<int64_t>();
  params.workspace = workspace.data_ptr<float>();
  C10_CUDA_CHECK(cuda::launch_select(params, plan, c10::cuda::getCurrentCUDAStream()));
  return out;
}

// The rule of idselect._ops.cuda_kernel_disabled: exactly "0" turns the kernel off (the
// Python package rejects any other value but "1" before it loads this library).
bool cuda_kernel_disabled() {
  const char* value = std::getenv("IDSELECT_CUDA_KERNEL");
  return value != nullptr && std::strcmp(value, "0") == 0;
}

// What TORCH_LIBRARY_IMPL(idselect, CUDA, m) does, made conditional: the registration lives
// as long as the library (a static), and does not exist when turned off.
struct ConditionalCudaRegistration {
  std::unique_ptr<torch::Library> library;
  ConditionalCudaRegistration() {
    if (cuda_kernel_disabled()) return;
    library = std::make_unique<torch::Library>(torch::Library::IMPL, "idselect",
                                               c10::DispatchKey::CUDA, __FILE__, __LINE__);
    library->impl("select", &select_cuda);
  }
};
const ConditionalCudaRegistration cuda_registration;

}  // namespace

}  // namespace idselect
