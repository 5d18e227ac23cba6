"""Op microbenchmark: native kernel vs eager PyTorch loops vs the memory floor.

Used by ``python -m idselect bench`` (a short run on default sizes) and by
``bench/bench_select.py`` (the full grid, JSON and plots under bench/results/).
Every figure is a median over repeats with its 10th/90th percentiles, taken in one process
so that ratios between backends are side by side.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional

import torch

from .. import device_path, reference
from ..api import select  # noqa: F401  (loads the op)


@dataclass(frozen=True)
class Case:
    B: int
    N: int
    D: int
    k: int
    dtype: str = "float32"
    gamma: float = 20.0
    features: str = "random"  # or "clustered": a few centres, where suppression matters


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        # Results a benchmark writes as it goes (bench/results) do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/bench/results"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_inputs(case: Case, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if case.features == "clustered":
        centres = torch.randn(case.B, 16, case.D, generator=g)
        member = torch.randint(0, 16, (case.B, case.N), generator=g)
        feats = torch.gather(centres, 1, member[..., None].expand(-1, -1, case.D))
        feats = feats + 0.3 * torch.randn(case.B, case.N, case.D, generator=g)
    else:
        feats = torch.randn(case.B, case.N, case.D, generator=g)
    feats = feats.to(getattr(torch, case.dtype)).to(device)
    scores = torch.rand(case.B, case.N, generator=g).to(device)
    return feats, scores


def eager_loop(features: torch.Tensor, scores: torch.Tensor, k: int, gamma: float = 20.0) -> torch.Tensor:
    """The rule as a tuned eager PyTorch loop (what Python implementations ship): features
    normalised once, then per step one masked argmax, one matrix-vector product and a few
    vector ops, batched over rows and without host synchronisation."""
    f = features.float()
    fn = f / f.norm(dim=-1, keepdim=True).clamp_min(reference.EPS)
    s = scores.float()
    s = torch.where(s > 0, s, torch.zeros_like(s))
    taken = torch.zeros_like(s, dtype=torch.bool)
    rows = torch.arange(s.shape[0], device=s.device)
    out = torch.empty(s.shape[0], k, dtype=torch.int64, device=s.device)
    for t in range(k):
        i = torch.where(taken, -1.0, s).argmax(dim=1)
        out[:, t] = i
        taken[rows, i] = True
        cos = torch.bmm(fn, fn[rows, i].unsqueeze(2)).squeeze(2).clamp(-1.0, 1.0)
        s = reference.suppress(s, cos, s[rows, i].unsqueeze(1), gamma)
    return out


@contextmanager
def scoped_env(settings: Mapping[str, Optional[str]]) -> Iterator[None]:
    """Set environment variables for the ``with`` block only, then put back exactly what was
    there (a variable that was unset is unset again), also when the block raises.

    The compiled op reads its path and ISA switches (``KERNEL_PATH_ENV``, ``CPU_ISA_ENV``,
    ``IDSELECT_CPU_LOOKAHEAD``) from the environment on every call, so timing a forced path
    has to set them in this process; nothing may outlive the timing.

    Parameters
    ----------
    settings : Mapping[str, Optional[str]]
        Variable -> value; ``None`` leaves that variable as it is.
    """
    saved = {name: os.environ.get(name) for name in settings}
    try:
        for name, value in settings.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def env_setting(name: str, value: Optional[str]):
    """``scoped_env`` for one variable (``None``: leave it as it is)."""
    return scoped_env({name: value})


def backend_fns(features: torch.Tensor, scores: torch.Tensor, case: Case) -> Dict[str, Callable[[], object]]:
    """What each backend runs for one case. native: the op as dispatched (on CUDA: the compiled
    kernel's automatic path, or the batched tensor-op path when the kernel is off or not built);
    kernel_gram / kernel_gram_tuned / kernel_stream: the compiled CUDA kernel forced along one
    path (see KERNEL_PATH_ENV and cuda_path_env);
    device_path: the batched tensor-op path itself; floor_read: k plain reads of the features (the
    least any one-row-per-step method moves); floor_matvec: k matrix-vector products; gram:
    one blocked N x N similarity GEMM, a lower bound for a precomputed-Gram method."""
    k, gamma = case.k, case.gamma
    flat = features.reshape(-1, case.D)
    fn32 = features.float()
    vec = torch.randn(case.D, device=features.device)
    op = lambda: torch.ops.idselect.select(features, scores, k, gamma)  # noqa: E731
    return {
        "native": op,
        **{name: op for name in CPU_ISA_ENV},
        **{name: op for name in CPU_LOOP_ENV},
        **{name: op for name in KERNEL_PATH_ENV},
        "device_path": lambda: device_path.select(features, scores, k, gamma),
        "reference": lambda: reference.select(features, scores, k, gamma),
        "eager": lambda: eager_loop(features, scores, k, gamma),
        "floor_read": lambda: [flat.sum() for _ in range(k)],
        "floor_matvec": lambda: [torch.mv(fn32[0], vec) for _ in range(k)],
        "gram": lambda: torch.bmm(fn32, fn32.transpose(1, 2)),
    }


#: Backends that force a path of the compiled CUDA kernel (read by the glue on every call; the
#: path names of cuda_path_env).
KERNEL_PATH_ENV = {"kernel_gram": "gram", "kernel_gram_tuned": "gram_tuned", "kernel_stream": "stream"}


def cuda_path_env(path: str) -> Dict[str, str]:
    """The switches that force one path of the compiled CUDA kernel: ``auto``, ``gram`` or
    ``stream`` (IDSELECT_CUDA_PATH), or ``gram_tuned``, the Gram path with its opt-in review-v2
    variants (IDSELECT_CUDA_TUNED=1; bench/NOTES_CUDA.md)."""
    return {"IDSELECT_CUDA_PATH": path.removesuffix("_tuned"), "IDSELECT_CUDA_TUNED": "1" if path.endswith("_tuned") else "0"}
#: Backends that run the CPU kernel's hot loops at one x86-64 level (read on every call).
CPU_ISA_ENV = {"native_v4": "v4", "native_v3": "v3", "native_baseline": "baseline"}
_LEVEL_OF = {"x86-64-v4": "v4", "x86-64-v3": "v3", "baseline": "baseline"}
#: Backends that run the CPU kernel with one token per register tile (IDSELECT_CPU_TILE_TOKENS=1),
#: at the default level or at v3: a one-token dot-product loop, for comparison in one run.
CPU_LOOP_ENV = {"native_onetoken": None, "native_v3_onetoken": "v3"}


def cpu_isa() -> Optional[str]:
    """The x86-64 level the CPU kernel runs at by default (None without the compiled kernel)."""
    try:
        from .. import _C
    except ImportError:
        return None
    with scoped_env({"IDSELECT_CPU_ISA": "auto"}):
        return _C.cpu_isa()


#: GEMM backends at a lower ISA level, for that level's compute floor: torch's CPU matmul runs
#: through oneDNN, whose ISA is capped by ONEDNN_MAX_CPU_ISA when the library loads, so the
#: GEMM is timed in a child process (the same shapes, inputs from the same seed).
GEMM_LEVEL_ENV = {"gram_v3": "AVX2"}


def gemm_times_in_child(case: "Case", isa_cap: str, repeats: int, warmup: int = 2) -> List[float]:
    """Times (ms) of the case's N x N x D GEMM in a child process whose oneDNN is capped at
    ``isa_cap`` (e.g. AVX2: the rate an AVX2-only CPU's GEMM would reach on these cores)."""
    import json
    import sys

    script = (
        "import json, sys, time, torch\n"
        "from idselect.tools.benchmark import Case, make_inputs\n"
        "case = Case(**json.loads(sys.argv[1]))\n"
        "feats, _ = make_inputs(case, 'cpu')\n"
        "f = feats.float()\n"
        f"for _ in range({warmup}): torch.bmm(f, f.transpose(1, 2))\n"
        "times = []\n"
        f"for _ in range({repeats}):\n"
        "    t0 = time.perf_counter(); torch.bmm(f, f.transpose(1, 2)); times.append((time.perf_counter() - t0) * 1e3)\n"
        "print(json.dumps(times))\n"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa_cap)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(asdict(case))], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def lower_cpu_levels() -> List[str]:
    """Backends for the CPU kernel's levels below the default one that this CPU also runs
    (x86-64-v4 machines: the v3 clone, which AVX2-only machines run)."""
    best = cpu_isa()
    order = ["x86-64-v4", "x86-64-v3"]
    if best not in order:
        return []
    return [f"native_{_LEVEL_OF[level]}" for level in order[order.index(best) + 1:]]


def time_ms(fn: Callable[[], object], repeats: int, device: str, warmup: int = 2) -> List[float]:
    for _ in range(warmup):
        fn()
    times = []
    if device.startswith("cuda"):
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def summarize(times: List[float]) -> Dict[str, float]:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1]}


