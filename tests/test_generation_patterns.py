"""idselect.patch under the ways users call generate(): beams, sampling with several
sequences, multi-turn continuation of a returned cache, interleaved caches, threads, static
caches, use_cache=False, mixed batches. Oracles (idselect/testing/oracles.py) never use the hooks: the
unpatched model on a hand-pruned sequence, greedy decoding by hand, or the same call alone."""
import threading
import warnings

import pytest
import torch
import transformers

import idselect
from idselect.hooks import compat
from idselect.testing import battery
from idselect.testing.cases import CACHE_KW, MODELS, MROPE, build, cache_kwargs, case, returned_cache, runs_per_video
from idselect.testing import tiny
from idselect.testing.oracles import (embed_tokens, generate_on_embeds, hand_pruned, kept_columns, llm_input_embeds, left_pack,
                     mrope_pruned_beams, mrope_pruned_greedy)

FAMILIES = list(MODELS)
ONE_D = [f for f in FAMILIES if f not in MROPE]  # 1-D positions: a pruned prompt is a shorter prompt
ROWS = [(3, 1, 4), (5, 1, 2)]  # one image per prompt (InternVL: of several tiles)
NEW = 4


def patched_generate(model, kwargs, keep=5, **gen):
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        out = model.generate(**kwargs, max_new_tokens=NEW, **gen)
    return out, handle.last_stats


def qwen_oracle(family, model, kwargs, kept_indices, steps=NEW):
    keep = kept_columns(kwargs["input_ids"], kwargs.get("attention_mask"), kept_indices, runs_per_video(family))
    return mrope_pruned_greedy(model, kwargs, keep, steps)


def greedy_oracle(family, model, kwargs, kept_indices):
    """NEW greedy tokens of the unpatched model over the hand-pruned prompt."""
    if family in MROPE:
        return qwen_oracle(family, model, kwargs, kept_indices)
    embeds, mask = hand_pruned(model, kwargs, kept_indices)
    return generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)


@pytest.mark.parametrize("family", ONE_D)
@pytest.mark.parametrize("gen", [dict(num_beams=2), dict(num_beams=3, num_return_sequences=2),
                                 dict(do_sample=True, num_return_sequences=2)], ids=["beams", "beams-sequences", "sample"])
def test_beams_and_several_sequences_equal_unpatched_on_hand_pruned_prompt(family, gen):
    model, kwargs, _ = case(family, ROWS)
    if compat.broken_expansion(family, transformers.__version__, several_items=family == "internvl"):
        with pytest.raises(NotImplementedError, match="the unpatched model is affected too"):
            patched_generate(model, kwargs, **gen)
        return
    _, single = patched_generate(model, kwargs)  # the prompts' selection, made once
    torch.manual_seed(0)
    out, stats = patched_generate(model, kwargs, **gen)
    # generate() repeats each prompt after encoding its images: every copy is pruned the same.
    expand = gen["num_beams"] if "num_beams" in gen else gen["num_return_sequences"]
    assert stats["visual_tokens_after"] == expand * single["visual_tokens_after"]
    assert sorted(k.tolist() for k in stats["kept_indices"]) == sorted(k.tolist() for k in single["kept_indices"] for _ in range(expand))
    embeds, mask = hand_pruned(model, kwargs, single["kept_indices"])
    torch.manual_seed(0)
    expected = generate_on_embeds(model, embeds, mask, max_new_tokens=NEW, **gen)
    assert torch.equal(out[:, -NEW:], expected), (out[:, -NEW:], expected)


