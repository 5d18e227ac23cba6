"""End-to-end benchmark: time to first token (prefill), 64 new tokens, importance + selection time
and peak GPU memory, unpruned vs keep 192/128/64/16, at batch 1 and 8, on random-weight models
built from configs. Per keep, side by side in one process: ID-Selection (the op as dispatched on
this device), plain top-k by the same importance (``selection="topk"``, no diversity step) and
ID-Selection through the pure-PyTorch reference (``selection=idselect.reference.select``).

    python bench/bench_e2e.py --size real --device cuda --models llava-1.5-7b   # bf16, sdpa
    python bench/bench_e2e.py --size small                                      # tiny widths, CPU
    python bench/bench_e2e.py --dry-run --depth 1     # no GPU: meta-device build, parameter counts,
                                                      # token counts at real widths, memory/time plan

On CUDA the id rows use the compiled kernel (the default; the ``backend`` column says
"native"); add the device-path variant to keep the batched tensor-op route side by side:
    python bench/bench_e2e.py --size real --device cuda --variants id device_path topk reference
(IDSELECT_CUDA_KERNEL=0 at start turns the kernel off: the id rows then say "device_path").

Models: llava-1.5-7b (336 px, 576 tokens), llava-next-7b (anyres 672 x 672, 2928), qwen2.5-vl-7b
(448 x 448, 256), qwen2.5-vl-7b-large (1904 x 1904: 136 x 136 patches, 4624 tokens), qwen3-vl-8b
(512 x 512, 256, DeepStack) and llava-onevision-7b (anyres_max_9 at 768 x 768, 3699 with newlines). Their
architecture numbers and image geometry come from idselect/tools/shapes.py (the FLOPs presets'
source too); ``SMALL`` in bench/e2e_models.py replaces only widths.

Writes <out-dir>/e2e_<size>_<device>.json and .png (prefill speedup against keep) and
_share.png (importance + selection share of the pruned prefill) after every model, merging with
rows of other models already in that file, so that a run split with --models (or cut short by a
time limit) loses nothing. Random weights: the times are real, the answers are not.
"""
import argparse
import inspect
import json
import os
import statistics
import sys
import time
import warnings

import torch

import idselect
from idselect.hooks.registry import REGISTRY
from idselect.testing.counting import count_ops
from idselect.tools.benchmark import device_name, git_commit
from idselect.tools.cli_args import positive_int

# The models and the plan live beside this script (bench/ is on sys.path when it runs).
from e2e_models import KNOWN_PARAMS, MODELS, VARIANTS, batched_inputs, build, make_model, param_count  # noqa: F401
from e2e_plan import dry_run, memory_estimate_gib

HERE = os.path.dirname(os.path.abspath(__file__))

