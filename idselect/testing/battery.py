"""A short battery of generation patterns, each compared with an oracle that does not use the
hooks (or, for threads, with the same call made alone): ``idselect.patch``'s self-check runs it on a tiny model of the family being patched when
the installed transformers is outside the verified range, and the test suite runs it on every
family.

Each pattern returns (patched tokens, oracle tokens); only the kept token indices come from the
patched run (which tokens the selection keeps is the op's business, tested elsewhere).
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Tuple

import torch

from . import cases, oracles

KEEP = 5  # tokens kept per medium
NEW = 3  # generated tokens per pattern
BATCH_ROWS = [(3, 1, 4), (5, 1, 2)]  # two prompts of different lengths: a left-padded batch
ONE_ROW = [(3, 1, 4)]
TWO_IMAGES = [(3, 2, 4)]  # one prompt, two images: releases that repeat media one by one get it wrong
MESSAGE = [7, 8, 9, 10, 11]  # the user's next turn


def _patched(model, call: Callable):
    import idselect

    with torch.no_grad(), idselect.patch(model, keep=KEEP) as handle:
        out = call()
    return out, handle.last_stats["kept_indices"]


def _keep(family, kwargs, kept_indices):
    return oracles.kept_columns(kwargs["input_ids"], kwargs.get("attention_mask"), kept_indices,
                                cases.runs_per_video(family))


def left_padded_batch(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding of a left-padded batch of two prompts."""
    kwargs, _ = cases.build(family, model, BATCH_ROWS)
    out, kept = _patched(model, lambda: model.generate(**kwargs, max_new_tokens=NEW))
    if family in cases.MROPE:
        want = oracles.mrope_pruned_greedy(model, kwargs, _keep(family, kwargs, kept), NEW)
    else:
        embeds, mask = oracles.hand_pruned(model, kwargs, kept)
        want = oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)
    return out[:, -NEW:], want


def beams(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Beam search (two beams, both returned) over one prompt with two images."""
    kwargs, _ = cases.build(family, model, TWO_IMAGES)
    _, kept = _patched(model, lambda: model(**kwargs))  # the prompt's selection, made once
    out, _ = _patched(model, lambda: model.generate(**kwargs, max_new_tokens=NEW, num_beams=2, num_return_sequences=2))
    if family in cases.MROPE:
        want = oracles.mrope_pruned_beams(model, kwargs, _keep(family, kwargs, kept), NEW, num_beams=2, num_return=2)
    else:
        embeds, mask = oracles.hand_pruned(model, kwargs, kept)
        want = oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW, num_beams=2, num_return_sequences=2)
    return out[:, -NEW:], want


def continued_cache(family: str, model, cache_name: str = cases.CACHE_KW) -> Tuple[torch.Tensor, torch.Tensor]:
    """A second turn that continues the cache the first turn returned (the whole conversation
    passed, as for the unpatched model), under the release's name for it or ``cache_name``."""
    kwargs, _ = cases.build(family, model, ONE_ROW)
    message = torch.tensor([MESSAGE])

    def two_turns():
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        conversation = torch.cat([first.sequences, message], dim=1)
        second = model.generate(input_ids=conversation, attention_mask=torch.ones_like(conversation),
                                max_new_tokens=NEW, **{cache_name: cases.returned_cache(first)})
        return second[:, conversation.shape[1]:], conversation

    (answer, conversation), kept = _patched(model, two_turns)
    tail = conversation[:, kwargs["input_ids"].shape[1]:]  # the first answer and the message
    if family in cases.MROPE:
        want = oracles.mrope_pruned_greedy(model, kwargs, _keep(family, kwargs, kept), NEW, tail=tail)
    else:
        embeds, mask = oracles.hand_pruned(model, kwargs, kept)
        embeds = torch.cat([embeds, oracles.embed_tokens(model, tail)], dim=1)
        mask = torch.cat([mask, torch.ones_like(tail)], dim=1)
        want = oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)
    return answer, want


def two_threads(family: str, model, rounds: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """One patched model decoding two different prompts from two threads at once, each call
    against the same call made alone (whose exactness the patterns above establish)."""
    import idselect

    prompts = [cases.build(family, model, ONE_ROW)[0], cases.build(family, model, BATCH_ROWS, first_row=3)[0]]
    results: Dict[tuple, torch.Tensor] = {}
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(prompts))

    def work(index):
        try:
            barrier.wait()
            for r in range(rounds):
                with torch.no_grad():
                    results[(index, r)] = model.generate(**prompts[index], max_new_tokens=NEW)[:, -NEW:]
        except BaseException as error:  # raised below, in the caller's thread
            errors.append(error)

    with idselect.patch(model, keep=KEEP):
        with torch.no_grad():
            alone = [model.generate(**kw, max_new_tokens=NEW)[:, -NEW:] for kw in prompts]
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    got = torch.cat([results[(i, r)] for i in range(len(prompts)) for r in range(rounds)])
    want = torch.cat([alone[i] for i in range(len(prompts)) for _ in range(rounds)])
    return got, want


PATTERNS: Dict[str, Callable] = {
    "left-padded batch, greedy": left_padded_batch,
    "beam search": beams,
    "continued cache": continued_cache,
    "two threads": two_threads,
}


def run(family: str, seed: int = 0) -> List[str]:
    """Run every pattern on a tiny model of ``family``; returns one line per pattern that
    differs from its oracle or raises (empty: all equal)."""
    try:
        model = cases.MODELS[family](seed)
    except Exception as error:  # a release may not build the family from these configs at all
        return [f"building a tiny {family} model: {type(error).__name__}: {error}"]
    failures = []
    for name, pattern in PATTERNS.items():
        try:
            got, want = pattern(family, model)
        except Exception as error:  # a release that breaks a pattern may break it loudly
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if not torch.equal(got, want):
            failures.append(f"{name}: patched {got.tolist()} != oracle {want.tolist()}")
    return failures
