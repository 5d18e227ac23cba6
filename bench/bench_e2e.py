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
source too); ``SMALL`` below replaces only widths.

Writes <out-dir>/e2e_<size>_<device>.json and .png (prefill speedup against keep) and
_share.png (importance + selection share of the pruned prefill) after every model, merging with
rows of other models already in that file, so that a run split with --models (or cut short by a
time limit) loses nothing. Random weights: the times are real, the answers are not.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import torch

import idselect
from idselect import device_path, reference
from idselect.tools import shapes
from idselect.tools.benchmark import device_name, git_commit
from idselect.tools.cli_args import positive_int
from idselect.tools.flops import prefill_flops, shape_of

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = tuple(shapes.MODELS)  # llava-1.5-7b, llava-next-7b, qwen2.5-vl-7b(-large), qwen3-vl-8b, llava-onevision-7b
#: Parameter counts of the released checkpoints, to check the configs against. Hugging Face model
#: cards: llava-hf/llava-1.5-7b-hf, llava-hf/llava-v1.6-vicuna-7b-hf, Qwen/Qwen2.5-VL-7B-Instruct,
#: llava-hf/llava-onevision-qwen2-7b-ov-hf ("8.03B params"). Qwen/Qwen3-VL-8B-Instruct: its card
#: rounds to "9B params"; 8,767,123,696 is the safetensors total the Hub API reports for it.
KNOWN_PARAMS = {"llava-1.5-7b": 7.06e9, "llava-next-7b": 7.06e9, "qwen2.5-vl-7b": 8.29e9, "qwen2.5-vl-7b-large": 8.29e9,
                "qwen3-vl-8b": 8.767e9, "llava-onevision-7b": 8.03e9}

#: variant -> selection= of idselect.patch: "id" is the op as dispatched here
#: (idselect.backend_for); a function replaces the op for that handle (patch's docstring).
VARIANTS = {
    "id": "id",
    "topk": "topk",
    "reference": reference.select,
    "device_path": device_path.select,
}


@dataclasses.dataclass
class Spec:
    name: str
    cls: type
    config: object
    image_inputs: dict  # inputs of one image (no input_ids), repeated per batch row
    visual_tokens: int  # LLM placeholder tokens per image
    image_token: int
    flops_shape: object  # idselect.tools.flops.ModelShape at the real widths, for the time plan


#: The small build (``--size small``): every model's image, patches and token counts, at widths
#: a CPU runs in seconds; all else, as the real build, from idselect.tools.shapes.
_SMALL_VISION = dict(layers=2, hidden=64, intermediate=128, heads=4)
_SMALL_LLM = dict(layers=4, hidden=256, intermediate=688, heads=8)
SMALL = {  # wrapper -> (vision, LLM) replacements
    "llava": (dict(_SMALL_VISION, extra={"projection_dim": 64}), dict(_SMALL_LLM, kv_heads=8)),
    "llava_next": (dict(_SMALL_VISION, extra={"projection_dim": 64}), dict(_SMALL_LLM, kv_heads=8)),
    "qwen2_5_vl": (dict(_SMALL_VISION, full_attention_blocks=(1,)),
                   dict(_SMALL_LLM, kv_heads=2, mrope_section=(4, 6, 6))),
    "qwen3_vl": (_SMALL_VISION,
                 dict(_SMALL_LLM, kv_heads=2, head_dim=32, max_positions=32768, mrope_section=(6, 5, 5))),
    "llava_onevision": (_SMALL_VISION, dict(_SMALL_LLM, kv_heads=2)),
}


def image_inputs(model):
    """Inputs of one image (no input_ids) at the model's benchmark image size."""
    v = model.vision
    if model.wrapper.startswith("qwen"):  # packed patches: channels x temporal patch x patch x patch per row
        grid = model.image_side // v.patch
        return {"pixel_values": torch.randn(grid * grid, 3 * v.temporal_patch * v.patch * v.patch),
                "image_grid_thw": torch.tensor([[1, grid, grid]])}
    if model.anyres:  # the base view and the crops
        return {"pixel_values": torch.randn(1, model.vision_passes, 3, v.image_size, v.image_size),
                "image_sizes": torch.tensor([[model.image_side, model.image_side]])}
    return {"pixel_values": torch.randn(1, 3, v.image_size, v.image_size)}


