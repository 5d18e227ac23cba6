"""A short battery of generation patterns, each compared with an oracle that does not use the
hooks (or, for threads, with the same call made alone): ``idselect.patch``'s self-check runs it on
a tiny model of the family being patched when the installed transformers is outside the verified
range, and the test suite runs it on every family.

Each pattern returns (patched tokens, oracle tokens); only the kept token indices come from the
patched run (which tokens the selection keeps is the op's business, tested elsewhere). A pattern
that finds a wrong result another way raises ``Mismatch``. ``run`` tells the two kinds of failure
apart (``Failure.mismatch``): a wrong result is the release's doing; an exception may come from
the process the check runs in as well as from the release.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Dict, List, Tuple

import torch

from . import cases, oracles

KEEP = 5  # tokens kept per medium
NEW = 3  # generated tokens per pattern
BATCH_ROWS = [(3, 1, 4), (5, 1, 2)]  # two prompts of different lengths: a left-padded batch
ONE_ROW = [(3, 1, 4)]
TWO_IMAGES = [(3, 2, 4)]  # one prompt, two images: releases that repeat media one by one get it wrong
MESSAGE = [7, 8, 9, 10, 11]  # the user's next turn
NEXT_IMAGE = [(2, 1, 3)]  # a later turn that brings an image of its own (built from its own seed)
NEXT_IMAGE_ROW = 7  # that seed's row: another image than the first turn's
SAMPLING_SEED = 1234


class Mismatch(AssertionError):
    """A pattern found a wrong result that is not a token comparison (e.g. a call the hooks must
    refuse went through)."""


class Failure(str):
    """One line of ``run``'s answer, ``"pattern: what differed"``; ``mismatch`` is True where the
    pattern ran and found a wrong result (the release's doing), False where it raised."""

    mismatch: bool

    def __new__(cls, text: str, mismatch: bool):
        line = super().__new__(cls, text)
        line.mismatch = mismatch
        return line


def _patched(model, call: Callable):
    import idselect

    with torch.no_grad(), idselect.patch(model, keep=KEEP) as handle:
        out = call()
    return out, handle.last_stats["kept_indices"]


def _keep(family, kwargs, kept_indices):
    return oracles.kept_columns(kwargs["input_ids"], kwargs.get("attention_mask"), kept_indices,
                                cases.runs_per_video(family))


# Greedy oracles already computed, per model: three patterns decode the same prompts greedily
# (dynamic cache, static cache, use_cache=False) and the selection is deterministic, so one oracle
# serves them (the key holds the kept indices: another selection gets an oracle of its own).
_greedy_memo: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()


def _greedy_oracle(family: str, model, rows, kwargs, kept) -> torch.Tensor:
    """NEW greedy tokens of the unpatched model over the hand-pruned prompts ``rows``."""
    key = (tuple(rows), tuple(tuple(k.tolist()) for k in kept))
    with _memo_lock:
        known = _greedy_memo.get(model, {}).get(key)
    if known is not None:
        return known
    if family in cases.MROPE:
        want = oracles.mrope_pruned_greedy(model, kwargs, _keep(family, kwargs, kept), NEW)
    else:
        embeds, mask = oracles.hand_pruned(model, kwargs, kept)
        want = oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)
    with _memo_lock:
        _greedy_memo.setdefault(model, {})[key] = want
    return want


def _greedy(family: str, model, rows, **gen) -> Tuple[torch.Tensor, torch.Tensor]:
    kwargs, _ = cases.build(family, model, rows)
    out, kept = _patched(model, lambda: model.generate(**kwargs, max_new_tokens=NEW, **gen))
    return out[:, -NEW:], _greedy_oracle(family, model, rows, kwargs, kept)


def left_padded_batch(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding of a left-padded batch of two prompts."""
    return _greedy(family, model, BATCH_ROWS)


def static_cache(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """The left-padded batch with ``cache_implementation="static"`` (generate() prepares 4-D
    masks for a compileable cache)."""
    return _greedy(family, model, BATCH_ROWS, cache_implementation="static")


def no_cache(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """The left-padded batch with ``use_cache=False`` (every step runs the whole sequence again)."""
    return _greedy(family, model, BATCH_ROWS, use_cache=False)


def sampling(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sampling with a seed. 1-D families: against the unpatched model's same call with the same
    seed on the hand-pruned prompt. M-RoPE families (no unpatched call takes a hand-pruned prompt
    at its original positions): the sampling path with ``top_k=1`` against greedy decoding by
    hand (a sampler replayed by hand would tie the check to generate()'s internals)."""
    kwargs, _ = cases.build(family, model, ONE_ROW)
    if family in cases.MROPE:
        torch.manual_seed(SAMPLING_SEED)
        out, kept = _patched(model, lambda: model.generate(**kwargs, max_new_tokens=NEW, do_sample=True, top_k=1))
        return out[:, -NEW:], _greedy_oracle(family, model, ONE_ROW, kwargs, kept)
    gen = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0)  # the whole distribution: the seed matters
    _, kept = _patched(model, lambda: model(**kwargs))  # the prompt's selection, made once
    torch.manual_seed(SAMPLING_SEED)
    out, _ = _patched(model, lambda: model.generate(**kwargs, max_new_tokens=NEW, **gen))
    embeds, mask = oracles.hand_pruned(model, kwargs, kept)
    torch.manual_seed(SAMPLING_SEED)
    want = oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW, **gen)
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