def job_env(backend: str, lookahead: Optional[int]) -> Dict[str, Optional[str]]:
    """The environment switches that make the op run one backend (``None``: left as it is)."""
    return {
        "IDSELECT_CPU_LOOKAHEAD": None if lookahead is None else str(lookahead),
        **(cuda_path_env(KERNEL_PATH_ENV[backend]) if backend in KERNEL_PATH_ENV
           else {"IDSELECT_CUDA_PATH": None, "IDSELECT_CUDA_TUNED": None}),
        "IDSELECT_CPU_ISA": CPU_ISA_ENV.get(backend, CPU_LOOP_ENV.get(backend)),
        "IDSELECT_CPU_TILE_TOKENS": "1" if backend in CPU_LOOP_ENV else None,
    }


def run(
    cases: Iterable[Case],
    backends: Iterable[str],
    device: str = "cpu",
    repeats: int = 11,
    lookaheads: Iterable[Optional[int]] = (None,),
    progress: bool = False,
) -> List[dict]:
    """Time every backend on every case; returns one row per (case, backend[, lookahead]).

    Per case, the in-process backends are timed in interleaved blocks (up to three sweeps,
    each a warm-up and a share of ``repeats`` calls per backend); the GEMM floors of lower
    ISA levels run in a child process after them."""
    cases, backends, lookaheads = list(cases), list(backends), list(lookaheads)
    meta = {
        "device": device_name(device),
        "device_type": torch.device(device).type,
        "torch": torch.__version__,
        "commit": git_commit(),
        "threads": torch.get_num_threads(),
        "cpu_isa": cpu_isa() if torch.device(device).type == "cpu" else None,
        # what the run's environment set (a backend's own switches are set on top, job_env)
        "idselect_env": {name: value for name, value in sorted(os.environ.items()) if name.startswith("IDSELECT_")},
    }
    jobs = [(c, b, la) for c in cases for b in backends for la in (lookaheads if b == "native" else [None])]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="idselect bench", unit="run")
    rows = []
    for case in dict.fromkeys(cases):
        case_jobs = [job for job in jobs if job[0] == case]
        feats, scores = make_inputs(case, device)
        fns = backend_fns(feats, scores, case)
        in_process = [job for job in case_jobs if job[1] not in GEMM_LEVEL_ENV]
        times: Dict[tuple, List[float]] = {job: [] for job in in_process}
        # Interleaved blocks: each backend's calls are spread over the case's timing window in
        # sweeps of rotated order, so a transient disturbance of the shared machine (another
        # process taking a core for a while) falls on every backend, not on whichever ran then.
        blocks = min(3, repeats)
        for sweep in range(blocks):
            order = in_process[sweep:] + in_process[:sweep] if sweep % 2 == 0 else in_process[::-1]
            calls = repeats // blocks + (1 if sweep < repeats % blocks else 0)
            for job in order:
                _, backend, lookahead = job
                with scoped_env(job_env(backend, lookahead)):
                    times[job] += time_ms(fns[backend], calls, device, warmup=2 if sweep == 0 else 1)
        for job in case_jobs:
            _, backend, lookahead = job
            if backend in GEMM_LEVEL_ENV:
                job_times = gemm_times_in_child(case, GEMM_LEVEL_ENV[backend], repeats)
            else:
                job_times = times[job]
            name = backend if lookahead is None else f"native_lookahead{lookahead}"
            rows.append({**meta, **asdict(case), "backend": name, "repeats": repeats, **summarize(job_times)})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return rows