def build(name, size, depth=None):
    """The Spec of a model name. ``depth``: real widths with that many layers in each tower."""
    import transformers

    if name not in shapes.MODELS:
        raise ValueError(f"unknown model {name!r}")
    real = shapes.MODELS[name]
    model = real if size == "real" else shapes.scaled(real, *SMALL[real.wrapper])
    cfg = shapes.config(model, depth)
    cls = getattr(transformers, type(cfg).__name__.replace("Config", "ForConditionalGeneration"))
    return Spec(name, cls, cfg, image_inputs(model), model.visual_tokens, model.image_token, shape_of(real))


def batched_inputs(spec, batch, text_tokens, device, dtype):
    """input_ids with the image after 4 text tokens, the image repeated on every row."""
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 30000, (text_tokens,), generator=g).tolist()
    ids = torch.tensor([text[:4] + [spec.image_token] * spec.visual_tokens + text[4:]] * batch, device=device)
    inputs = {"input_ids": ids}
    if spec.name.startswith("qwen"):
        inputs["mm_token_type_ids"] = (ids == spec.image_token).long()
    for key, value in spec.image_inputs.items():
        # Qwen packs every image's patches in one tensor (rows concatenated); LLaVA has a batch dim.
        value = torch.cat([value] * batch) if spec.name.startswith("qwen") else value.repeat(batch, *[1] * (value.dim() - 1))
        inputs[key] = value.to(device, dtype) if torch.is_floating_point(value) else value.to(device)
    return inputs


