"""The end-to-end benchmark's plan without a GPU (``bench_e2e.py --dry-run``): every real-shape
model built on the meta device, an optional reduced-depth run at real widths, and the
memory / time estimates that size the device calls."""
import json
import os
import sys
import time

import torch

import idselect
from idselect.tools.benchmark import device_name, git_commit
from idselect.tools.flops import prefill_flops

from e2e_models import KNOWN_PARAMS, batched_inputs, build, make_model, param_count

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
