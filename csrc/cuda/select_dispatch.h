// Which CUDA path serves a call of idselect::select, as a pure function of the shapes, the
// dtype and the device (G7: not of the free memory, which would make the path - and with it
// the near-tie picks - depend on the allocator's state; the glue falls back to the streaming
// path only when the workspace cannot be allocated at all). Plain C++ (no CUDA, no torch), so that the rule is
// unit-tested on any machine (tests/test_cuda_dispatch.py compiles it with g++).
//
// Paths (docs/algorithm.md, "CUDA paths"):
//   kArgmaxOnly  k == 1, N <= kGramMaxTokens: one argmax of the clamped scores per row (greedy
//                kernel, no weights); a longer row takes kStream.
//   kGram        the weights of every token pair of a row, W = exp(-gamma (1 - cos)^2), are
//                computed once by a tiled Gram kernel (tensor cores for bf16/fp16, fp32 FMA
//                for fp32) into a [rows, N, N] float32 workspace; then one CTA per row runs
//                the k greedy steps with the row's scores in shared memory.
//   kStream      no N x N workspace: per step, the similarity row of the pick is recomputed
//                from the features (thread-block clusters on sm_90).
//
// The choice never depends on B (so a row's result never depends on its batch), only on
// whether one row's W fits under the workspace cap; rows are then processed in groups under
// the cap, which changes no result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace idselect {
namespace cuda {

enum class FeatureType { kFloat32, kFloat16, kBFloat16 };

enum class Path { kNone, kArgmaxOnly, kGram, kStream };

// Tests and benchmarks may ask for a path (IDSELECT_CUDA_PATH=gram|stream); it is honoured
// when feasible, otherwise the automatic choice stands.
enum class PathRequest { kAuto, kGram, kStream };

// A row's scores live in one CTA's shared memory on the Gram path: 4 bytes per token.
constexpr int64_t kGramMaxTokens = 8192;
// The Gram path computes N^2/2 similarities once where the streaming path computes k * N; it
// pays when N <= kGramTokensPerPick * k. Measured on an H100 (bench/results, fb7bc26; bf16,
// D = 3584-4096): streaming reads the features at about 0.3 TB/s per step, the Gram path
// (Gram + greedy) runs at about 23 TFLOP/s of N^2 D, so they cross near N / k = 150; the first
// estimate, 32, sent LLaVA-NeXT's 2928 tokens at k = 64 to streaming at 3x the cost.
constexpr int64_t kGramTokensPerPick = 128;
// Workspace cap for W: at most this many bytes (rows are processed in groups under it).
constexpr std::size_t kWorkspaceCapBytes = std::size_t(1) << 30;

struct Plan {
  Path path = Path::kNone;
  int64_t rows_per_group = 0;   // Gram path: rows whose W is live at once (>= 1)
  std::size_t weight_bytes = 0; // Gram path: bytes of W for one group
};

inline std::size_t weight_bytes_per_row(int64_t N) {
  return static_cast<std::size_t>(N) * static_cast<std::size_t>(N) * sizeof(float);
}

// compute_major: the device's compute capability major (tensor-core bf16/fp16 needs >= 8).
inline Plan plan_select(int64_t B, int64_t N, int64_t D, int64_t k, FeatureType dtype,
                        int compute_major, PathRequest request) {
  (void)D;  // the rule does not use D yet: both paths scale linearly in it
  Plan plan;
  if (B <= 0 || k <= 0 || N <= 0) return plan;
  // k == 1 is one argmax, whose kernel keeps a row's scores in shared memory (G1: only up to
  // kGramMaxTokens); a request for the streaming path is honoured (tests stress it with k = 1).
  if (k == 1 && N <= kGramMaxTokens && request != PathRequest::kStream) {
    plan.path = Path::kArgmaxOnly;
    return plan;
  }
  const std::size_t cap = kWorkspaceCapBytes;
  const bool tensor_cores_ok = dtype == FeatureType::kFloat32 || compute_major >= 8;
  const bool gram_feasible = N <= kGramMaxTokens && weight_bytes_per_row(N) <= cap && tensor_cores_ok;
  const bool gram_pays = N <= kGramTokensPerPick * k;
  bool gram = gram_feasible && gram_pays;
  if (request == PathRequest::kGram) gram = gram_feasible;
  if (request == PathRequest::kStream) gram = false;
  if (!gram) {
    plan.path = Path::kStream;
    return plan;
  }
  plan.path = Path::kGram;
  const int64_t fit = static_cast<int64_t>(cap / weight_bytes_per_row(N));
  plan.rows_per_group = std::max<int64_t>(1, std::min(B, fit));
  plan.weight_bytes = weight_bytes_per_row(N) * static_cast<std::size_t>(plan.rows_per_group);
  return plan;
}

}  // namespace cuda
}  // namespace idselect
