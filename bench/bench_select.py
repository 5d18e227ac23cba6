"""Full op microbenchmark grid; writes bench/results/select_<device>.json and a PNG plot.

    python bench/bench_select.py                 # CPU grid (2 threads on the dev machine)
    python bench/bench_select.py --quick         # a few cases, for a smoke run
    python bench/bench_select.py --goals         # the first group only (GPU: the four goal shapes)
    python bench/bench_select.py --device cuda
                                                 # GPU grid (bf16), results/select_cuda.json
"""
import argparse
import json
import os
import sys

import torch

import idselect
from idselect.tools import benchmark
from idselect.tools.benchmark import Case

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_grid(quick: bool):
    """The main group times the kernel at its default ISA level and at the lower levels this
    CPU runs (native_v3 on an AVX-512 machine), against the eager loop and the compute floor
    (``gram``: the N x N x D GEMM of the same run, scaled to the k rows: floor_gemm_us; on an
    AVX-512 machine also ``gram_v3``, that GEMM with oneDNN capped at AVX2: floor_gemm_v3_us, the
    floor of the v3 level)."""
    main = [Case(1, n, d, 64) for d in (1024, 4096) for n in ((576,) if quick else (144, 576, 1152, 2880))]
    levels = benchmark.lower_cpu_levels()
    gemms = ["gram"] + (["gram_v3"] if "native_v3" in levels else [])  # each level's own GEMM floor
    # One token per register tile (a one-token dot-product loop), at the default level and v3.
    onetoken = ["native_onetoken"] + (["native_v3_onetoken"] if "native_v3" in levels else [])
    if quick:
        return [(main, ["native", *levels, "eager", "floor_read", *gemms], [None])]
    lookahead = [Case(1, 576, d, 64, features=f) for d in (64, 1024, 4096) for f in ("random", "clustered")]
    clustered = [Case(1, 576, d, 64, features="clustered") for d in (1024, 4096)]
    dtypes = [Case(1, 576, 4096, 64, dtype=dt) for dt in ("bfloat16", "float16")]
    batch = [Case(16, 576, 1024, 64), Case(16, 576, 4096, 64)]
    large_k = [Case(1, 576, 1024, k, features="clustered") for k in (288, 576)] + [Case(1, 2880, 1024, 1440, features="clustered")]
    return [
        (main, ["native", *levels, *onetoken, "eager", "reference", "floor_read", "floor_matvec", *gemms], [None]),
        (clustered, ["native", *levels, *onetoken, "eager", *gemms], [None]),
        (lookahead, ["native"], [1, 2, 4, 8, 16, "auto"]),
        (dtypes + batch, ["native", "eager", "floor_read"], [None]),
        (large_k, ["native", "eager", "gram"], [None]),
    ]


def cuda_grid(quick: bool):
    """The issue's goal shapes (bf16) with every CUDA path side by side, then N and k sweeps.
    native is the compiled kernel's automatic path (the default), or the batched tensor-op
    path when IDSELECT_CUDA_KERNEL=0 was set before the run or the build has no CUDA kernel."""
    main = [Case(1, 576, 4096, 64, "bfloat16"), Case(16, 576, 4096, 64, "bfloat16"),
            Case(1, 2880, 4096, 288, "bfloat16"), Case(1, 4608, 3584, 460, "bfloat16")]
    paths = ["native", "kernel_gram", "kernel_gram_tuned", "kernel_stream", "device_path", "eager", "reference"]
    if quick:
        return [(main[:1], ["native", "device_path", "eager"], [None])]
    fp32 = [Case(1, 576, 1024, 64, "float32")]
    by_n = [Case(1, n, 4096, 64, "bfloat16") for n in (144, 1152, 2304, 4608)]
    by_k = [Case(1, 2880, 4096, k, "bfloat16") for k in (16, 64, 144, 576, 1440)]
    return [(main + fp32, paths, [None]),
            (by_n + by_k, ["native", "kernel_gram", "kernel_gram_tuned", "kernel_stream", "device_path", "eager"], [None])]


def plot(records, path):
    """Time against N (k = 64) and against k (largest N), per backend, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({key[:-3] for r in records for key in r if key.endswith("_us") and not key.endswith(("_p10_us", "_p90_us"))})
    single = [r for r in records if r["B"] == 1 and r["features"] == "random"]
    panels = []
    for D, dtype in sorted({(r["D"], r["dtype"]) for r in single}):
        sweep_n = [r for r in single if (r["D"], r["dtype"]) == (D, dtype) and r["k"] == 64]
        if len({r["N"] for r in sweep_n}) > 1:
            panels.append(("N", f"B=1 k=64 D={D} {dtype}", sweep_n))
        big_n = max(r["N"] for r in single if (r["D"], r["dtype"]) == (D, dtype))
        sweep_k = [r for r in single if (r["D"], r["dtype"], r["N"]) == (D, dtype, big_n)]
        if len({r["k"] for r in sweep_k}) > 2:
            panels.append(("k", f"B=1 N={big_n} D={D} {dtype}", sweep_k))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for ax, (x, title, sel) in zip(axes[0], panels):
        for b in backends:
            pts = sorted((r[x], r[f"{b}_us"] / 1e3, r[f"{b}_p10_us"] / 1e3, r[f"{b}_p90_us"] / 1e3) for r in sel if f"{b}_us" in r)
            if len(pts) < 2:
                continue
            xs, med, lo, hi = zip(*pts)
            ax.errorbar(xs, med, yerr=[[m - l for m, l in zip(med, lo)], [h - m for m, h in zip(med, hi)]], marker="o", capsize=3, label=b)
        ax.set(xscale="log", yscale="log", xlabel=f"{x} (tokens)", ylabel="ms (median, p10-p90)", title=title)
        ax.legend(fontsize=8)
    r0 = records[0]
    fig.suptitle(f"idselect.select on {r0['device']} (torch {r0['torch']}, {r0['commit']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--goals", action="store_true", help="only the first group: the goal shapes, every path")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG from an earlier JSON")
    args = p.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), os.path.splitext(args.replot)[0] + ".png")
        return 0

    device_type = torch.device(args.device).type
    grid = (cuda_grid if device_type == "cuda" else cpu_grid)(args.quick)
    if args.goals:
        grid = grid[:1]
    if device_type == "cuda" and idselect.backend_for("cuda") != "native":
        print("note: the compiled CUDA kernel is not loaded (IDSELECT_CUDA_KERNEL=0, or built without nvcc): "
              "native is the batched tensor-op path and the kernel_* backends are left out")
        grid = [(cases, [b for b in backends if b not in benchmark.KERNEL_PATH_ENV], la) for cases, backends, la in grid]
    os.makedirs(args.out_dir, exist_ok=True)
    stem = f"select_{device_type}" + ("_quick" if args.quick else "_goals" if args.goals else "")
    rows = []
    for cases, backends, lookaheads in grid:
        rows += benchmark.run(cases, backends, args.device, args.repeats, lookaheads, progress=True)
        records = benchmark.by_case(rows)
        for record in records:
            record["backend_serving_native"] = idselect.backend_for(device_type)
        with open(os.path.join(args.out_dir, stem + ".json"), "w") as f:  # after every group
            json.dump(records, f, indent=1)
    print(benchmark.format_table(rows))
    plot(records, os.path.join(args.out_dir, stem + ".png"))
    print(f"wrote {stem}.json and {stem}.png under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
