"""vLLM serving throughput and time to first token, unpruned vs ID-Selection, side by side in
one run: N concurrent image requests through ``vllm.LLM.generate`` (docs/serving.md).

Two engines, one after the other in this process: vLLM's own LLaVA (unpruned) and
IdSelectLlavaForConditionalGeneration, which serves each keep through the per-request option
``mm_processor_kwargs={"idselect_keep": k}``. Per engine and keep: ``--repeats`` rounds of the
same N requests (fresh random images every round, prefix caching off, so no round reuses
another's work); medians with p10 / p90 of

- throughput: requests/s and generated tokens/s of a round (``--new-tokens`` each);
- TTFT: each request's time to its first token (vLLM's per-request metrics), median per round;
- for ID-Selection, the selection's share of an encoder step: per ``embed_multimodal`` call (one
  encoder step), the time in idselect's importance and selection (the [CLS] attention, the
  saliency layout and ``selection.kept_embeddings``: min-max, the op, the gathers) over the
  call's whole time (tower, projector and all). Measured in a separate pass after the
  throughput rounds, on an in-process engine (the engine's own process cannot be timed from
  here), with the same rounds of fresh images; medians over encoder steps with p10 / p90.
  On a GPU each timed part synchronises the device first and last (it distorts that pass,
  not the throughput rounds).
- the ceiling (``--ceiling``, on by default; in the share pass, so that every time in it comes
  from in-process engines with the same threads): vLLM's own model on the same rounds and on
  the prompt without its image; a pruned round still runs the tower on every image and still
  has the text and the new tokens to compute, so unpruned round / (text-only round + tower per
  round) bounds the requests/s any selection after the tower can give.

``--family`` picks the model family: ``llava`` (default), ``qwen2_5_vl`` or ``qwen3_vl``
(importance there is relevance: its share counts ``relevance``). Without ``--model`` the model is
the family's layout at CPU-sized widths with random weights (idselect.testing.model_dirs, shape
"bench"): LLaVA-1.5's 576 visual tokens (336 px images, 14 px patches; CLIP 256 wide x 4 layers,
Llama 512 wide x 4 layers); Qwen's 256 visual tokens (448 px images for Qwen2.5-VL, 512 px for
Qwen3-VL; vision 256 wide x 2 layers, LLM 512 wide x 4 layers: the ratio of tower to LLM work
of a real model, idselect.testing.model_dirs.QWEN_SHAPES). With ``--model PATH`` a real checkpoint of
the family (e.g. llava-hf/llava-1.5-7b-hf on a GPU: see docs/serving.md for the command).

    python bench/bench_vllm.py                          # CPU, bench shape
    python bench/bench_vllm.py --family qwen2_5_vl      # CPU, Qwen2.5-VL's bench shape
    python bench/bench_vllm.py --model llava-hf/llava-1.5-7b-hf --dtype bfloat16 --requests 64
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SYNTHETIC_PROMPT = "user : <image> describe the image and what is in this picture please assistant :"
LLAVA_PROMPT = "USER: <image>\nDescribe this image in detail. ASSISTANT:"
QWEN_SYNTHETIC_PROMPT = SYNTHETIC_PROMPT.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")
QWEN_PROMPT = ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image in detail."
               "<|im_end|>\n<|im_start|>assistant\n")
FAMILIES = ("llava", "qwen2_5_vl", "qwen3_vl")
#: Per family: the image's placeholder in its prompts (removed for the text-only rounds).
PLACEHOLDER = {"llava": "<image>", "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>"}
#: Per family: (real checkpoints' prompt, bench-shape prompt, bench image side in px).
FAMILY_INPUTS = {"llava": (LLAVA_PROMPT, SYNTHETIC_PROMPT, 336), "qwen2_5_vl": (QWEN_PROMPT, QWEN_SYNTHETIC_PROMPT, 448),
                 "qwen3_vl": (QWEN_PROMPT, QWEN_SYNTHETIC_PROMPT, 512)}


def images(count, seed, size):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(size, size, 3) * 255).astype("uint8")) for _ in range(count)]


def measure(llm, prompt, args, keep, image_size, after_warmup=None):
    """Rounds of args.requests concurrent requests; returns the row of one (engine, keep).
    ``after_warmup`` is called once, before the first measured round. ``image_size`` None: the
    prompt goes without an image (the text-only rounds)."""
    import vllm

    from idselect.tools import benchmark

    params = vllm.SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True)
    rounds = []
    for r in range(args.warmup + args.repeats):
        if r == args.warmup and after_warmup is not None:
            after_warmup()
        batch = []
        for img in images(args.requests, seed=1000 * r + (keep or 0), size=image_size or 1):
            req = {"prompt": prompt} if image_size is None else {"prompt": prompt, "multi_modal_data": {"image": img}}
            if keep is not None:
                req["mm_processor_kwargs"] = {"idselect_keep": keep}
            batch.append(req)
        start = time.perf_counter()
        outputs = llm.generate(batch, params, use_tqdm=False)
        wall = time.perf_counter() - start
        if r < args.warmup:
            continue
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        ttft = [o.metrics.first_token_latency for o in outputs if o.metrics is not None]
        rounds.append({"wall_s": wall, "requests_per_s": len(outputs) / wall, "tokens_per_s": tokens / wall,
                       "ttft_ms": 1000 * statistics.median(ttft) if ttft else float("nan"),
                       "prompt_tokens": len(outputs[0].prompt_token_ids)})
    row = {"keep": keep if keep is not None else "all", "prompt_tokens": rounds[0]["prompt_tokens"]}
    for key in ("requests_per_s", "tokens_per_s", "ttft_ms"):
        spread = benchmark.summarize([x[key] for x in rounds])  # median, p10, p90 as the other benchmarks
        row.update({key: spread["median_ms"], key + "_p10": spread["p10_ms"], key + "_p90": spread["p90_ms"]})
    return row


class EncoderStepTimer:
    """Times, inside an in-process engine, each encoder step's ``embed_multimodal`` and the parts
    of it that are idselect's importance (the model class's ``cls_attention`` and
    ``image_saliency``) and selection (``kept_embeddings``), by wrapping them; ``remove``
    restores them. ``steps``: per step (importance s, selection s, whole step s)."""

    PARTS = {"cls_attention": 0, "image_saliency": 0, "relevance": 0, "kept_embeddings": 1}

    def __init__(self, cls):
        import torch

        from idselect.vllm import llava, qwen

        self.steps, self.inner, self.saved = [], [0.0, 0.0], []
        cuda = torch.cuda.is_available()

        def now():
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def timed(fn, name):
            def wrapper(*a, **kw):
                start = now()
                try:
                    return fn(*a, **kw)
                finally:
                    spent = now() - start
                    if name == "embed_multimodal":
                        self.steps.append((self.inner[0], self.inner[1], spent))
                        self.inner = [0.0, 0.0]
                    else:
                        self.inner[self.PARTS[name]] += spent
            return wrapper

        if issubclass(cls, qwen.RelevancePruning):
            wrapped = [(cls, "embed_multimodal"), (cls, "relevance"), (qwen, "kept_embeddings")]
        else:
            wrapped = [(cls, "embed_multimodal"), (cls, "cls_attention"), (cls, "image_saliency"),
                       (llava, "kept_embeddings")]
        for owner, name in wrapped:
            self.saved.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, timed(getattr(owner, name), name))

    def remove(self):
        for owner, name, value in reversed(self.saved):
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def measure_share(path, prompt, args, keeps, image_size):
    """Per keep: the selection's share of an encoder step (``EncoderStepTimer``), over the same
    rounds as ``measure`` (fresh images), on an in-process engine."""
    import importlib

    from idselect.vllm import ARCHITECTURES, _MODEL_CLASSES, engine_overrides

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts
    if args.ceiling:
        llm = engine(path, args)
        unpruned = measure(llm, prompt, args, None, image_size)
        text_only = measure(llm, prompt.replace(PLACEHOLDER[args.family], ""), args, None, None)
        del llm
    llm = engine(path, args, engine_overrides(args.family, keep=max(keeps)))
    module, name = _MODEL_CLASSES[ARCHITECTURES[args.family]].split(":")
    shares = {}
    for keep in keeps:
        timer = EncoderStepTimer(getattr(importlib.import_module(module), name))
        try:
            pruned = measure(llm, prompt, args, keep, image_size, after_warmup=timer.steps.clear)
        finally:
            timer.remove()
        steps = timer.steps
        row = {"encoder_steps": len(steps)}
        for key, values in [("select_share", [(a + b) / t for a, b, t in steps]),
                            ("importance_share", [a / t for a, _, t in steps]),
                            ("selection_share", [b / t for _, b, t in steps]),
                            ("select_ms", [1000 * (a + b) for a, b, _ in steps]),
                            ("encoder_step_ms", [1000 * t for _, _, t in steps])]:
            p10, median, p90 = np.percentile(values, [10, 50, 90])  # within the observed range
            row.update({key: float(median), key + "_p10": float(p10), key + "_p90": float(p90)})
        if args.ceiling:
            row.update(ceiling(unpruned, text_only, pruned, row, args))
        shares[keep] = row
    del llm
    return shares


def ceiling(unpruned, text_only, pruned, share, args) -> dict:
    """The most requests/s any selection after the vision tower could give over the unpruned model
    on these rounds, all measured in one in-process pass (the same threads): a pruned round still
    runs the tower on every image, and its LLM still reads the text and writes every new token,
    so it takes at least a text-only round plus the tower's time per round (medians; the tower:
    an encoder step less idselect's timed part, times the encoder steps per round; idselect's
    untimed glue counts as tower, so the ceiling is a little low)."""
    def round_ms(row):
        return 1000 * args.requests / row["requests_per_s"]

    tower_ms = (share["encoder_step_ms"] - share["select_ms"]) * share["encoder_steps"] / args.repeats
    return {"unpruned_round_ms": round_ms(unpruned), "text_only_round_ms": round_ms(text_only),
            "pruned_round_ms": round_ms(pruned), "tower_ms_per_round": tower_ms,
            "ceiling_vs_unpruned": round_ms(unpruned) / (round_ms(text_only) + tower_ms),
            "in_process_vs_unpruned": round_ms(unpruned) / round_ms(pruned)}


def engine(path, args, overrides=None):
    import vllm

    kwargs = dict(dtype=args.dtype, max_model_len=args.max_model_len, enable_prefix_caching=False, seed=0,
                  disable_log_stats=False, enforce_eager=args.enforce_eager)
    if args.kv_cache_gib:
        kwargs["kv_cache_memory_bytes"] = int(args.kv_cache_gib * (1 << 30))
    if overrides:
        kwargs["hf_overrides"] = overrides
    return vllm.LLM(path, **kwargs)


def run_meta(args, torch, vllm, benchmark) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"device": benchmark.device_name(device), "cpu_isa": benchmark.cpu_isa(), "torch": torch.__version__,
            "vllm": vllm.__version__, "commit": benchmark.git_commit(), "threads": torch.get_num_threads(),
            "family": args.family,
            "model": args.model or f"synthetic {args.family} layout (idselect.testing.model_dirs 'bench')",
            "requests": args.requests, "new_tokens": args.new_tokens, "repeats": args.repeats, "dtype": args.dtype}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="llava")
    parser.add_argument("--model", help="a checkpoint of the family (path or Hub id); default: the synthetic bench shape")
    parser.add_argument("--keeps", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--requests", type=int, default=8, help="concurrent requests per round")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--kv-cache-gib", type=float, default=0.5, help="0: vLLM's default")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the selection's share of an encoder step (an in-process pass)")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the prompt without its image on vLLM's own model, for the ceiling of "
                             "any selection after the vision tower")
    parser.add_argument("--share-only", action="store_true", help="only the share pass (no throughput rows)")
    parser.add_argument("--out", help="default: bench/results/vllm_cpu.json (--share-only: vllm_cpu_share.json)")
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.family == "llava" else f"_{args.family}"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                f"vllm_cpu{suffix}_share.json" if args.share_only else f"vllm_cpu{suffix}.json")
    if args.requests < 1 or args.repeats < 1 or args.new_tokens < 1 or any(k < 1 for k in args.keeps):
        parser.error(f"--requests, --repeats, --new-tokens and --keeps must be >= 1, got {args.requests}, "
                     f"{args.repeats}, {args.new_tokens}, {args.keeps}")

    import torch
    import vllm

    from idselect.tools import benchmark
    from idselect.vllm import engine_overrides

    with tempfile.TemporaryDirectory() as tmp:
        real_prompt, synthetic_prompt, image_size = FAMILY_INPUTS[args.family]
        if args.model:
            path, prompt = args.model, real_prompt
        else:
            from idselect.testing.model_dirs import save_tiny_llava, save_tiny_qwen

            path, prompt = tmp, synthetic_prompt
            if args.family == "llava":
                save_tiny_llava(path, seed=0, shape="bench")
            else:
                save_tiny_qwen(path, seed=0, family=args.family, shape="bench")
        load = os.getloadavg()[0]
        if args.share_only:
            shares = measure_share(path, prompt, args, args.keeps, image_size)
            meta = run_meta(args, torch, vllm, benchmark)
            meta["loadavg_1min"] = [load, os.getloadavg()[0]]  # before and after: a shared machine's load
            print(json.dumps({"meta": meta, "shares": shares}, indent=1))
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "shares": shares}, f, indent=1)
            return 0
        rows = []
        llm = engine(path, args)
        rows.append(dict(measure(llm, prompt, args, None, image_size), variant="unpruned"))
        del llm
        llm = engine(path, args, engine_overrides(args.family, keep=max(args.keeps)))
        for keep in args.keeps:
            rows.append(dict(measure(llm, prompt, args, keep, image_size), variant="id"))
        del llm
        if args.share:
            shares = measure_share(path, prompt, args, args.keeps, image_size)
            for row in rows[1:]:
                row.update(shares[row["keep"]])
    base = rows[0]
    for row in rows:
        row["throughput_vs_unpruned"] = row["requests_per_s"] / base["requests_per_s"]
        row["ttft_vs_unpruned"] = base["ttft_ms"] / row["ttft_ms"]
    meta = run_meta(args, torch, vllm, benchmark)
    meta["loadavg_1min"] = [load, os.getloadavg()[0]]  # before and after: a shared machine's load
    print(f"{meta['device']} ({meta['cpu_isa']}), torch {meta['torch']}, vLLM {meta['vllm']}, commit {meta['commit']}")
    print(f"{args.requests} concurrent requests, {args.new_tokens} new tokens, medians of {args.repeats} (p10-p90)")
    print(f"{'variant':>9} {'keep':>5} {'prompt tok':>10} {'req/s':>22} {'tok/s':>24} {'TTFT ms':>26} {'thrpt x':>8} {'TTFT x':>7}")
    for r in rows:
        print(f"{r['variant']:>9} {str(r['keep']):>5} {r['prompt_tokens']:>10} "
              f"{r['requests_per_s']:8.2f} ({r['requests_per_s_p10']:.2f}-{r['requests_per_s_p90']:.2f}) "
              f"{r['tokens_per_s']:8.1f} ({r['tokens_per_s_p10']:.1f}-{r['tokens_per_s_p90']:.1f}) "
              f"{r['ttft_ms']:8.1f} ({r['ttft_ms_p10']:.1f}-{r['ttft_ms_p90']:.1f}) "
              f"{r['throughput_vs_unpruned']:7.2f}x {r['ttft_vs_unpruned']:6.2f}x")
    if args.share and args.ceiling and len(rows) > 1:
        print("ceiling of any selection after the tower (the in-process pass: unpruned round / (text-only round + "
              "tower per round)) and that pass's own ratio:")
        for r in rows[1:]:
            print(f"  keep {r['keep']:>4}: ceiling {r['ceiling_vs_unpruned']:.2f}x = {r['unpruned_round_ms']:.0f} ms / "
                  f"({r['text_only_round_ms']:.0f} ms + {r['tower_ms_per_round']:.0f} ms); measured there "
                  f"{r['in_process_vs_unpruned']:.2f}x ({r['pruned_round_ms']:.0f} ms a round)")
    if args.share and len(rows) > 1:
        print("selection's share of an encoder step (idselect's importance + selection / embed_multimodal), "
              "medians over encoder steps (p10-p90):")
        for r in rows[1:]:
            print(f"  keep {r['keep']:>4}: {100 * r['select_share']:5.1f}% ({100 * r['select_share_p10']:.1f}-"
                  f"{100 * r['select_share_p90']:.1f}%), {r['select_ms']:.2f} ms ({r['select_ms_p10']:.2f}-"
                  f"{r['select_ms_p90']:.2f}) of a {r['encoder_step_ms']:.1f} ms step ({r['encoder_steps']} steps; "
                  f"importance {100 * r['importance_share']:.1f}%, selection {100 * r['selection_share']:.1f}%)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # vLLM's engine processes start with spawn
    sys.exit(main())