def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(fn, device):
    """Wall-clock milliseconds of one call, between two device synchronisations."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def summary(times):
    """Median and p10/p90 (ms) of a list of times."""
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1], "runs": len(times)}


def launches_and_syncs(fn, device):
    """(kernels, host synchronisations) of one call: on CUDA the profiler's GPU kernels and
    the warnings of torch.cuda.set_sync_debug_mode; elsewhere the aten ops and sync ops that
    idselect.testing.counting counts (what the same code launches and waits for on a GPU)."""
    if not device.startswith("cuda"):
        with count_ops() as counts:
            fn()
        return counts.kernels, counts.syncs
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sync(device)
    return kernels, sum("synchroniz" in str(w.message) for w in caught)


def compile_for_speed(model, device):
    """The README's fast path: the language model and the vision towers compiled (CUDA graphs
    on CUDA); returns the compiled modules (to undo with ``uncompile``)."""
    family = REGISTRY[model.config.model_type]
    modules = [family.language_model(model)] + [getattr(model.model, name) for name in ("vision_tower", "visual")
                                                if isinstance(getattr(model.model, name, None), torch.nn.Module)]
    mode = "reduce-overhead" if device.startswith("cuda") else None
    for module in modules:
        module.compile(mode=mode)
    return modules


def uncompile(modules):
    for module in modules:
        module._compiled_call_impl = None
    torch._dynamo.reset()


class Oracle:
    """The floor of what pruning can give: the unpatched feature functions (vision tower and
    projector) and then the unpatched language model fed the sequence a patched prefill
    already pruned (captured once), with the LM head on the last token."""

    def __init__(self, model, inputs, keep):
        from idselect.hooks import llm_call

        self.model, self.inputs = model, inputs
        captured = {}
        original_run = llm_call.LanguageModelCalls.run

        def capture(calls, original, new_kwargs, new_state):
            captured.update(new_kwargs)
            return original_run(calls, original, new_kwargs, new_state)

        llm_call.LanguageModelCalls.run = capture
        try:
            with torch.no_grad(), idselect.patch(model, keep=keep):
                model(**inputs, use_cache=False, logits_to_keep=1)
        finally:
            llm_call.LanguageModelCalls.run = original_run
        family = REGISTRY[model.config.model_type]
        cache_arg = next((k for k in ("cache", "past_key_values") if k in captured), None)
        self.llm_kwargs = {k: v for k, v in captured.items() if k != cache_arg}
        self.llm_kwargs["use_cache"] = False
        self.llm = family.language_model(model)
        base = family.base(model)
        self.features = []
        for name in family.feature_functions:
            fn = getattr(base, name)
            params = inspect.signature(fn).parameters
            args = {k: v for k, v in inputs.items() if k in params}
            if any(k.startswith("pixel_values") for k in args):
                self.features.append((fn, args))

    def __call__(self):
        for fn, args in self.features:
            fn(**args)
        hidden = self.llm(**self.llm_kwargs).last_hidden_state
        return self.model.lm_head(hidden[:, -1:])


def run_model(spec, model, device, dtype, batches, keeps, variants, text_tokens, new_tokens, repeats, progress,
              mode="eager"):
    """Yields, batch by batch, one row per (keep, variant) plus the unpruned row and, per keep, an
    oracle row. Variants are interleaved: every round times each case once (prefill; a generate
    run in the first rounds), so a slow period falls on all of them."""
    usable = [k for k in keeps if k < spec.visual_tokens]
    compiled = compile_for_speed(model, device) if mode == "compiled" else []
    generate_options = dict(cache_implementation="static") if mode == "compiled" else {}
    try:
        for batch in batches:
            yield run_batch(spec, model, device, batch, usable, variants, text_tokens, new_tokens, repeats, progress,
                            mode, generate_options, dtype)
    finally:
        uncompile(compiled)


def run_batch(spec, model, device, batch, usable, variants, text_tokens, new_tokens, repeats, progress, mode,
              generate_options, dtype):
    inputs = batched_inputs(spec, batch, text_tokens, device, dtype)
    llm_unpruned = inputs["input_ids"].shape[1]
    cases = [(None, "unpruned")] + [(k, v) for k in usable for v in variants] + [(k, "oracle") for k in usable]
    prefill_runs = max(repeats, 11) if batch == 1 else repeats
    generate_runs = max(3, repeats // 2)
    oracles = {k: Oracle(model, inputs, k) for k in usable}
    times = {case: {"prefill": [], "generate": []} for case in cases}
    stats, counts = {}, {}

    def run_case(case, what):
        keep, variant = case
        if variant == "oracle":
            call = oracles[keep]
            return (lambda: call()) if what != "generate" else None
        handle = None
        if keep is not None:
            handle = idselect.patch(model, keep=keep, selection=VARIANTS[variant])
        prefill = lambda: model(**inputs, use_cache=True, logits_to_keep=1)  # noqa: E731
        gen = lambda: model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,  # noqa: E731
                                     do_sample=False, **generate_options)
        return handle, prefill, gen

    with torch.no_grad():
        for round_ in range(max(prefill_runs, generate_runs) + 1):  # round 0 warms every case up (compiles, graphs)
            for case in cases:
                keep, variant = case
                if variant == "oracle":
                    fn = run_case(case, "prefill")
                    if round_ == 0:
                        fn(), fn()
                        counts[case] = launches_and_syncs(fn, device)
                    elif round_ <= prefill_runs:
                        times[case]["prefill"].append(time_once(fn, device))
                    continue
                handle, prefill, gen = run_case(case, "prefill")
                try:
                    if round_ == 0:
                        prefill(), prefill()
                        if device.startswith("cuda"):
                            torch.cuda.reset_peak_memory_stats()
                        counts[case] = launches_and_syncs(prefill, device)
                        stats[case] = dict(handle.last_stats) if handle else {}
                        gen()
                        stats[case]["peak"] = (torch.cuda.max_memory_allocated() / 2**30
                                               if device.startswith("cuda") else None)
                        continue
                    if round_ <= prefill_runs:
                        times[case]["prefill"].append(time_once(prefill, device))
                    if round_ <= generate_runs:
                        times[case]["generate"].append(time_once(gen, device))
                finally:
                    if handle:
                        handle.remove()
    vision = next((s.get("vision_ms") for s in stats.values() if s.get("vision_ms")), None)
    rows = []
    for case in cases:
        keep, variant = case
        st = stats.get(case, {})
        prefill = summary(times[case]["prefill"])
        gen = summary(times[case]["generate"]) if times[case]["generate"] else None
        backend = "-" if variant in ("unpruned", "topk", "oracle") else (
            idselect.backend_for(torch.device(device).type) if variant == "id" else variant)
        kernels, syncs = counts[case]
        row = {"model": spec.name, "batch": batch, "mode": mode, "variant": variant, "backend": backend,
               "keep": keep if keep is not None else spec.visual_tokens,
               "visual_tokens": st.get("visual_tokens_after", (keep or spec.visual_tokens) * batch) // batch,
               "llm_tokens": st.get("sequence_length_after", oracles[keep].llm_kwargs["inputs_embeds"].shape[1]
                                    if variant == "oracle" else llm_unpruned),
               "prefill_ms": prefill["median"], "prefill_p10_ms": prefill["p10"], "prefill_p90_ms": prefill["p90"],
               "prefill_runs": prefill["runs"],
               "generate_ms": gen["median"] if gen else None, "generate_p10_ms": gen["p10"] if gen else None,
               "generate_p90_ms": gen["p90"] if gen else None, "generate_runs": gen["runs"] if gen else 0,
               "select_ms": st.get("select_ms", 0.0), "importance_ms": st.get("importance_ms", 0.0),
               "hooks_ms": st.get("hooks_ms", 0.0), "vision_ms": st.get("vision_ms") or vision,
               "kernels": kernels, "host_syncs": syncs,
               "peak_memory_gib": st.get("peak"), "new_tokens": new_tokens, "text_tokens": text_tokens}
        rows.append(row)
        if progress:
            g = f"generate {row['generate_ms']:.1f} ms, " if gen else ""
            print(f"  {spec.name} [{mode}] batch={batch} keep={row['keep']} {variant}: prefill {row['prefill_ms']:.1f} ms, "
                  f"{g}hooks {row['hooks_ms']:.2f} ms, {kernels} kernels, {syncs} syncs", file=sys.stderr, flush=True)
    add_ratios(rows)
    return rows


def add_ratios(rows):
    """Speedups against the unpruned row of the same model, batch and mode, the shares of the
    pruned prefill (importance + selection; everything the hooks do), for ID-Selection its cost
    against top-k at the same keep, and every pruned row against the oracle (same process)."""
    key = lambda r, *more: (r["model"], r["batch"], r.get("mode", "eager")) + more  # noqa: E731
    base = {key(r): r for r in rows if r["variant"] == "unpruned"}
    topk = {key(r, r["keep"]): r for r in rows if r["variant"] == "topk"}
    oracle = {key(r, r["keep"]): r for r in rows if r["variant"] == "oracle"}
    for r in rows:
        b = base[key(r)]
        r["prefill_speedup"] = b["prefill_ms"] / r["prefill_ms"]
        r["generate_speedup"] = b["generate_ms"] / r["generate_ms"] if r.get("generate_ms") else None
        r["select_share_of_prefill"] = r["select_ms"] / r["prefill_ms"]
        r["hooks_share_of_prefill"] = r.get("hooks_ms", 0.0) / r["prefill_ms"]
        t = topk.get(key(r, r["keep"]))
        if t is not None and r["variant"] not in ("unpruned", "topk", "oracle"):
            r["prefill_vs_topk"] = r["prefill_ms"] / t["prefill_ms"]
            r["generate_vs_topk"] = r["generate_ms"] / t["generate_ms"]
        o = oracle.get(key(r, r["keep"]))
        if o is not None and r["variant"] not in ("unpruned", "oracle"):
            r["prefill_vs_oracle"] = r["prefill_ms"] / o["prefill_ms"]


# -- memory and time plan (no GPU needed) --------------------------------------------------------
def plot(rows, path, metric, ylabel, title_extra=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    styles = {"id": "-", "topk": "--", "reference": ":", "device_path": "-.", "oracle": "-"}
    models = sorted({r["model"] for r in rows})
    for ax, batch in zip(axes[0], batches):
        for i, name in enumerate(models):
            for variant, style in styles.items():
                pts = sorted((r["keep"], r[metric]) for r in rows if r["model"] == name and r["batch"] == batch
                             and r["variant"] == variant and r.get("mode", "eager") == "eager")
                if pts:
                    ax.plot(*zip(*pts), style, marker="x" if variant == "oracle" else "o", color=f"C{i}",
                            alpha=0.4 if variant == "oracle" else 1.0, label=f"{name} {variant}")
        ax.set(xscale="log", xlabel="visual tokens kept per image", ylabel=ylabel, title=f"batch {batch}")
        if metric == "prefill_speedup":
            ax.axhline(1.0, color="grey", lw=0.5)
        ax.legend(fontsize=6)
    r0 = rows[0]
    fig.suptitle(f"{r0['device']} ({r0['size']} shapes, {r0['dtype']}), torch {r0['torch']}, {r0['commit']}{title_extra}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_rows(old_rows, new_rows):
    """old_rows less the (model, batch) cases new_rows measured again, then new_rows."""
    redone = {(r["model"], r["batch"], r.get("mode", "eager")) for r in new_rows}
    # Rows without "variant" come from the format before top-k and batches; they cannot be compared.
    return [r for r in old_rows
            if "variant" in r and (r["model"], r.get("batch"), r.get("mode", "eager")) not in redone] + new_rows


def write_results(rows, out_dir, stem):
    """Merge with the rows already in <stem>.json, then write the JSON and both plots."""
    path = os.path.join(out_dir, stem + ".json")
    if os.path.exists(path):
        with open(path) as f:
            rows = merge_rows(json.load(f), rows)
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(out_dir, stem + ".png"), "prefill_speedup", "prefill speedup vs unpruned")
    pruned = [r for r in rows if r["variant"] != "unpruned"]
    if pruned:
        plot(pruned, os.path.join(out_dir, stem + "_share.png"), "select_share_of_prefill",
             "importance + selection / pruned prefill")
    return rows


def merge_files(paths, out_dir):
    """Combine the results of several runs (e.g. one per device call) into <out-dir>/<first name>."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows = merge_rows(rows, json.load(f))
    stem = os.path.splitext(os.path.basename(paths[0]))[0]
    rows = write_results(rows, out_dir, stem)
    print_table(rows)
    print(f"wrote {stem}.json, {stem}.png and {stem}_share.png under {out_dir}")
    return 0