def timed(fn, device, repeats):
    """Median and p10/p90 (ms) of ``repeats`` runs after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1]}


def make_model(spec, device, dtype):
    spec.config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the final dtype: a 7B model in float32 first would need 28 GiB more
    try:
        with torch.device(device):
            model = spec.cls(spec.config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = 0
    return model


def run_model(spec, model, device, dtype, batches, keeps, variants, text_tokens, new_tokens, repeats, progress):
    """Yields, batch by batch, one row per (keep, variant) plus the unpruned row."""
    usable = [k for k in keeps if k < spec.visual_tokens]
    for batch in batches:
        rows = []
        inputs = batched_inputs(spec, batch, text_tokens, device, dtype)
        llm_unpruned = inputs["input_ids"].shape[1]
        plan = [(None, "unpruned")] + [(k, v) for k in usable for v in variants]
        for keep, variant in plan:
            handle = idselect.patch(model, keep=keep, selection=VARIANTS[variant]) if keep is not None else None
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                prefill = timed(lambda: model(**inputs, use_cache=True, logits_to_keep=1), device, repeats)
                stats = dict(handle.last_stats) if handle else {}
                gen = timed(lambda: model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                   do_sample=False), device, max(1, repeats // 2))
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
            if handle:
                handle.remove()
            backend = "-" if variant in ("unpruned", "topk") else (
                idselect.backend_for(torch.device(device).type) if variant == "id" else variant)
            rows.append({"model": spec.name, "batch": batch, "variant": variant, "backend": backend,
                         "keep": keep if keep is not None else spec.visual_tokens,
                         "visual_tokens": stats.get("visual_tokens_after", spec.visual_tokens * batch) // batch,
                         "llm_tokens": stats.get("sequence_length_after", llm_unpruned),
                         "prefill_ms": prefill["median"], "prefill_p10_ms": prefill["p10"], "prefill_p90_ms": prefill["p90"],
                         "generate_ms": gen["median"], "generate_p10_ms": gen["p10"], "generate_p90_ms": gen["p90"],
                         "select_ms": stats.get("select_ms", 0.0), "importance_ms": stats.get("importance_ms", 0.0),
                         "peak_memory_gib": peak, "new_tokens": new_tokens, "text_tokens": text_tokens})
            if progress:
                r = rows[-1]
                print(f"  {spec.name} batch={batch} keep={r['keep']} {variant}: prefill {r['prefill_ms']:.1f} ms, "
                      f"generate {r['generate_ms']:.1f} ms, select {r['select_ms']:.2f} ms", file=sys.stderr, flush=True)
        add_ratios(rows)
        yield rows


def add_ratios(rows):
    """Speedups against the unpruned row of the same model and batch, the selection share of the
    pruned prefill, and for ID-Selection its cost against top-k at the same keep (same process)."""
    base = {(r["model"], r["batch"]): r for r in rows if r["variant"] == "unpruned"}
    topk = {(r["model"], r["batch"], r["keep"]): r for r in rows if r["variant"] == "topk"}
    for r in rows:
        b = base[(r["model"], r["batch"])]
        r["prefill_speedup"] = b["prefill_ms"] / r["prefill_ms"]
        r["generate_speedup"] = b["generate_ms"] / r["generate_ms"]
        r["select_share_of_prefill"] = r["select_ms"] / r["prefill_ms"]
        t = topk.get((r["model"], r["batch"], r["keep"]))
        if t is not None and r["variant"] not in ("unpruned", "topk"):
            r["prefill_vs_topk"] = r["prefill_ms"] / t["prefill_ms"]
            r["generate_vs_topk"] = r["generate_ms"] / t["generate_ms"]


# -- memory and time plan (no GPU needed) --------------------------------------------------------
#: Assumptions of the time plan, to be replaced by measurements: bf16 dense throughput reached by
#: eager prefill on an H100 (a fraction of its ~990 TFLOPS peak), its HBM bandwidth, the host cost
#: of one eager decode step of a ~30-layer HF model (launch-bound at batch 1), and of one
#: attention call in the Qwen vision tower (sdpa runs one call per window: transformers splits by
#: cu_seqlens unless flash-attention 2 is installed).
ASSUMED_TFLOPS = 300.0
ASSUMED_HBM_GBPS = 3000.0
ASSUMED_DECODE_STEP_MS = 25.0
ASSUMED_ATTENTION_CALL_US = 40.0
ASSUMED_BUILD_S = 60.0  # import, random init of a 7B model on the GPU
ASSUMED_REFERENCE_STEP_US = 150.0  # host cost of one step of one row in idselect.reference (a few launches)


def vision_attention_calls(spec, batch):
    """Attention calls of one vision-tower pass (Qwen: per window in windowed layers)."""
    shape = spec.flops_shape
    if shape.vision_window is None:
        if spec.name.startswith("qwen"):  # packed images, one sdpa call per image (cu_seqlens split)
            return batch * shape.vision.layers
        return shape.vision.layers  # CLIP / SigLIP attend over the whole batch in one call per layer
    windows = max(1, shape.vision_tokens // shape.vision_window)
    full = shape.vision_full_layers
    return batch * ((shape.vision.layers - full) * windows + full)


def memory_estimate_gib(spec, params, batch, keep, text_tokens, new_tokens, bytes_per=2):
    """Peak GPU memory of one prefill + generate (GiB): weights, the KV cache at its final length,
    the larger of the vision tower's and one LLM layer's transient activations, and the full
    embedded sequence the hooks prune from. Assumes memory-efficient SDPA (no L x L matrices)."""
    shape = spec.flops_shape
    llm, vis = shape.llm, shape.vision
    n_full = text_tokens + shape.visual_tokens
    n_llm = text_tokens + (shape.visual_tokens if keep is None else min(keep, shape.visual_tokens))
    kv_dim = llm.hidden * llm.kv_heads // llm.heads
    kv_cache = batch * (n_llm + new_tokens) * llm.layers * 2 * kv_dim * bytes_per
    # One decoder layer at a time: residual, norm, q/o, k/v, attention output, gate/up/activation.
    llm_layer = batch * n_llm * (4 * llm.hidden + 2 * kv_dim + 3 * llm.intermediate) * bytes_per
    vision_tokens = batch * shape.vision_passes * shape.vision_tokens
    # The LLaVA family keeps every layer's hidden states (vision_feature_layer indexes them: -2, or
    # -1 for OneVision, still read from hidden_states).
    kept_states = vis.layers + 1 if spec.name.startswith("llava") else 2
    vision = vision_tokens * (kept_states * vis.hidden + 4 * vis.hidden + 3 * vis.intermediate) * bytes_per
    embeds = 2 * batch * n_full * llm.hidden * bytes_per  # inputs_embeds and its merged copy
    logits = batch * shape.vocab * 4 * 2  # float32 logits of the last token, and the sampler's copy
    total = params * bytes_per + kv_cache + max(vision, llm_layer) + embeds + logits
    return total / 2**30, {"weights": params * bytes_per / 2**30, "kv_cache": kv_cache / 2**30,
                           "activations": max(vision, llm_layer) / 2**30, "embeds": embeds / 2**30}


def time_estimate_s(spec, params, batch, keeps, variants, text_tokens, new_tokens, repeats):
    """Seconds the timed loop of run_model takes for one model and batch, under the ASSUMED_*
    figures: (repeats + 1) prefills and (max(1, repeats // 2) + 1) generates per row."""
    gens = max(1, repeats // 2) + 1
    vision_host = vision_attention_calls(spec, batch) * ASSUMED_ATTENTION_CALL_US * 1e-6
    decode_step = max(ASSUMED_DECODE_STEP_MS * 1e-3, params * 2 / (ASSUMED_HBM_GBPS * 1e9))
    total = 0.0
    for keep, variant in [(None, "unpruned")] + [(k, v) for k in keeps if k < spec.visual_tokens for v in variants]:
        prefill = batch * prefill_flops(spec.flops_shape, text_tokens, keep)["total"] / (ASSUMED_TFLOPS * 1e12) + vision_host
        if variant == "reference":  # the reference loops over rows and steps on the host
            prefill += batch * keep * ASSUMED_REFERENCE_STEP_US * 1e-6
        total += (repeats + 1) * prefill + gens * (prefill + new_tokens * decode_step)
    return total


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def dry_run(args):
    """Without a GPU: every real-shape model built on the meta device (config and parameter
    check), optionally run at real widths and ``--depth`` layers on the CPU (visual token counts
    and the pruned sequence as the hooks produce them), and the memory/time plan."""
    records = []
    for name in args.models:
        spec = build(name, "real")
        t0 = time.perf_counter()
        with torch.device("meta"):
            meta_model = spec.cls(spec.config)
        params = param_count(meta_model)
        del meta_model
        known = KNOWN_PARAMS[name]
        rec = {"model": name, "params": params, "known_params": known, "params_vs_known": params / known,
               "meta_build_s": time.perf_counter() - t0, "visual_tokens_expected": spec.visual_tokens,
               "llm_tokens_unpruned": args.text_tokens + spec.visual_tokens}
        if args.depth is not None:
            rec.update(reduced_depth_check(name, args))
        for batch in args.batches:
            peak, parts = memory_estimate_gib(spec, params, batch, None, args.text_tokens, args.new_tokens)
            rec[f"peak_estimate_gib_b{batch}"] = peak
            rec[f"peak_parts_gib_b{batch}"] = parts
            # Fewer repeats are the fallback for a case that would not fit one device call.
            rec[f"time_estimate_s_b{batch}_by_repeats"] = {
                repeats: time_estimate_s(spec, params, batch, args.keeps, args.variants, args.text_tokens,
                                         args.new_tokens, repeats) for repeats in sorted({args.repeats, 3, 2})}
            rec[f"time_estimate_s_b{batch}"] = rec[f"time_estimate_s_b{batch}_by_repeats"][args.repeats]
        rec["time_estimate_s_total"] = ASSUMED_BUILD_S + sum(rec[f"time_estimate_s_b{b}"] for b in args.batches)
        records.append(rec)
        print(f"  {name}: {params / 1e9:.3f}B parameters (released checkpoint {known / 1e9:.2f}B)", file=sys.stderr, flush=True)
    meta = {"device": device_name("cpu"), "torch": torch.__version__, "commit": git_commit(), "depth": args.depth,
            "batches": args.batches, "keeps": args.keeps, "variants": args.variants, "repeats": args.repeats,
            "assumptions": {"tflops": ASSUMED_TFLOPS, "hbm_gbps": ASSUMED_HBM_GBPS, "decode_step_ms": ASSUMED_DECODE_STEP_MS,
                            "attention_call_us": ASSUMED_ATTENTION_CALL_US, "build_s": ASSUMED_BUILD_S,
                            "reference_step_us": ASSUMED_REFERENCE_STEP_US}}
    print_dry_run(records, args.batches)
    meta["device_calls"] = plan_device_calls(records, args.batches, args.repeats)
    for call in meta["device_calls"]:
        print(f"device call, about {call['estimate_s'] / 60:.1f} min: {call['command']}")
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "e2e_real_dryrun.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "models": records}, f, indent=1)
    print(f"wrote {path}")
    return 0


def reduced_depth_check(name, args):
    """Real widths, ``--depth`` layers per tower, float32 on the CPU (this machine has no bf16
    matrix units): one pruned prefill at the smallest keep, read back from the hooks' stats."""
    spec = build(name, "real", depth=args.depth)
    t0 = time.perf_counter()
    model = make_model(spec, "cpu", torch.float32)
    inputs = batched_inputs(spec, 1, args.text_tokens, "cpu", torch.float32)
    keep = min(args.keeps)
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        model(**inputs, use_cache=True, logits_to_keep=1)
        stats = handle.last_stats
    out = {"depth_check": {"depth": args.depth, "keep": keep, "visual_tokens_before": stats["visual_tokens_before"],
                           "visual_tokens_after": stats["visual_tokens_after"],
                           "sequence_length_before": stats["sequence_length_before"],
                           "sequence_length_after": stats["sequence_length_after"],
                           "seconds": time.perf_counter() - t0}}
    del model
    if stats["visual_tokens_before"] != spec.visual_tokens or stats["sequence_length_after"] != args.text_tokens + keep:
        raise RuntimeError(f"{name}: the hooks saw {stats}, expected {spec.visual_tokens} visual tokens and "
                           f"{args.text_tokens + keep} LLM tokens after pruning")
    return out


CALL_LIMIT_S = 540  # a device call may run 10 minutes; leave one for start-up and copying results


def plan_device_calls(records, batches, repeats):
    """One device call per model, or per model and batch where the whole model would not fit;
    a call that still would not fit gets the most repeats (>= 2) that fit."""
    calls = []
    for r in records:
        whole = r["time_estimate_s_total"]
        for group in [batches] if whole <= CALL_LIMIT_S else [[b] for b in batches]:
            options = sorted(r[f"time_estimate_s_b{group[0]}_by_repeats"], reverse=True)
            chosen = next((n for n in options if n <= repeats and ASSUMED_BUILD_S + sum(
                r[f"time_estimate_s_b{b}_by_repeats"][n] for b in group) <= CALL_LIMIT_S), min(options))
            estimate = ASSUMED_BUILD_S + sum(r[f"time_estimate_s_b{b}_by_repeats"][chosen] for b in group)
            # PYTHONPATH=.: the device machine runs a copy of the tree, idselect not installed there.
            command = (f"PYTHONPATH=. PYTHONUNBUFFERED=1 python3 bench/bench_e2e.py --size real --device cuda --models {r['model']} "
                       f"--batches {' '.join(map(str, group))}" + (f" --repeats {chosen}" if chosen != repeats else "")
                       + " --out-dir $OUT")
            calls.append({"model": r["model"], "batches": group, "repeats": chosen, "estimate_s": estimate,
                          "command": command, "fits": estimate <= CALL_LIMIT_S})
    return calls


def print_dry_run(records, batches):
    head = f"{'model':<21}{'params':>9}{'vs card':>8}{'visual':>8}{'at depth':>9}{'LLM tok':>8}"
    head += "".join(f"{'peak GiB b' + str(b):>13}{'min b' + str(b):>7}" for b in batches) + f"{'min total':>10}"
    print(head)
    for r in records:
        seen = r.get("depth_check", {}).get("visual_tokens_before", "-")
        line = (f"{r['model']:<21}{r['params'] / 1e9:>8.3f}B{r['params_vs_known']:>8.3f}{r['visual_tokens_expected']:>8}"
                f"{seen:>9}{r['llm_tokens_unpruned']:>8}")
        line += "".join(f"{r[f'peak_estimate_gib_b{b}']:>13.1f}{r[f'time_estimate_s_b{b}'] / 60:>7.1f}" for b in batches)
        print(line + f"{r['time_estimate_s_total'] / 60:>10.1f}")


# -- results -------------------------------------------------------------------------------------
def plot(rows, path, metric, ylabel, title_extra=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    styles = {"id": "-", "topk": "--", "reference": ":", "device_path": "-."}
    models = sorted({r["model"] for r in rows})
    for ax, batch in zip(axes[0], batches):
        for i, name in enumerate(models):
            for variant, style in styles.items():
                pts = sorted((r["keep"], r[metric]) for r in rows
                             if r["model"] == name and r["batch"] == batch and r["variant"] == variant)
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=f"C{i}", label=f"{name} {variant}")
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
    redone = {(r["model"], r["batch"]) for r in new_rows}
    # Rows without "variant" come from the format before top-k and batches; they cannot be compared.
    return [r for r in old_rows if "variant" in r and (r["model"], r.get("batch")) not in redone] + new_rows


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
    print(f"{'model':<21}{'b':>3}{'keep':>6}{'variant':>12}{'LLM tok':>8}{'prefill ms (p10-p90)':>26}{'speedup':>9}"
          f"{'gen ms':>10}{'speedup':>9}{'select ms':>11}{'share':>8}{'vs topk':>9}{'peak GiB':>10}")
    for r in rows:
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        vs = f"{r['prefill_vs_topk']:.3f}" if "prefill_vs_topk" in r else "-"
        spread = f"{r['prefill_ms']:.1f} ({r['prefill_p10_ms']:.1f}-{r['prefill_p90_ms']:.1f})"
        print(f"{r['model']:<21}{r['batch']:>3}{r['keep']:>6}{r['variant']:>12}{r['llm_tokens']:>8}{spread:>26}"
              f"{r['prefill_speedup']:>8.2f}x{r['generate_ms']:>10.1f}{r['generate_speedup']:>8.2f}x"
              f"{r['select_ms']:>11.2f}{r['select_share_of_prefill']:>8.1%}{vs:>9}{mem:>10}")


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
    p.add_argument("--repeats", type=positive_int, default=5)
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
        for batch_rows in run_model(spec, model, args.device, dtype, args.batches, args.keeps, args.variants,
                                    args.text_tokens, args.new_tokens, args.repeats, progress=True):
            for r in batch_rows:
                r.update(meta, params=params)
                if args.size == "real" and args.depth is None:
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
            print(f"ID-Selection vs top-k, {r['model']} batch {r['batch']} keep {r['keep']}: prefill "
                  f"{r['prefill_vs_topk'] - 1:+.1%}, generate {r['generate_vs_topk'] - 1:+.1%} (goal: within 5%)")
    print(f"wrote {stem}.json, {stem}.png and {stem}_share.png under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
