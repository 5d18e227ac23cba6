// Test driver for csrc/cuda/select_dispatch.h (tests/test_cuda_dispatch.py): reads one query
// per line, "B N D k dtype compute_major request" (dtype: f32|f16|bf16, request:
// auto|gram|stream), prints "path rows_per_group weight_bytes" for each.
#include <iostream>
#include <string>

#include "../../csrc/cuda/select_dispatch.h"

using namespace idselect::cuda;

int main() {
  long long B, N, D, k;
  int major;
  std::string dtype_name, request_name;
  while (std::cin >> B >> N >> D >> k >> dtype_name >> major >> request_name) {
    const FeatureType dtype = dtype_name == "f32" ? FeatureType::kFloat32
                              : dtype_name == "f16" ? FeatureType::kFloat16 : FeatureType::kBFloat16;
    const PathRequest request = request_name == "gram" ? PathRequest::kGram
                                : request_name == "stream" ? PathRequest::kStream : PathRequest::kAuto;
    const Plan plan = plan_select(B, N, D, k, dtype, major, request);
    const char* path = plan.path == Path::kNone ? "none"
                       : plan.path == Path::kArgmaxOnly ? "argmax"
                       : plan.path == Path::kGram ? "gram" : "stream";
    std::cout << path << ' ' << plan.rows_per_group << ' ' << plan.weight_bytes << '\n';
  }
  return 0;
}
