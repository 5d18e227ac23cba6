"""Full op microbenchmark grid; writes bench/results/select_<device>.json and a PNG plot.

    python bench/bench_select.py                 # CPU grid (2 threads on the dev machine)
    python bench/bench_select.py --quick         # a few cases, for a smoke run
    python bench/bench_select.py --device cuda   # GPU grid (bf16), results/select_cuda.json
"""
import argparse
import json
import os
import sys

import torch

from idselect import benchmark
from idselect.benchmark import Case

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_grid(quick: bool):
    main = [Case(1, n, d, 64) for d in (1024, 4096) for n in ((576,) if quick else (144, 576, 1152, 2880))]
    if quick:
        return [(main, ["native", "eager", "floor_read"], [None])]
    lookahead = [Case(1, 576, d, 64, features=f) for d in (64, 1024, 4096) for f in ("random", "clustered")]
    dtypes = [Case(1, 576, 4096, 64, dtype=dt) for dt in ("bfloat16", "float16")]
    batch = [Case(16, 576, 1024, 64), Case(16, 576, 4096, 64)]
    large_k = [Case(1, 576, 1024, k, features="clustered") for k in (288, 576)] + [Case(1, 2880, 1024, 1440, features="clustered")]
    return [
        (main, ["native", "eager", "reference", "floor_read", "floor_matvec"], [None]),
        (lookahead, ["native"], [1, 2, 4, 8]),
        (dtypes + batch, ["native", "eager", "floor_read"], [None]),
        (large_k, ["native", "eager", "gram"], [None]),
    ]


def cuda_grid(quick: bool):
    main = [Case(1, 576, 4096, 64, "bfloat16"), Case(16, 576, 4096, 64, "bfloat16"),
            Case(1, 2880, 4096, 288, "bfloat16"), Case(1, 4608, 3584, 460, "bfloat16")]
    if quick:
        return [(main[:1], ["native", "eager"], [None])]
    by_n = [Case(1, n, 4096, 64, "bfloat16") for n in (144, 576, 1152, 2304, 4608)]
    by_k = [Case(1, 2880, 4096, k, "bfloat16") for k in (16, 64, 144, 288, 576, 1440)]
    return [(main + by_n + by_k, ["native", "reference", "eager"], [None])]


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in rows if r["B"] == 1 and r["k"] == 64 and r["features"] == "random"]
    # One panel per (D, dtype) that was measured at several N.
    panels = sorted(key for key in {(r["D"], r["dtype"]) for r in sweep}
                    if len({r["N"] for r in sweep if (r["D"], r["dtype"]) == key}) > 1)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for ax, (D, dtype) in zip(axes[0], panels):
        sel = [r for r in sweep if r["D"] == D and r["dtype"] == dtype]
        for backend in sorted({r["backend"] for r in sel}):
            pts = sorted((r["N"], r["median_ms"], r["p10_ms"], r["p90_ms"]) for r in sel if r["backend"] == backend)
            if len(pts) < 2:
                continue
            n, med, lo, hi = zip(*pts)
            ax.errorbar(n, med, yerr=[[m - l for m, l in zip(med, lo)], [h - m for m, h in zip(med, hi)]], marker="o", capsize=3, label=backend)
        ax.set(xscale="log", yscale="log", xlabel="N (tokens)", ylabel="ms (median, p10-p90)", title=f"B=1 k=64 D={D} {dtype}")
        ax.legend(fontsize=8)
    fig.suptitle(f"idselect.select on {rows[0]['device']} (torch {rows[0]['torch']}, {rows[0]['commit']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG from an earlier JSON")
    args = p.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), os.path.splitext(args.replot)[0] + ".png")
        return 0

    device_type = torch.device(args.device).type
    grid = (cuda_grid if device_type == "cuda" else cpu_grid)(args.quick)
    rows = []
    for cases, backends, lookaheads in grid:
        rows += benchmark.run(cases, backends, args.device, args.repeats, lookaheads, progress=True)
    print(benchmark.format_table(rows))
    os.makedirs(args.out_dir, exist_ok=True)
    stem = f"select_{device_type}" + ("_quick" if args.quick else "")
    with open(os.path.join(args.out_dir, stem + ".json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(args.out_dir, stem + ".png"))
    print(f"wrote {stem}.json and {stem}.png under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