def print_table(rows):
    print(f"{'model':<21}{'b':>3}{'mode':>9}{'keep':>6}{'variant':>12}{'LLM tok':>8}{'prefill ms (p10-p90)':>26}"
          f"{'speedup':>9}{'gen ms':>10}{'speedup':>9}{'hooks ms':>10}{'share':>8}{'kernels':>9}{'syncs':>7}"
          f"{'vs oracle':>10}{'vision ms':>11}")
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    for r in rows:
        spread = f"{r['prefill_ms']:.1f} ({r['prefill_p10_ms']:.1f}-{r['prefill_p90_ms']:.1f})"
        print(f"{r['model']:<21}{r['batch']:>3}{r.get('mode', 'eager'):>9}{r['keep']:>6}{r['variant']:>12}"
              f"{r['llm_tokens']:>8}{spread:>26}{r['prefill_speedup']:>8.2f}x{fmt(r.get('generate_ms'), '.1f'):>10}"
              f"{fmt(r.get('generate_speedup'), '.2f'):>8}x{r.get('hooks_ms', 0.0):>10.2f}"
              f"{r.get('hooks_share_of_prefill', 0.0):>8.1%}{fmt(r.get('kernels'), 'd'):>9}{fmt(r.get('host_syncs'), 'd'):>7}"
              f"{fmt(r.get('prefill_vs_oracle'), '.3f'):>10}{fmt(r.get('vision_ms'), '.2f'):>11}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "real"], default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                   help=f"any of {', '.join(MODELS)}")
    p.add_argument("--keeps", type=positive_int, nargs="+", default=[192, 128, 64, 16])
    p.add_argument("--batches", type=positive_int, nargs="+", default=[1, 8])
    p.add_argument("--variants", nargs="+", default=["id", "topk", "reference"], choices=list(VARIANTS))
    p.add_argument("--text-tokens", type=positive_int, default=32)
    p.add_argument("--new-tokens", type=positive_int, default=64)
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="prefill runs per case (batch 1: at least 11); generate runs: max(3, repeats // 2)")
    p.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager"],
                   help="compiled: the README's fast path (language model and vision tower compiled, CUDA graphs "
                        "on CUDA; generate() with a static cache)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="with --size real: that many layers per tower, real widths (shape checks on a CPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="no timing: meta-device build of the real shapes, parameter counts, memory and time plan "
                        "(with --depth: token counts from a reduced-depth CPU run)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="run nothing: combine result files (later ones win per model and batch) into --out-dir")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.merge:
        missing = [path for path in args.merge if not os.path.isfile(path)]
        if missing:
            p.error(f"--merge: no such file: {', '.join(missing)}")
        return args
    for name in args.models:
        if name not in MODELS:
            p.error(f"--models: unknown model {name!r} (choose from {', '.join(MODELS)})")
    if args.depth is not None and args.size != "real" and not args.dry_run:
        p.error("--depth needs --size real (it shortens the real-shape models)")
    if args.depth == 1:
        p.error("--depth must be >= 2: LLaVA reads the second-to-last vision layer, and its [CLS] saliency "
                "comes from the layer before it")
    if args.dry_run and args.device != "cpu":
        p.error("--dry-run runs on the CPU and the meta device; leave --device at cpu")
    try:
        torch.device(args.device)
    except RuntimeError as exc:
        p.error(f"--device: {exc}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        return merge_files(args.merge, args.out_dir)
    if args.dry_run:
        return dry_run(args)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    meta = {"device": device_name(args.device), "torch": torch.__version__, "commit": git_commit(),
            "dtype": str(dtype).replace("torch.", ""), "size": args.size if args.depth is None else f"real-depth{args.depth}"}
    stem = f"e2e_{meta['size']}_{torch.device(args.device).type}"
    rows, skipped = [], []
    for name in args.models:
        spec = build(name, args.size, args.depth)
        t0 = time.perf_counter()
        model = make_model(spec, args.device, dtype)
        print(f"{name}: built in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        params = param_count(model)
        skipped += [f"{name}: keep {k} >= its {spec.visual_tokens} visual tokens (nothing to prune)"
                    for k in args.keeps if k >= spec.visual_tokens]
        for batch_rows in (rows_ for mode in args.modes for rows_ in run_model(
                spec, model, args.device, dtype, args.batches, args.keeps, args.variants, args.text_tokens,
                args.new_tokens, args.repeats, progress=True, mode=mode)):
            for r in batch_rows:
                r.update(meta, params=params)
                if args.size == "real" and args.depth is None and r["variant"] != "oracle":
                    keep = None if r["variant"] == "unpruned" else r["keep"]
                    r["peak_memory_estimate_gib"] = memory_estimate_gib(spec, params, r["batch"], keep,
                                                                        args.text_tokens, args.new_tokens)[0]
            rows += batch_rows
            write_results(rows, args.out_dir, stem)  # after every batch: a time limit loses only the case in progress
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print_table(rows)
    for line in skipped:
        print(f"skipped: {line}")
    for r in rows:
        if r["variant"] == "id" and "prefill_vs_topk" in r:
            print(f"ID-Selection vs top-k, {r['model']} batch {r['batch']} [{r['mode']}] keep {r['keep']}: prefill "
                  f"{r['prefill_vs_topk'] - 1:+.1%}, generate {r['generate_vs_topk'] - 1:+.1%} (goal: within 5%)")
    print(f"wrote {stem}.json, {stem}.png and {stem}_share.png under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
