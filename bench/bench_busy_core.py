"""The CPU kernel with one core busy: 1 thread vs all threads, quiet vs another process spinning
on one core (pinned there with sched_setaffinity), at the goal shapes and at each ISA level
this CPU runs. The kernel should degrade gracefully: with a core busy, all threads should
never be much slower than 1 thread (issue 20).

    python bench/bench_busy_core.py       # writes bench/results/select_cpu_busy.json

Medians and p10/p90 of 15 repeats, side by side in one process.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import torch

import idselect  # noqa: F401  (loads the op)
from idselect.tools import benchmark

HERE = os.path.dirname(os.path.abspath(__file__))


def spin(core: int, stop) -> None:
    os.sched_setaffinity(0, {core})
    while not stop.is_set():
        pass


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return benchmark.summarize(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    cores = sorted(os.sched_getaffinity(0))
    if threads < 2 or len(cores) < 2:
        print("needs at least 2 threads and 2 cores")
        return 1
    levels = [None] + [benchmark.CPU_ISA_ENV[b] for b in benchmark.lower_cpu_levels()]
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(1, 576, D, generator=g), torch.rand(1, 576, generator=g)) for D in (1024, 4096)]
    rows = []
    for load in ("quiet", "one core busy"):
        stop, busy = mp.Event(), None
        if load != "quiet":
            busy = mp.get_context("fork").Process(target=spin, args=(cores[-1], stop), daemon=True)
            busy.start()
            time.sleep(0.5)
        try:
            for level in levels:
                with benchmark.env_setting("IDSELECT_CPU_ISA", level):
                    isa = benchmark.cpu_isa() if level is None else {"v3": "x86-64-v3", "baseline": "baseline"}[level]
                    for feats, scores in cases:
                        row = {"load": load, "cpu_isa": isa, "D": feats.shape[2]}
                        for n in sorted({1, threads}):
                            torch.set_num_threads(n)
                            stats = timed(lambda: torch.ops.idselect.select(feats, scores, 64, 20.0), args.repeats)
                            row.update({f"threads{n}_ms": round(stats["median_ms"], 3),
                                        f"threads{n}_p10_ms": round(stats["p10_ms"], 3),
                                        f"threads{n}_p90_ms": round(stats["p90_ms"], 3)})
                        torch.set_num_threads(threads)
                        row["all_threads_vs_1"] = round(row[f"threads{threads}_ms"] / row["threads1_ms"], 2)
                        rows.append(row)
                        print(f"{load:>14} {isa:>9} D={row['D']}: 1 thread {row['threads1_ms']:.2f} ms, "
                              f"{threads} threads {row[f'threads{threads}_ms']:.2f} ms ({row['all_threads_vs_1']:.2f}x)")
        finally:
            stop.set()
            if busy is not None:
                busy.join()
    meta = {"device": benchmark.device_name("cpu"), "torch": torch.__version__, "commit": benchmark.git_commit(),
            "threads": threads, "shape": "B=1 N=576 k=64 float32", "repeats": args.repeats}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "select_cpu_busy.json"), "w") as f:
        json.dump([{**meta, **r} for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
