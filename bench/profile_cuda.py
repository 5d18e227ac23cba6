"""Where the op's time goes, kernel by kernel: the four goal shapes along each compiled CUDA
path, under torch.profiler, with the device time of every kernel launched (median per call).

The first GPU run (bench/results/gpu_session_fb7bc26) measured the op at 3-6x its goals
without saying which kernel costs what; the review's fixes (G4: Gram K loop, G5: greedy weight
loads, G6: norms in two passes) need that split. Prints a table, writes JSON.

    python bench/profile_cuda.py --out bench/results/profile_cuda.json        # on a GPU
    python bench/profile_cuda.py --device cpu --small --out /tmp/p.json       # rehearsal
"""
import argparse
import json
import os
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import idselect  # noqa: E402
from idselect.tools.benchmark import Case, cuda_path_env, device_name, make_inputs, scoped_env  # noqa: E402

GOALS = [Case(1, 576, 4096, 64, "bfloat16"), Case(16, 576, 4096, 64, "bfloat16"),
         Case(1, 2880, 4096, 288, "bfloat16"), Case(1, 4608, 3584, 460, "bfloat16"),
         Case(1, 2928, 4096, 64, "bfloat16")]  # the last: LLaVA-NeXT-7B at keep 64
SMALL = [Case(1, 64, 32, 8), Case(2, 100, 16, 10)]


def kernel_times_us(fn, device: str, calls: int) -> dict:
    """Median device (or CPU, for the rehearsal) time per call of each kernel, in us."""
    fn()  # warm: first-call allocations and attribute queries stay out of the profile
    if device == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    per_kernel = {}
    for _ in range(calls):
        with profile(activities=activities) as prof:
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
        totals = {}
        for event in prof.events():
            if device == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            # a kernel's own span on the device; on the CPU (rehearsal) self time, as ops nest
            us = event.time_range.elapsed_us() if device == "cuda" else event.self_cpu_time_total
            # kernels of an anonymous namespace: "void ns::(anonymous namespace)::name<...>(...)"
            name = event.name.replace("(anonymous namespace)::", "").split("(")[0][:80]
            totals[name] = totals.get(name, 0.0) + us
        for name, us in totals.items():
            per_kernel.setdefault(name, []).append(us)
    return {name: statistics.median(values) for name, values in per_kernel.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (rehearsal)")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device).type
    if device == "cuda" and idselect.backend_for("cuda") != "native":
        print("the compiled CUDA kernel is not loaded: nothing to profile", file=sys.stderr)
        return 1
    # gram_tuned: the Gram path's opt-in review-v2 variants (IDSELECT_CUDA_TUNED=1).
    paths = ["gram", "gram_tuned", "stream"] if device == "cuda" else ["auto"]
    rows = []
    for case in (SMALL if args.small else GOALS):
        features, scores = make_inputs(case, args.device)
        for path in paths:
            with scoped_env(cuda_path_env(path) if device == "cuda" else {}):
                kernels = kernel_times_us(
                    lambda: torch.ops.idselect.select(features, scores, case.k, case.gamma), device, args.calls)
            total = sum(kernels.values())
            rows.append({"B": case.B, "N": case.N, "D": case.D, "k": case.k, "dtype": case.dtype, "path": path,
                         "total_us": round(total, 1), "kernels_us": {n: round(t, 1) for n, t in kernels.items()}})
            print(f"B={case.B} N={case.N} D={case.D} k={case.k} {case.dtype} path={path}: {total:.1f} us")
            for name, us in sorted(kernels.items(), key=lambda item: -item[1]):
                print(f"    {us:10.1f} us  {name}")
    meta = {"device": device_name(args.device), "torch": torch.__version__, "calls": args.calls}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
