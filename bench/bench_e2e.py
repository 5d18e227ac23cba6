"""End-to-end benchmark: prefill (time to first token) and 64-token generation, unpruned vs
ID-Selection at several keeps, on random-weight models with the real shapes.

    python bench/bench_e2e.py --size real --device cuda    # LLaVA-1.5-7B, LLaVA-NeXT-7B, Qwen2.5-VL-7B shapes, bf16, sdpa
    python bench/bench_e2e.py --size small                 # same token counts, tiny widths: CPU, < 1 minute

Writes bench/results/e2e_<size>_<device>.json and a PNG of prefill speedup against keep.
Random weights: the times are real, the answers are not.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

import idselect
from idselect.benchmark import device_name, git_commit

HERE = os.path.dirname(os.path.abspath(__file__))


def llava_configs(size):
    from transformers import CLIPVisionConfig, LlamaConfig

    if size == "real":  # CLIP ViT-L/14-336 + Vicuna/Llama-7B
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=336, patch_size=14, projection_dim=768)
        text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    else:  # same token counts, tiny widths
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=336, patch_size=14, projection_dim=64)
        text = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=8, vocab_size=32064, max_position_embeddings=4096)
    return vision, text


def build(name, size):
    """(model, inputs without input_ids, visual tokens, image token id) for a model name."""
    if name == "llava-1.5-7b":
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        vision, text = llava_configs(size)
        cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000)
        return LlavaForConditionalGeneration, cfg, {"pixel_values": torch.randn(1, 3, 336, 336)}, 576, 32000
    if name == "llava-next-7b":
        from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

        vision, text = llava_configs(size)
        cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=32000,
                              image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
        # 672 x 672: base + 2 x 2 crops = 576 + 48 x 48 + 48 newlines
        return LlavaNextForConditionalGeneration, cfg, {"pixel_values": torch.randn(1, 5, 3, 336, 336),
                                                        "image_sizes": torch.tensor([[672, 672]])}, 576 + 48 * 48 + 48, 32000
    if name == "qwen2.5-vl-7b":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        if size == "real":
            vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                          fullatt_block_indexes=[7, 15, 23, 31], window_size=112, spatial_merge_size=2, patch_size=14,
                          temporal_patch_size=2, tokens_per_second=2)
            text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
        else:
            vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=256,
                          fullatt_block_indexes=[1], window_size=112, spatial_merge_size=2, patch_size=14,
                          temporal_patch_size=2, tokens_per_second=2)
            text = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=152064, max_position_embeddings=32768,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]})
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=151655, video_token_id=151656,
                               vision_start_token_id=151652, vision_end_token_id=151653)
        # 448 x 448: 32 x 32 patches, 2 x 2 merger -> 256 tokens
        return Qwen2_5_VLForConditionalGeneration, cfg, {"pixel_values": torch.randn(1024, 1176),
                                                          "image_grid_thw": torch.tensor([[1, 32, 32]])}, 256, 151655
    raise ValueError(f"unknown model {name!r}")


def timed(fn, device, repeats):
    times = []
    for i in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first run warms up
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1]}


def run_model(name, size, device, dtype, keeps, text_tokens, new_tokens, repeats, progress):
    cls, cfg, extra, visual, image_token = build(name, size)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(cfg).to(dtype).eval()
    model.generation_config.pad_token_id = 0
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 30000, (text_tokens,), generator=g).tolist()
    ids = text[:4] + [image_token] * visual + text[4:]
    inputs = {"input_ids": torch.tensor([ids], device=device)}
    if name.startswith("qwen"):
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_token).long()
    for k, v in extra.items():
        inputs[k] = v.to(device, dtype) if torch.is_floating_point(v) else v.to(device)
    rows = []
    for keep in [None] + list(keeps):
        handle = idselect.patch(model, keep=keep) if keep is not None else None
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
        rows.append({"model": name, "size": size, "keep": keep if keep is not None else visual,
                     "visual_tokens": stats.get("visual_tokens_after", visual),
                     "llm_tokens": stats.get("sequence_length_after", len(ids)),
                     "prefill_ms": prefill["median"], "prefill_p10_ms": prefill["p10"], "prefill_p90_ms": prefill["p90"],
                     "generate_ms": gen["median"], "generate_p10_ms": gen["p10"], "generate_p90_ms": gen["p90"],
                     "select_ms": stats.get("select_ms", 0.0), "importance_ms": stats.get("importance_ms", 0.0),
                     "peak_memory_gib": peak, "new_tokens": new_tokens, "text_tokens": text_tokens})
        if progress:
            r = rows[-1]
            print(f"  {name} keep={r['keep']}: prefill {r['prefill_ms']:.1f} ms, generate {r['generate_ms']:.1f} ms, "
                  f"select {r['select_ms']:.2f} ms", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["prefill_speedup"] = base["prefill_ms"] / r["prefill_ms"]
        r["generate_speedup"] = base["generate_ms"] / r["generate_ms"]
        r["select_share_of_prefill"] = r["select_ms"] / r["prefill_ms"]
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["model"] for r in rows}):
        pts = sorted((r["keep"], r["prefill_speedup"]) for r in rows if r["model"] == name)
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set(xscale="log", xlabel="visual tokens kept per image", ylabel="prefill speedup vs unpruned")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    r0 = rows[0]
    ax.set_title(f"{r0['device']} ({r0['size']} shapes), torch {r0['torch']}, {r0['commit']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "real"], default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["llava-1.5-7b", "llava-next-7b", "qwen2.5-vl-7b"])
    p.add_argument("--keeps", type=int, nargs="+", default=[192, 128, 64, 16])
    p.add_argument("--text-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    meta = {"device": device_name(args.device), "torch": torch.__version__, "commit": git_commit(),
            "dtype": str(dtype).replace("torch.", "")}
    rows = []
    for name in args.models:
        rows += [{**meta, **r} for r in run_model(name, args.size, args.device, dtype, args.keeps, args.text_tokens,
                                                   args.new_tokens, args.repeats, progress=True)]
    print(f"{'model':<15}{'keep':>6}{'LLM tok':>9}{'prefill ms':>12}{'speedup':>9}{'gen ms':>10}{'speedup':>9}{'select ms':>11}{'share':>8}{'peak GiB':>10}")
    for r in rows:
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        print(f"{r['model']:<15}{r['keep']:>6}{r['llm_tokens']:>9}{r['prefill_ms']:>12.1f}{r['prefill_speedup']:>8.2f}x"
              f"{r['generate_ms']:>10.1f}{r['generate_speedup']:>8.2f}x{r['select_ms']:>11.2f}{r['select_share_of_prefill']:>8.1%}{mem:>10}")
    os.makedirs(args.out_dir, exist_ok=True)
    stem = f"e2e_{args.size}_{torch.device(args.device).type}"
    with open(os.path.join(args.out_dir, stem + ".json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(args.out_dir, stem + ".png"))
    print(f"wrote {stem}.json and {stem}.png under {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