CASE_KEYS = ("B", "N", "D", "k", "dtype", "gamma", "features")


def by_case(rows: List[dict]) -> List[dict]:
    """One record per case: the run's metadata, the case, and for every backend
    ``<backend>_us`` (median) with ``<backend>_p10_us`` / ``<backend>_p90_us``."""
    records: Dict[tuple, dict] = {}
    for r in rows:
        key = tuple(r[k] for k in CASE_KEYS)
        rec = records.setdefault(key, {k: r.get(k) for k in ("device", "device_type", "torch", "commit", "threads", "cpu_isa",
                                                             "idselect_env", "repeats") + CASE_KEYS})
        b = r["backend"]
        rec[f"{b}_us"] = round(r["median_ms"] * 1e3, 2)
        rec[f"{b}_p10_us"] = round(r["p10_ms"] * 1e3, 2)
        rec[f"{b}_p90_us"] = round(r["p90_ms"] * 1e3, 2)
    for rec in records.values():
        for gemm, floor in (("gram", "floor_gemm"), ("gram_v3", "floor_gemm_v3")):
            if f"{gemm}_us" in rec:
                # The compute floor: the k similarity rows (2 k N D flops) at the rate of the
                # N x N x D GEMM measured in the same run (2 N^2 D flops per row).
                for stat in ("", "_p10", "_p90"):
                    rec[f"{floor}{stat}_us"] = round(rec[f"{gemm}{stat}_us"] * rec["k"] / rec["N"] / rec["B"], 2)
    return list(records.values())