def second_image_turn(family: str, model) -> Tuple[torch.Tensor, torch.Tensor]:
    """A continued conversation whose second turn brings a new image (only its pixels passed,
    as for the unpatched model). 1-D families: it is pruned with its own budget, against the
    unpatched model on the first turn hand-pruned, the answer, and the second turn hand-pruned.
    M-RoPE families: the hooks must refuse it (``NotImplementedError``: start a new cache)."""
    import idselect

    kwargs, _ = cases.build(family, model, ONE_ROW)
    later, _ = cases.build(family, model, NEXT_IMAGE, first_row=NEXT_IMAGE_ROW)
    media = {k: v for k, v in later.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    with torch.no_grad(), idselect.patch(model, keep=KEEP) as handle:
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        kept_first = handle.last_stats["kept_indices"]
        conversation = torch.cat([first.sequences, later["input_ids"]], dim=1)
        extra = {}
        if "mm_token_type_ids" in later:
            extra["mm_token_type_ids"] = torch.cat([torch.zeros_like(first.sequences), later["mm_token_type_ids"]], dim=1)
        call = dict(input_ids=conversation, attention_mask=torch.ones_like(conversation), max_new_tokens=NEW,
                    **{cases.CACHE_KW: cases.returned_cache(first)}, **media, **extra)
        if family in cases.MROPE:
            try:
                model.generate(**call)
            except NotImplementedError as refused:
                if "start a new cache" not in str(refused):
                    raise Mismatch(f"refused without saying what to do: {refused}") from refused
                return torch.ones(1), torch.ones(1)
            raise Mismatch("a later turn with a new image went through (the hooks must refuse it: M-RoPE)")
        second = model.generate(**call)
        kept_later = handle.last_stats["kept_indices"]
    answer = second[:, conversation.shape[1]:]
    embeds_first, mask_first = oracles.hand_pruned(model, kwargs, kept_first)
    generated = first.sequences[:, kwargs["input_ids"].shape[1]:]
    embeds_later, mask_later = oracles.hand_pruned(model, later, kept_later)
    embeds = torch.cat([embeds_first, oracles.embed_tokens(model, generated), embeds_later], dim=1)
    mask = torch.cat([mask_first, torch.ones_like(generated), mask_later], dim=1)
    return answer, oracles.generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)


def two_threads(family: str, model, rounds: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
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
    "static cache": static_cache,
    "use_cache=False": no_cache,
    "sampling with a seed": sampling,
    "beam search": beams,
    "continued cache": continued_cache,
    "second turn with a new image": second_image_turn,
    "two threads": two_threads,
}


def run(family: str, seed: int = 0) -> List[Failure]:
    """Run every pattern on a tiny model of ``family``; returns one line per pattern that
    differs from its oracle or raises (empty: all equal).

    Parameters
    ----------
    family : str
        A ``model_type`` of ``idselect.testing.cases.MODELS``.
    seed : int
        The tiny model's weights.

    Returns
    -------
    list of Failure
        ``"pattern: what differed"`` each; ``Failure.mismatch`` tells a wrong result (True)
        from an exception (False).

    Notes
    -----
    The model is built and run on the CPU in float32 with autocast off and one intra-op thread,
    whatever the caller's default device (``with torch.device("meta")``,
    ``torch.set_default_device``), default dtype, autocast or thread count: the oracles need
    real numbers, and the caller's context is not the release. All of it is the caller's again
    afterwards (the thread count is process-wide: other threads of the process run with one
    intra-op thread while the battery runs). The caller's random-number state is its own
    business (``selfcheck`` forks it).
    """
    if family not in cases.MODELS:
        raise ValueError(f"battery.run: family={family!r} is not one of {sorted(cases.MODELS)}")
    dtype = torch.get_default_dtype()
    with contextlib.ExitStack() as context:
        # An inner device context wins over the caller's (and over set_default_device, which is
        # one). Entered only where needed: a device context sees every torch call in Python
        # (measured: 40% of the battery's time).
        if torch.empty(0).device.type != "cpu":
            context.enter_context(torch.device("cpu"))
        context.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():  # (asking for it without CUDA warns)
            context.enter_context(torch.autocast("cuda", enabled=False))
        context.callback(torch.set_default_dtype, dtype)
        torch.set_default_dtype(torch.float32)
        # One intra-op thread: the tiny models' ops take microseconds, so more threads only add
        # synchronisation, and on a busy machine each parallel region waits for a descheduled
        # thread (measured: 22 s instead of 1 s for a family with 2 threads at load 5 on 2 cores).
        context.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
        return _run(family, seed)


def _run(family: str, seed: int) -> List[Failure]:
    try:
        model = cases.MODELS[family](seed)
    except Exception as error:  # a release may not build the family from these configs at all
        return [Failure(f"building a tiny {family} model: {type(error).__name__}: {error}", mismatch=False)]
    failures = []
    for name, pattern in PATTERNS.items():
        try:
            got, want = pattern(family, model)
        except Mismatch as wrong:
            failures.append(Failure(f"{name}: {wrong}", mismatch=True))
            continue
        except Exception as error:  # a release that breaks a pattern may break it loudly
            failures.append(Failure(f"{name}: {type(error).__name__}: {error}", mismatch=False))
            continue
        if not torch.equal(got, want):
            failures.append(Failure(f"{name}: patched {got.tolist()} != oracle {want.tolist()}", mismatch=True))
    return failures
