"""Small CUDA cases covering every CUDA path, for compute-sanitizer (memcheck, racecheck,
synccheck): the Gram path (tensor-core tiles for bf16/fp16, FMA tiles for fp32, partial
tiles, row groups; also with its review-v2 variants, IDSELECT_CUDA_TUNED=1), the greedy kernel alone (k = 1), the streaming path (cluster-split rows
at B = 1, one CTA per row at large B, fewer tokens than CTAs), the batched tensor-op default
path; ragged and bad lengths, hostile values, unaligned widths (scalar loads).
Exits non-zero if a result breaks the contract (k distinct valid indices per row).

    compute-sanitizer --tool memcheck --error-exitcode 9 python bench/sanitize_cases.py
"""
import math
import os
import sys

os.environ["IDSELECT_CUDA_KERNEL"] = "1"  # before the import: the compiled kernel, whatever the caller's setting

import torch  # noqa: E402

import idselect  # noqa: E402
from idselect import device_path  # noqa: E402
from idselect.tools.benchmark import cuda_path_env  # noqa: E402

CASES = [  # B, N, D, k, dtype, lengths
    (1, 576, 1024, 16, torch.bfloat16, None),
    (1, 3, 7, 3, torch.float16, None),  # fewer tokens than CTAs in a cluster; one partial tile
    (2, 130, 40, 2, torch.float32, None),  # fp32 tiles, partial tiles, k = 2
    (300, 97, 33, 20, torch.float32, None),  # one CTA per row, scalar loads
    (5, 200, 64, 50, torch.bfloat16, torch.tensor([200, 3, -4, 5000, 199])),  # bad lengths
    (3, 70, 24, 1, torch.float16, None),  # k = 1: argmax only
    # 1120 Gram tiles, more than an H100's 1056 CTAs: a CTA reuses its shared memory (one K
    # stage, to keep racecheck short)
    (40, 400, 32, 40, torch.bfloat16, None),
]


def run_case(select, B, N, D, k, dtype, lengths, g):
    feats = torch.randn(B, N, D, generator=g)
    scores = torch.rand(B, N, generator=g)
    feats[0, 0] = 0.0
    feats[0, min(1, N - 1), 0] = math.nan
    scores[0, min(2, N - 1)] = math.inf
    scores[-1, 0] = math.nan
    out = select(feats.to(dtype).cuda(), scores.cuda(), k, 20.0, None if lengths is None else lengths.cuda()).cpu()
    for row in out.tolist():
        assert len(set(row)) == k and all(0 <= i < N for i in row), row


def main():
    assert idselect.backend_for("cuda") == "native", "the compiled CUDA kernel did not load"
    g = torch.Generator().manual_seed(0)
    for path in ("gram", "gram_tuned", "stream", "auto"):
        os.environ.update(cuda_path_env(path))
        for case in CASES:
            run_case(torch.ops.idselect.select, *case, g)
        torch.cuda.synchronize()
        print(f"path {path}: ok", flush=True)
    os.environ.pop("IDSELECT_CUDA_PATH")
    os.environ.pop("IDSELECT_CUDA_TUNED")
    for case in CASES[:3]:
        run_case(device_path.select, *case, g)
    torch.cuda.synchronize()
    print("device_path: ok")
    print("sanitize cases ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