def format_table(rows: List[dict]) -> str:
    """One line per case: median ms (p10-p90) of each backend, and speedups of native."""
    by_case: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        key = (r["B"], r["N"], r["D"], r["k"], r["dtype"], r["gamma"], r["features"])
        by_case.setdefault(key, {})[r["backend"]] = r
    lines = []
    for key, results in by_case.items():
        B, N, D, k, dtype, gamma, feats = key
        parts = [f"B={B} N={N} D={D} k={k} {dtype} gamma={gamma:g} {feats}:"]
        for name, r in results.items():
            parts.append(f"  {name:>20}: {r['median_ms']:9.3f} ms  ({r['p10_ms']:.3f}-{r['p90_ms']:.3f})")
        if "native" in results:
            nat = results["native"]["median_ms"]
            for base in ("eager", "reference", "device_path"):
                if base in results:
                    parts.append(f"  {'native speedup vs ' + base:>32}: {results[base]['median_ms'] / nat:6.2f}x")
            if "floor_read" in results:
                parts.append(f"  {'native / floor_read':>32}: {nat / results['floor_read']['median_ms']:6.2f}x")
        for name, r in results.items():
            if name != "native" and name not in CPU_ISA_ENV:
                continue
            gemm = "gram_v3" if name == "native_v3" and "gram_v3" in results else "gram"
            if gemm not in results:
                continue
            floor = results[gemm]["median_ms"] * k / N / B
            ratio = f"{r['median_ms'] / floor:6.2f}x the GEMM floor of {gemm} ({floor:.3f} ms)"
            if "eager" in results:
                ratio += f", {results['eager']['median_ms'] / r['median_ms']:.2f}x faster than eager"
            parts.append(f"  {name:>32}: {ratio}")
        lines.append("\n".join(parts))
    return "\n".join(lines)
