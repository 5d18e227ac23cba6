"""Accuracy harness: image question answering from a local JSONL, unpruned vs each keep.

    python -m idselect eval --model /path/to/llava-1.5-7b-hf --data vqa.jsonl --keep 192 64 16

Each JSONL line: ``{"image": "relative/or/absolute.jpg", "question": "...", "answers": ["...", ...]}``
(``"answer": "..."`` also accepted). Runs fully offline (local weights, local files). Metrics:
``exact`` (the normalised prediction equals a normalised answer) or ``vqa``
(``min(1, matching answers / 3)``, the usual VQA accuracy without the 10-choose-9 averaging).
Normalisation: lower case, punctuation and articles removed, whitespace collapsed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import string
from typing import Dict, List, Optional

import torch

from .. import patch
from .cli_args import keep_value, positive_int

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def score(prediction: str, answers: List[str], metric: str) -> float:
    pred = normalize(prediction)
    hits = sum(normalize(a) == pred for a in answers)
    if metric == "exact":
        return float(hits > 0)
    return min(1.0, hits / 3.0)


def load_rows(path: str, image_root: Optional[str], limit: Optional[int]) -> List[Dict]:
    rows = []
    base = image_root or os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            answers = row.get("answers", [row["answer"]] if "answer" in row else None)
            if "image" not in row or "question" not in row or not answers:
                raise ValueError(f"{path}:{number}: each line needs 'image', 'question' and 'answers' (or 'answer')")
            image = row["image"] if os.path.isabs(row["image"]) else os.path.join(base, row["image"])
            rows.append({"image": image, "question": row["question"], "answers": [str(a) for a in answers]})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def answer(model, processor, row, max_new_tokens: int, device, dtype, suffix: str) -> str:
    from PIL import Image

    image = Image.open(row["image"]).convert("RGB")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"] + suffix}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(device)
    for key, value in inputs.items():
        if torch.is_floating_point(value):
            inputs[key] = value.to(dtype)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()


def evaluate(model, processor, rows, keeps, metric="vqa", max_new_tokens=16, device="cpu", dtype=torch.float32,
             suffix="\nAnswer the question using a single word or phrase.", progress=True) -> List[Dict]:
    """Accuracy of the unpruned model (keep None) and with each keep; one dict per setting."""
    from tqdm import tqdm

    results = []
    for keep in [None] + list(keeps):
        handle = patch(model, keep=keep) if keep is not None else None
        scores, tokens, select_ms, predictions = [], [], [], []
        try:
            for row in tqdm(rows, desc=f"keep={keep or 'all'}", disable=not progress):
                prediction = answer(model, processor, row, max_new_tokens, device, dtype, suffix)
                predictions.append(prediction)
                scores.append(score(prediction, row["answers"], metric))
                if handle is not None and handle.last_stats:
                    tokens.append(handle.last_stats["visual_tokens_after"])
                    select_ms.append(handle.last_stats["select_ms"])
        finally:
            if handle is not None:
                handle.remove()
        results.append({"keep": keep if keep is not None else "all", "accuracy": statistics.fmean(scores) if scores else 0.0,
                        "n": len(scores), "visual_tokens_after": statistics.fmean(tokens) if tokens else None,
                        "select_ms": statistics.median(select_ms) if select_ms else None, "predictions": predictions})
    base = results[0]["accuracy"]
    for r in results:
        r["relative"] = r["accuracy"] / base if base > 0 else None
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m idselect eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local checkpoint directory (weights + processor)")
    p.add_argument("--data", required=True, help="JSONL file")
    p.add_argument("--image-root", help="directory for relative image paths (default: the JSONL's)")
    p.add_argument("--keep", type=keep_value, nargs="+", default=[192, 128, 64, 16],
                   help="token counts per image (integers) or fractions in (0, 1]")
    p.add_argument("--metric", choices=["vqa", "exact"], default="vqa")
    p.add_argument("--max-new-tokens", type=positive_int, default=16)
    p.add_argument("--limit", type=positive_int, help="use only the first N rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--suffix", default="\nAnswer the question using a single word or phrase.")
    p.add_argument("--out", help="write results (with predictions) as JSON here")
    args = p.parse_args(argv)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    processor = AutoProcessor.from_pretrained(args.model, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(args.model, local_files_only=True, dtype=dtype).to(args.device).eval()
    keeps = args.keep
    rows = load_rows(args.data, args.image_root, args.limit)
    results = evaluate(model, processor, rows, keeps, args.metric, args.max_new_tokens, args.device, dtype, args.suffix)
    print(f"{len(rows)} questions, metric {args.metric}, model {args.model}")
    print(f"{'keep':>8}{'accuracy':>10}{'vs all':>9}{'visual tokens':>15}{'select ms':>11}")
    for r in results:
        rel = f"{r['relative']:.1%}" if r["relative"] is not None else "-"
        tok = f"{r['visual_tokens_after']:.0f}" if r["visual_tokens_after"] is not None else "all"
        ms = f"{r['select_ms']:.2f}" if r["select_ms"] is not None else "-"
        print(f"{str(r['keep']):>8}{r['accuracy']:>10.3f}{rel:>9}{tok:>15}{ms:>11}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "data": args.data, "metric": args.metric, "results": results}, f, indent=1)
    return 0
