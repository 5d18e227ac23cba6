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
    """After one call proves the tower's returned hidden states hold the saliency layer's input,
    no hook is registered on the vision tower (so a compiled tower is not run eagerly)."""
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    layer_hooks = lambda: sum(len(layer._forward_pre_hooks) for layer in model.model.vision_tower.modules())
    with torch.no_grad(), idselect.patch(model, keep=3, importance="saliency") as handle:
        model(**kwargs)
        first = [k.tolist() for k in handle.last_stats["kept_indices"]]
        seen = []
        original = model.model.vision_tower.forward

        def spy(*args, **kw):
            seen.append(layer_hooks())
            return original(*args, **kw)

        model.model.vision_tower.forward = spy
        try:
            model(**kwargs)
        finally:
            del model.model.vision_tower.forward
        assert seen == [0]
        assert [k.tolist() for k in handle.last_stats["kept_indices"]] == first


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_generates_own_compilation_of_decode_steps_gives_the_eager_tokens(family):
    """What generate() does on CUDA with a static cache: it compiles the model's decode steps
    itself (CompileConfig: fullgraph=False, CUDA graphs). Forced on the CPU here through the
    config's all-devices switch; the hooks' wrappers break the graph and the rest compiles."""
    from transformers import CompileConfig

    config = CompileConfig(mode="default")
    if not hasattr(config, "_compile_all_devices"):
        pytest.skip("this transformers release compiles decode steps on CUDA only")
    config._compile_all_devices = True
    torch._dynamo.reset()
    model, kwargs, _ = case(family, [(2, 1, 3), (0, 1, 1)])
    try:
        with torch.no_grad(), idselect.patch(model, keep=3):
            eager = model.generate(**kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
            compiled = model.generate(**kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                      cache_implementation="static", compile_config=config)
            assert getattr(model, "_compiled_call", None) is not None  # generate() did compile
    finally:
        torch._dynamo.reset()
    assert torch.equal(compiled, eager)
