"""The compiled fast path (README, "Fast path"): a patched model whose language model and vision
tower are compiled, generating with a static cache, gives the tokens of the same patched model
in eager mode with a dynamic cache (which tests/test_generation_patterns.py checks against the
unpatched model on the hand-pruned prompt). On the CPU here; on CUDA the same recipe adds
mode="reduce-overhead" (CUDA graphs), measured by bench/bench_e2e.py --compile."""
import pytest
import torch

import idselect
from idselect.hooks.registry import REGISTRY
from idselect.testing.cases import MODELS, case

pytestmark = pytest.mark.slow
STEPS = 4


def _towers(model):
    base = model.model
    return [getattr(base, name) for name in ("vision_tower", "image_tower", "video_tower", "visual")
            if isinstance(getattr(base, name, None), torch.nn.Module)]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_compiled_language_model_and_tower_with_a_static_cache_give_the_eager_tokens(family):
    if family == "qwen3_5":
        pytest.importorskip("transformers.models.qwen3_5")
    torch._dynamo.reset()
    model, kwargs, _ = case(family, [(2, 1, 3), (0, 1, 1)])  # two rows, left-padded
    llm = REGISTRY[family].language_model(model)
    compiled = [llm] + _towers(model)
    try:
        with torch.no_grad(), idselect.patch(model, keep=3) as handle:
            eager = model.generate(**kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
            eager_stats = handle.last_stats
            for module in compiled:
                module.compile()
            fast = model.generate(**kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                  cache_implementation="static")
            again = model.generate(**kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                   cache_implementation="static")  # the static cache reused and reset
            fast_stats = handle.last_stats
    finally:
        for module in compiled:
            module._compiled_call_impl = None
        torch._dynamo.reset()
    assert torch.equal(fast, eager) and torch.equal(again, eager)
    assert [k.tolist() for k in fast_stats["kept_indices"]] == [k.tolist() for k in eager_stats["kept_indices"]]


def test_saliency_is_read_from_the_towers_hidden_states_after_the_first_call():
    """Where the release's tower returns the saliency layer's input among its hidden states
    (5.17-5.24), the first call proves it and later calls register no hook on the tower (so a
    compiled tower is not run eagerly); where it does not (5.25 keeps only the requested layer),
    every call captures it with the hook. The picks are the same either way."""
    from idselect.hooks.family import layer_feeding, layer_position

    model, kwargs, _ = case("llava", [(2, 1, 3)])
    tower = model.model.vision_tower
    layer = layer_feeding(tower, model.config.vision_feature_layer)
    with torch.no_grad():
        states = model.model.get_image_features(pixel_values=kwargs["pixel_values"], return_dict=True).hidden_states
    returned = states is not None and states[layer_position(tower, layer)] is not None
    layer_hooks = lambda: sum(len(m._forward_pre_hooks) for m in tower.modules())  # noqa: E731
    with torch.no_grad(), idselect.patch(model, keep=3, importance="saliency") as handle:
        model(**kwargs)
        first = [k.tolist() for k in handle.last_stats["kept_indices"]]
        seen = []
        original = tower.forward

        def spy(*args, **kw):
            seen.append(layer_hooks())
            return original(*args, **kw)

        tower.forward = spy
        try:
            model(**kwargs)
        finally:
            del tower.forward
        assert seen == ([0] if returned else [1])
        assert [k.tolist() for k in handle.last_stats["kept_indices"]] == first
