// Metadata checks of idselect::select, shared by every compiled backend. They mirror
// idselect/_checks.py (the fake kernel and the reference) message for message.
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace idselect {

// "torch.float64", as Python prints a dtype, so messages match the Python backends.
inline std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

inline void check_select_inputs(const at::Tensor& features, const at::Tensor& scores,
                                int64_t k, double gamma,
                                const std::optional<at::Tensor>& lengths) {
  TORCH_CHECK_VALUE(features.dim() == 3,
                    "idselect.select: features must be a 3-D tensor [B, N, D], got a ",
                    features.dim(), "-D tensor of shape ", features.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 2,
                    "idselect.select: scores must be a 2-D tensor [B, N], got a ",
                    scores.dim(), "-D tensor of shape ", scores.sizes());
  const auto fdt = features.scalar_type();
  TORCH_CHECK_TYPE(fdt == at::kFloat || fdt == at::kHalf || fdt == at::kBFloat16,
                   "idselect.select: features must be float32, float16 or bfloat16, got ",
                   dtype_name(fdt));
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()),
                   "idselect.select: scores must be a floating tensor, got ",
                   dtype_name(scores.scalar_type()));
  TORCH_CHECK_VALUE(scores.device() == features.device(),
                    "idselect.select: scores must be on the same device as features (",
                    features.device(), "), got ", scores.device());
  const int64_t B = features.size(0), N = features.size(1);
  TORCH_CHECK_VALUE(scores.size(0) == B && scores.size(1) == N,
                    "idselect.select: scores must have shape [B, N] = [", B, ", ", N,
                    "] to match features ", features.sizes(), ", got ", scores.sizes());
  TORCH_CHECK_VALUE(k >= 0 && k <= N, "idselect.select: k must be in [0, N] = [0, ", N,
                    "], got k=", k);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0,
                    "idselect.select: gamma must be finite and >= 0, got gamma=", gamma);
  if (lengths.has_value()) {
    const at::Tensor& len = *lengths;
    TORCH_CHECK_VALUE(len.device() == features.device(),
                      "idselect.select: lengths must be on the same device as features (",
                      features.device(), "), got ", len.device());
    TORCH_CHECK_VALUE(len.scalar_type() == at::kLong,
                      "idselect.select: lengths must be int64, got ", dtype_name(len.scalar_type()));
    TORCH_CHECK_VALUE(len.dim() == 1 && len.size(0) == B,
                      "idselect.select: lengths must have shape [B] = [", B, "], got ",
                      len.sizes());
  }
}

// Tokens row b uses: its length clamped to [k, N], so k distinct picks always exist
// (a bad length through the raw op cannot cause an out-of-bounds access).
inline int64_t effective_length(int64_t length, int64_t k, int64_t n) {
  return length < k ? k : (length > n ? n : length);
}

}  // namespace idselect
