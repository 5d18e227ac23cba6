"""Assisted decoding (a candidate generator: assistant_model=, prompt_lookup_num_tokens=,
assistant_early_exit=, in the call or its generation config) on a patched model: refused at
the start of generate(), before the model runs, every time the call could prune (issue 28: it
was refused only at the first rejected draft, mid-generation, and otherwise ran). Where the
patch is an identity for the call (keep covers every medium, or no media), the tokens equal
the unpatched model's."""
import pytest
import torch
from transformers import GenerationConfig

import idselect
from idselect.testing.cases import MODELS, case

FAMILIES = list(MODELS)
GEN = dict(max_new_tokens=8, do_sample=False)


def assisted_modes(family):
    """(name, generate() keyword arguments) of each candidate-generator mode."""
    return [
        ("prompt lookup", dict(prompt_lookup_num_tokens=2)),
        ("prompt lookup, generation config", dict(generation_config=GenerationConfig(prompt_lookup_num_tokens=2, **GEN))),
        ("assistant model", dict(assistant_model=MODELS[family](1))),
        ("early exit", dict(assistant_early_exit=1)),
    ]


def count_calls(module):
    calls = []
    return calls, module.register_forward_pre_hook(lambda m, a: calls.append(1))


@pytest.mark.parametrize("family", FAMILIES)
def test_assisted_decoding_is_refused_before_anything_runs(family):
    model, kwargs, counts = case(family, [(3, 1, 4)])
    # The prompt repeats its text so that prompt lookup has drafts to propose.
    for name, extra in assisted_modes(family):
        gen = {} if "generation_config" in extra else GEN
        calls, hook = count_calls(model.model.language_model)
        try:
            with torch.no_grad(), idselect.patch(model, keep=2), pytest.raises(NotImplementedError, match="assisted decoding"):
                model.generate(**kwargs, **gen, **extra)
        finally:
            hook.remove()
        assert calls == [], f"{name}: the language model ran before the refusal"


def outcome(model, inputs):
    """The tokens of a prompt-lookup generate(), or the type and message of its error
    (transformers' own candidate verification cannot always re-run a prompt's media)."""
    try:
        with torch.no_grad():
            return model.generate(**inputs, **GEN, prompt_lookup_num_tokens=2)
    except Exception as error:  # noqa: BLE001 - compared with the unpatched model's
        return type(error), str(error)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "internvl"])
def test_assisted_decoding_where_nothing_is_pruned_is_the_unpatched_model(family):
    """keep above every medium's tokens (an identity), and a text-only call: not refused;
    the same tokens (or the same error) as the unpatched model's assisted decoding."""
    model, kwargs, counts = case(family, [(3, 1, 4)])
    text_only = {k: kwargs[k].clone() for k in ("input_ids", "attention_mask")}
    text_only["input_ids"][text_only["input_ids"] >= 90] = 5  # placeholders out: plain text
    for inputs, keep in ((kwargs, max(counts)), (kwargs, 1.0), (text_only, 2)):
        want = outcome(model, inputs)
        with idselect.patch(model, keep=keep):
            got = outcome(model, inputs)
        if isinstance(want, torch.Tensor):
            assert isinstance(got, torch.Tensor) and torch.equal(got, want), (keep, got)
        else:
            assert got == want, (keep, got)
