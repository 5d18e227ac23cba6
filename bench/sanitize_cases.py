"""Small CUDA cases covering every kernel path, for compute-sanitizer (memcheck, racecheck):
cluster-split rows (B=1), one CTA per row (large B), ragged and bad lengths, hostile values,
unaligned widths, all three dtypes. Exits non-zero if a result breaks the contract."""
import math

import torch

import idselect  # noqa: F401


def main():
    g = torch.Generator().manual_seed(0)
    cases = [
        (1, 576, 4096, 64, torch.bfloat16, None),
        (1, 3, 7, 3, torch.float16, None),  # fewer tokens than CTAs in the cluster
        (300, 97, 33, 20, torch.float32, None),  # one CTA per row, scalar loads
        (5, 1000, 64, 50, torch.bfloat16, torch.tensor([1000, 3, -4, 5000, 999])),  # bad lengths
    ]
    for B, N, D, k, dtype, lengths in cases:
        feats = torch.randn(B, N, D, generator=g)
        scores = torch.rand(B, N, generator=g)
        feats[0, 0] = 0.0
        feats[0, min(1, N - 1), 0] = math.nan
        scores[0, min(2, N - 1)] = math.inf
        scores[-1, 0] = math.nan
        out = torch.ops.idselect.select(
            feats.to(dtype).cuda(), scores.cuda(), k, 20.0, None if lengths is None else lengths.cuda()
        ).cpu()
        for row in out.tolist():
            assert len(set(row)) == k and all(0 <= i < N for i in row), row
    torch.cuda.synchronize()
    print("sanitize cases ok")


if __name__ == "__main__":
    main()