@pytest.mark.parametrize("family", MROPE)
def test_qwen_beams_equal_beam_search_by_hand_over_the_hand_pruned_prompt(family):
    model, kwargs, counts = case(family, [(3, 1, 4)])
    if compat.broken_expansion(family, transformers.__version__, several_items=family == "internvl"):
        with pytest.raises(NotImplementedError, match="the unpatched model is affected too"):
            patched_generate(model, kwargs, num_beams=2, num_return_sequences=2)
        return
    greedy, stats = patched_generate(model, kwargs)
    beams, beam_stats = patched_generate(model, kwargs, num_beams=2, num_return_sequences=2)
    assert beams.shape[0] == 2 and beam_stats["visual_tokens_after"] == 2 * stats["visual_tokens_after"]
    # Every copy of the prompt keeps exactly the tokens the single prompt keeps.
    assert sorted(k.tolist() for k in beam_stats["kept_indices"]) == sorted(k.tolist() for k in stats["kept_indices"] for _ in range(2))
    keep = kept_columns(kwargs["input_ids"], kwargs.get("attention_mask"), stats["kept_indices"], runs_per_video(family))
    assert torch.equal(beams[:, -NEW:], mrope_pruned_beams(model, kwargs, keep, NEW, num_beams=2, num_return=2))


