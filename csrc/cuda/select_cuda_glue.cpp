// Registers the fused CUDA kernel (select_cuda.cu) as the CUDA backend of idselect::select
// (verified on an H100 with the tests and compute-sanitizer: bench/results/gpu_session_fb7bc26),
// unless IDSELECT_CUDA_KERNEL=0 is set as the library loads; then the Python package serves
// CUDA tensors with batched tensor ops (docs/algorithm.md, "Backends and routing").
// Compiled only when torch has CUDA; the kernel itself has no torch headers.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <tuple>
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

// IDSELECT_CUDA_TUNED=1 runs the Gram path's review-v2 variants (SelectParams::tuned); read per
// call, so tests and benchmarks compare them with the verified kernels in one process.
bool tuned_kernels() {
  const char* value = std::getenv("IDSELECT_CUDA_TUNED");
  if (value == nullptr || value[0] == '\0') return false;
  TORCH_CHECK_VALUE(std::strcmp(value, "0") == 0 || std::strcmp(value, "1") == 0,
                    "idselect.select: IDSELECT_CUDA_TUNED must be 0 or 1, got '", value, "'");
  return value[0] == '1';
}

// A launch's parameters over `features` (dense along D, read with their batch and token
// strides) and a float32 workspace; no scores, lengths, k or output: the caller's to add.
cuda::SelectParams feature_params(const at::Tensor& features, double gamma, bool tuned, const at::Tensor& workspace) {
  cuda::SelectParams params;
  params.features = features.data_ptr();
  params.batch_stride = features.stride(0);
  params.token_stride = features.stride(1);
  params.feature_type = feature_type(features.scalar_type());
  params.scores = nullptr;
  params.lengths = nullptr;
  params.B = features.size(0);
  params.N = features.size(1);
  params.D = features.size(2);
  params.k = 0;
  params.gamma = static_cast<float>(gamma);
  params.out = nullptr;
  params.workspace = workspace.data_ptr<float>();
  params.tuned = tuned;
  return params;
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
  const bool tuned = tuned_kernels();
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

  cuda::SelectParams params = feature_params(features, gamma, tuned, workspace);
  params.scores = scores.data_ptr<float>();
  params.lengths = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
  params.k = k;
  params.out = out.data_ptr<int64_t>();
  C10_CUDA_CHECK(cuda::launch_select(params, plan, c10::cuda::getCurrentCUDAStream()));
  return out;
}

// idselect::_gram_weights (a test hook, idselect/_ops.py GRAM_WEIGHTS_SCHEMA): the Gram path's
// norms [B, N] and weights [B, N, N], as select computes them (IDSELECT_CUDA_TUNED honoured).
std::tuple<at::Tensor, at::Tensor> gram_weights_cuda(const at::Tensor& features_in, double gamma) {
  TORCH_CHECK_VALUE(features_in.dim() == 3, "idselect._gram_weights: features must be [B, N, D], got shape ",
                    features_in.sizes());
  const at::ScalarType type = features_in.scalar_type();
  TORCH_CHECK_VALUE(type == at::kFloat || type == at::kHalf || type == at::kBFloat16,
                    "idselect._gram_weights: features must be float32, float16 or bfloat16, got ", type);
  const int64_t B = features_in.size(0), N = features_in.size(1), D = features_in.size(2);
  TORCH_CHECK_VALUE(B >= 1 && N >= 1 && N <= cuda::kGramMaxTokens, "idselect._gram_weights: needs B >= 1 and 1 <= N <= ",
                    cuda::kGramMaxTokens, ", got B=", B, ", N=", N);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0, "idselect._gram_weights: gamma must be finite and >= 0, got ",
                    gamma);
  const c10::cuda::CUDAGuard guard(features_in.device());
  int device = 0, major = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  TORCH_CHECK_VALUE(type == at::kFloat || major >= 8,
                    "idselect._gram_weights: 16-bit features need tensor cores (sm_80 or newer), this GPU is sm_",
                    major, "x");
  const at::Tensor features = features_in.stride(2) == 1 ? features_in : features_in.contiguous();
  at::Tensor workspace = at::empty({2 * B * N + B * N * N}, features.options().dtype(at::kFloat));
  const cuda::SelectParams params = feature_params(features, gamma, tuned_kernels(), workspace);
  C10_CUDA_CHECK(cuda::launch_gram_weights(params, c10::cuda::getCurrentCUDAStream()));
  return {workspace.narrow(0, 0, B * N).view({B, N}), workspace.narrow(0, 2 * B * N, B * N * N).view({B, N, N})};
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
    library->impl("_gram_weights", &gram_weights_cuda);
  }
};
const ConditionalCudaRegistration cuda_registration;

}  // namespace

}  // namespace idselect
