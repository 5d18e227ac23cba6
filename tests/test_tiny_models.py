"""The tiny test models must depend on their images, or every token-equality oracle in the
hook tests would pass whichever tokens were kept."""
import pytest
import torch

import idselect
from idselect.testing.cases import MODELS, build

NEW = 6


def greedy(model, kwargs):
    with torch.no_grad():
        return tuple(model.generate(**kwargs, max_new_tokens=NEW)[0, -NEW:].tolist())


@pytest.mark.parametrize("family", list(MODELS))
def test_different_images_give_different_greedy_tokens(family):
    model = MODELS[family](0)
    prompt, _ = build(family, model, [(3, 1, 4)])
    outputs, logits = set(), []
    for image_seed in range(4):
        kwargs, _ = build(family, model, [(3, 1, 4)], first_row=image_seed * 12)  # same sizes, other pixels
        kwargs["input_ids"] = prompt["input_ids"]  # same text, another image
        if "mm_token_type_ids" in prompt:
            kwargs["mm_token_type_ids"] = prompt["mm_token_type_ids"]
        outputs.add(greedy(model, kwargs))
        with torch.no_grad():
            logits.append(model(**kwargs).logits[0, -1])
    assert len(outputs) >= 3, outputs
    # Last-token logits move by a sizeable share of their range (old tiny models: 0.16 of 0.94).
    for i in range(4):
        for j in range(i):
            assert float((logits[i] - logits[j]).abs().max()) > 0.5


@pytest.mark.parametrize("family", list(MODELS))
def test_different_kept_sets_give_different_greedy_tokens(family):
    model = MODELS[family](0)
    kwargs, _ = build(family, model, [(3, 1, 4)])
    outputs, kept = set(), set()
    for keep in (2, 4, 8):
        with idselect.patch(model, keep=keep) as handle:
            outputs.add(greedy(model, kwargs))
        kept.add(tuple(tuple(k.tolist()) for k in handle.last_stats["kept_indices"]))
    assert len(kept) == 3 and len(outputs) == 3, outputs