def continue_conversation(model, result, message, **extra):
    """Turn 2: the whole conversation so far plus the user's message, with the returned cache."""
    conversation = torch.cat([result.sequences, message], dim=1)
    mask = torch.ones_like(conversation)
    with torch.no_grad():
        return model.generate(input_ids=conversation, attention_mask=mask, **cache_kwargs(result),
                              max_new_tokens=NEW, return_dict_in_generate=True, **extra), conversation


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_turn_continuation_equals_greedy_over_pruned_conversation(family):
    model, kwargs, _ = case(family, [(3, 1, 4)])
    message = torch.tensor([[7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        kept = handle.last_stats["kept_indices"]
        second, conversation = continue_conversation(model, first, message)
    answer = second.sequences[:, conversation.shape[1]:]
    if family in MROPE:
        keep = kept_columns(kwargs["input_ids"], None, kept, runs_per_video(family))
        expected = mrope_pruned_greedy(model, kwargs, keep, NEW, tail=conversation[:, kwargs["input_ids"].shape[1]:])
    else:
        embeds, mask = hand_pruned(model, kwargs, kept)
        tail = conversation[:, kwargs["input_ids"].shape[1]:]
        embeds = torch.cat([embeds, embed_tokens(model, tail)], dim=1)
        mask = torch.cat([mask, torch.ones_like(tail)], dim=1)
        expected = generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)
    assert torch.equal(answer, expected), (answer, expected)


@pytest.mark.parametrize("family", ["llava", "internvl"])
def test_later_turn_with_a_new_image_prunes_it_with_its_own_budget(family):
    model, kwargs, counts = case(family, [(3, 1, 4)])
    new_kwargs, new_counts = build(family, model, [(2, 1, 3)], first_row=7)
    message = new_kwargs["input_ids"]
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        kept1 = handle.last_stats["kept_indices"]
        second, conversation = continue_conversation(model, first, message, pixel_values=new_kwargs["pixel_values"])
        stats2 = handle.last_stats
    assert stats2["visual_tokens_before"] == new_counts[0] and stats2["visual_tokens_after"] == 5
    embeds1, mask1 = hand_pruned(model, kwargs, kept1)
    generated = first.sequences[:, kwargs["input_ids"].shape[1]:]
    embeds2, mask2 = hand_pruned(model, new_kwargs, stats2["kept_indices"])
    embeds = torch.cat([embeds1, embed_tokens(model, generated), embeds2], dim=1)
    mask = torch.cat([mask1, torch.ones_like(generated), mask2], dim=1)
    expected = generate_on_embeds(model, embeds, mask, max_new_tokens=NEW)
    assert torch.equal(second.sequences[:, conversation.shape[1]:], expected)


@pytest.mark.parametrize("family", MROPE)
def test_qwen_later_turn_with_new_media_is_refused_clearly(family):
    model, kwargs, _ = case(family, [(3, 1, 4)])
    with torch.no_grad(), idselect.patch(model, keep=5):
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        conversation = torch.cat([first.sequences, kwargs["input_ids"]], dim=1)
        mm = torch.cat([torch.zeros_like(first.sequences), kwargs["mm_token_type_ids"]], dim=1)
        media = {k: kwargs[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")}
        with pytest.raises(NotImplementedError, match="start a new cache"):
            model.generate(input_ids=conversation, attention_mask=torch.ones_like(conversation), mm_token_type_ids=mm,
                           **cache_kwargs(first), max_new_tokens=2, **media)


class Conversation:
    """A manual greedy decode loop: prefill, then one token per step with the cache."""

    def __init__(self, model, kwargs):
        self.model, self.kwargs = model, kwargs
        with torch.no_grad():
            out = model(**kwargs, use_cache=True)
        self.cache = returned_cache(out)
        self.mask = kwargs["attention_mask"]
        self.tokens = [out.logits[:, -1].argmax(-1, keepdim=True)]

    def step(self):
        self.mask = torch.cat([self.mask, torch.ones_like(self.tokens[-1])], dim=1)
        with torch.no_grad():
            out = self.model(input_ids=self.tokens[-1], attention_mask=self.mask, **{CACHE_KW: self.cache}, use_cache=True)
        self.tokens.append(out.logits[:, -1].argmax(-1, keepdim=True))

    def result(self):
        return torch.cat(self.tokens, dim=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_conversations_decoded_alternately(family):
    model, kwargs_a, _ = case(family, [(3, 1, 4)])
    kwargs_b, _ = build(family, model, [(6, 1, 1), (2, 1, 5)], first_row=3)
    with idselect.patch(model, keep=5):
        alone = []
        for kw in (kwargs_a, kwargs_b):
            conv = Conversation(model, kw)
            for _ in range(NEW - 1):
                conv.step()
            alone.append(conv.result())
        a, b = Conversation(model, kwargs_a), Conversation(model, kwargs_b)
        for _ in range(NEW - 1):
            a.step()
            b.step()
        with torch.no_grad():
            generated = model.generate(**kwargs_a, max_new_tokens=NEW)[:, -NEW:]
    assert torch.equal(a.result(), alone[0]) and torch.equal(b.result(), alone[1])
    assert torch.equal(a.result(), generated)  # the manual loop decodes as generate() does


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "internvl", "qwen3_vl", "llava_onevision"])
def test_one_patched_model_from_two_threads(family):
    model, kwargs_a, _ = case(family, [(3, 1, 4)])
    kwargs_b, _ = build(family, model, [(6, 1, 1), (2, 1, 5)], first_row=3)
    with idselect.patch(model, keep=5, importance="relevance") as handle:
        expected, after = [], []
        for kw in (kwargs_a, kwargs_b):
            with torch.no_grad():
                expected.append(model.generate(**kw, max_new_tokens=NEW))
            after.append(handle.last_stats["visual_tokens_after"])
        results, errors = {}, []
        barrier = threading.Barrier(2)

        def work(name, kw, rounds=3):
            try:
                barrier.wait()
                for r in range(rounds):
                    with torch.no_grad():
                        results[(name, r)] = model.generate(**kw, max_new_tokens=NEW)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=("a", kwargs_a)), threading.Thread(target=work, args=("b", kwargs_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for r in range(3):
        assert torch.equal(results[("a", r)], expected[0]) and torch.equal(results[("b", r)], expected[1])
    assert handle.last_stats["visual_tokens_after"] in after


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_equals_oracle(family):
    model, kwargs, _ = case(family, ROWS if family not in MROPE else [(3, 1, 4)])
    out, stats = patched_generate(model, kwargs, cache_implementation="static")
    assert torch.equal(out[:, -NEW:], greedy_oracle(family, model, kwargs, stats["kept_indices"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_use_cache_false_selects_once(family):
    model, kwargs, _ = case(family, ROWS if family not in MROPE else [(3, 1, 4)])
    out, stats = patched_generate(model, kwargs, use_cache=False)
    assert torch.equal(out[:, -NEW:], greedy_oracle(family, model, kwargs, stats["kept_indices"]))
    cached, cached_stats = patched_generate(model, kwargs)
    assert torch.equal(out, cached)


@pytest.mark.parametrize("family", ["llava", "llava_next", "internvl", "llava_onevision"])
def test_mixed_batch_is_compacted(family):
    """A text-only row beside an image row, or images of different sizes: after pruning no
    column is padding in every row."""
    rows = [(4, 0, 3), (2, 1, 3)] if family not in ("llava_next", "llava_onevision") else [(2, 1, 3), (1, 1, 2)]
    model, kwargs, counts = case(family, rows)
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    with torch.no_grad(), idselect.patch(model, keep=3) as handle:
        out = model.generate(**kwargs, max_new_tokens=NEW)
    hook.remove()
    prefill_mask = seen[0]
    assert prefill_mask is None or bool(prefill_mask.bool().any(dim=0).all())
    keep = kept_columns(kwargs["input_ids"], kwargs["attention_mask"], handle.last_stats["kept_indices"])
    assert handle.last_stats["sequence_length_after"] == int(keep.sum(dim=1).max()) < kwargs["input_ids"].shape[1]
    embeds, mask = hand_pruned(model, kwargs, handle.last_stats["kept_indices"])
    assert embeds.shape[1] == handle.last_stats["sequence_length_after"]
    assert torch.equal(out[:, -NEW:], generate_on_embeds(model, embeds, mask, max_new_tokens=NEW))


def test_generate_with_inputs_keyword_and_use_cache_from_generation_config():
    """generate(inputs=...) (its first parameter's name) and use_cache=False set on the
    model's generation_config are read as generate() reads them."""
    model, kwargs, _ = case("llava", [(3, 1, 4)])
    message = torch.tensor([[7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad(), idselect.patch(model, keep=5):
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        conversation = torch.cat([first.sequences, message], dim=1)
        by_name = model.generate(inputs=conversation, attention_mask=torch.ones_like(conversation),
                                 **cache_kwargs(first), max_new_tokens=NEW)
    with torch.no_grad(), idselect.patch(model, keep=5):
        again = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        positional = model.generate(torch.cat([again.sequences, message], dim=1), attention_mask=torch.ones_like(conversation),
                                    **cache_kwargs(again), max_new_tokens=NEW)
    assert torch.equal(by_name, positional)
    with torch.no_grad(), idselect.patch(model, keep=5):
        cached = model.generate(**kwargs, max_new_tokens=NEW)
        model.generation_config.use_cache = False
        try:
            uncached = model.generate(**kwargs, max_new_tokens=NEW)
        finally:
            model.generation_config.use_cache = True
    assert torch.equal(cached, uncached)


def test_continuing_with_only_the_new_message_is_refused_clearly():
    model, kwargs, _ = case("llava", [(3, 1, 4)])
    with torch.no_grad(), idselect.patch(model, keep=5):
        first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
        message = torch.tensor([[7, 8, 9]])
        with pytest.raises(ValueError, match="pass the whole conversation"):
            model.generate(input_ids=message, **cache_kwargs(first), max_new_tokens=2)


def test_a_cache_changed_outside_the_patched_model_is_refused():
    model, kwargs, _ = case("llava", [(3, 1, 4)])
    handle = idselect.patch(model, keep=5)
    with torch.no_grad():
        out = model(**kwargs, use_cache=True)
    handle.remove()
    token = out.logits[:, -1:].argmax(-1)
    with torch.no_grad():  # an unpatched step grows the cache behind the state's back
        model(input_ids=token, **cache_kwargs(out), use_cache=True)
    with torch.no_grad(), idselect.patch(model, keep=5), pytest.raises(RuntimeError, match="changed outside the patched model"):
        model(input_ids=token, **cache_kwargs(out), use_cache=True)


def test_a_medium_with_few_candidates_does_not_lower_the_others_budget():
    """LLaVA-NeXT: newline tokens are never candidates; an image with fewer candidates than
    the budget keeps them all, and an image beside it still gets its whole budget."""
    model, kwargs, counts = case("llava_next", [(3, 2, 4)])  # 52 and 88 tokens (4 and 8 newlines)
    assert counts == [52, 88]
    with torch.no_grad(), idselect.patch(model, keep=50) as handle:
        model(**kwargs)
    assert [k.numel() for k in handle.last_stats["kept_indices"]] == [48, 50]
    assert handle.last_stats["visual_tokens_after"] == 98


@pytest.mark.skipif(CACHE_KW != "cache", reason="transformers < 5.24 has no deprecated cache alias")
@pytest.mark.parametrize("family,alias", [("llava", "past_key_values"), ("llava", "cache_params"),
                                          ("qwen3_5", "past_key_values"), ("qwen3_5", "cache_params")])
def test_a_deprecated_cache_alias_continues_a_pruned_cache_exactly(family, alias):
    """transformers >= 5.24 still accepts generate(past_key_values=) and generate(cache_params=)
    (renamed to cache= with a warning): a user's older code continues a pruned cache exactly,
    against greedy decoding over the hand-pruned conversation."""
    model, _, _ = case(family, [(3, 1, 4)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the user's own deprecated call
        got, want = battery.continued_cache(family, model, cache_name=alias)
    assert torch.equal(got, want), (got, want)


@pytest.mark.skipif(CACHE_KW != "cache", reason="transformers < 5.24 has no deprecated cache alias")
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_decode_steps_passing_past_key_values_to_forward_equal_those_passing_cache(family):
    """model(..., past_key_values=cache) on 5.24 (a deprecated alias the forward renames) decodes
    a pruned cache as model(..., cache=cache) does (itself pinned against generate())."""
    model, kwargs, _ = case(family, [(3, 1, 4)])
    results = []
    with torch.no_grad(), idselect.patch(model, keep=5), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated name, on purpose
        for name in ("cache", "past_key_values"):
            out = model(**kwargs, use_cache=True)
            cache, mask = out.cache, kwargs["attention_mask"]
            tokens = [out.logits[:, -1].argmax(-1, keepdim=True)]
            for _ in range(NEW - 1):
                mask = torch.cat([mask, torch.ones_like(tokens[-1])], dim=1)
                step = model(input_ids=tokens[-1], attention_mask=mask, use_cache=True, **{name: cache})
                tokens.append(step.logits[:, -1].argmax(-1, keepdim=True))
            results.append(torch.cat(tokens, dim=1))
        generated = model.generate(**kwargs, max_new_tokens=NEW)[:, -NEW:]
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], generated), (results, generated)


@pytest.mark.parametrize("family", ["llava", "qwen3_5"])
def test_the_hooks_own_calls_raise_no_transformers_deprecation(family):
    """A multi-turn conversation written with the release's own names: neither a
    FutureWarning nor a logged deprecation comes out of the patched model."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    model, kwargs, _ = case(family, [(3, 1, 4)])
    message = torch.tensor([[7, 8, 9]])
    logging.Logger.warning_once.cache_clear()  # transformers logs each deprecation once per process
    collect = Collect()
    transformers_logger = logging.getLogger("transformers")  # does not propagate to the root logger
    transformers_logger.addHandler(collect)
    level = transformers_logger.level
    transformers_logger.setLevel(logging.WARNING)  # whatever TRANSFORMERS_VERBOSITY says
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            with torch.no_grad(), idselect.patch(model, keep=5):
                model(**kwargs, use_cache=True)  # a forward that creates its cache
                first = model.generate(**kwargs, max_new_tokens=NEW, return_dict_in_generate=True)
                continue_conversation(model, first, message)
    finally:
        transformers_logger.removeHandler(collect)
        transformers_logger.setLevel(level)
    assert not [m for m in collect.messages if "deprecat" in m.lower()], collect.messages
