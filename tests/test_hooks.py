"""idselect.patch on tiny random-weight LLaVA, LLaVA-NeXT and Video-LLaVA (no downloads)."""
import copy

import pytest
import torch

import idselect
from idselect.testing.cases import MODELS, build, case

FAMILIES = list(MODELS)
GEN = dict(max_new_tokens=6, do_sample=False)


def llm_input_lengths(model):
    """Records the sequence length of every call into the LLM's last decoder layer (relevance
    at a later layer - Qwen3.5's first attention layer - runs the layers before it on the whole
    prompt, and stops there)."""
    lengths = []
    layer = model.model.language_model.layers[-1]
    handle = layer.register_forward_pre_hook(lambda m, a, kw: lengths.append((a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
    return lengths, handle


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_everything_is_exact_noop(family):
    model, kwargs, counts = case(family, [(3, 1, 4)])
    with torch.no_grad():
        logits = model(**kwargs).logits
        generated = model.generate(**kwargs, **GEN)
        with idselect.patch(model, keep=max(counts)) as handle:
            assert torch.equal(model(**kwargs).logits, logits)
            assert torch.equal(model.generate(**kwargs, **GEN), generated)
            assert handle.last_stats["visual_tokens_after"] == handle.last_stats["visual_tokens_before"] == sum(counts)
        with idselect.patch(model, keep=1.0):
            assert torch.equal(model(**kwargs).logits, logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("keep", [5, 0.25])
def test_llm_receives_text_plus_kept_tokens(family, keep):
    model, kwargs, counts = case(family, [(3, 2, 4)])
    text = int(kwargs["attention_mask"].sum()) - sum(counts)
    budgets = [min(keep, n) if isinstance(keep, int) else max(1, round(keep * n)) for n in counts]
    lengths, hook = llm_input_lengths(model)
    with torch.no_grad(), idselect.patch(model, keep=keep) as handle:
        logits = model(**kwargs).logits
    hook.remove()
    assert lengths == [text + sum(budgets)]
    assert logits.shape[1] == text + sum(budgets)
    stats = handle.last_stats
    assert stats["visual_tokens_before"] == sum(counts) and stats["visual_tokens_after"] == sum(budgets)
    assert stats["sequence_length_after"] == text + sum(budgets) and stats["select_ms"] >= stats["importance_ms"] >= 0


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_equals_own_greedy_forward(family):
    """With saliency importance (which appended tokens cannot change), every generated token
    is the argmax of the patched model's own forward over prompt + generated tokens: the KV
    cache, positions and mask of the decode steps are right."""
    if not idselect.hooks.REGISTRY[family].has_saliency(MODELS[family](0)):
        pytest.skip("no [CLS] saliency; covered by the oracle tests in test_generation_patterns.py")
    model, kwargs, _ = case(family, [(3, 1, 5)])
    with torch.no_grad(), idselect.patch(model, keep=6, importance="saliency"):
        result = model.generate(**kwargs, **GEN, output_logits=True, return_dict_in_generate=True)
        out = result.sequences
        new = out[:, kwargs["input_ids"].shape[1]:]
        full = dict(kwargs, input_ids=out, attention_mask=torch.ones_like(out))
        logits = model(**full).logits
    step_logits = logits[:, -new.shape[1] - 1 : -1]
    assert torch.equal(step_logits.argmax(-1), new)
    torch.testing.assert_close(torch.stack(result.logits, dim=1), step_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rows", [[(2, 1, 3), (6, 1, 1)], [(2, 1, 3), (1, 2, 2)]], ids=["same-images", "uneven-pruning"])
def test_left_padded_batch_equals_each_prompt_alone(family, rows):
    model, kwargs, counts = case(family, rows)
    with torch.no_grad(), idselect.patch(model, keep=5) as handle:
        batched = model.generate(**kwargs, **GEN)
        batched_logits = model(**kwargs).logits[:, -1]
        for r in range(len(rows)):
            alone_kwargs, _ = build(family, model, [rows[r]], first_row=r)
            alone = model.generate(**alone_kwargs, **GEN)
            n = alone.shape[1] - alone_kwargs["input_ids"].shape[1]
            assert torch.equal(batched[r, -n:], alone[0, -n:]), (r, batched[r], alone[0])
            torch.testing.assert_close(model(**alone_kwargs).logits[0, -1], batched_logits[r], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_restores_model_exactly(family):
    model, kwargs, _ = case(family, [(3, 1, 4)])
    pristine = copy.deepcopy(model)
    handle = idselect.patch(model, keep=3)
    with torch.no_grad():
        model.generate(**kwargs, **GEN)
    handle.remove()
    for module in (model.model, model.model.language_model):  # instance attributes gone
        assert not any(k in module.__dict__ for k in ("forward", "get_image_features", "get_video_features"))
    assert not hasattr(model, "_idselect_handle")
    with torch.no_grad():
        assert torch.equal(model(**kwargs).logits, pristine(**kwargs).logits)
        assert torch.equal(model.generate(**kwargs, **GEN), pristine.generate(**kwargs, **GEN))


def test_unsupported_model_is_type_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50))
    with pytest.raises(TypeError, match=r"model_type 'llama'.*supported: internvl, llava, llava_next, llava_onevision, qwen2_5_vl, qwen3_5, qwen3_vl, video_llava"):
        idselect.patch(model, keep=4)


def test_patching_twice_is_an_error_until_removed():
    model, _, _ = case("llava", [(1, 1, 1)])
    handle = idselect.patch(model, keep=4)
    with pytest.raises(RuntimeError, match="already patched"):
        idselect.patch(model, keep=8)
    handle.remove()
    idselect.patch(model, keep=8).remove()


@pytest.mark.parametrize(
    "options,message",
    [({"keep": 0}, "keep must be >= 1"), ({"keep": 1.5}, r"\(0, 1\]"), ({"keep": "all"}, "keep must be an int"),
     ({"keep": 4, "importance": "attention"}, "importance must be one of"), ({"keep": 4, "alpha": 2.0}, "alpha"),
     ({"keep": 4, "gamma": -1.0}, "gamma"), ({"keep": 4, "relevance_layer": -1}, "relevance_layer")],
)
def test_bad_options(options, message):
    model, _, _ = case("llava", [(1, 1, 1)])
    with pytest.raises((TypeError, ValueError), match=message):
        idselect.patch(model, **options)
    assert not hasattr(model, "_idselect_handle")


def test_relevance_layer_out_of_range_names_the_layers_at_patch_time():
    model, _, _ = case("llava", [(1, 1, 1)])
    with pytest.raises(ValueError, match=r"relevance_layer must be in \[0, 1\] \(the LLM has 2 layers\), got relevance_layer=7"):
        idselect.patch(model, keep=4, relevance_layer=7)


def test_one_select_call_per_batch():
    calls = []

    def spy(features, scores, k, gamma, lengths):
        calls.append(features.shape)
        return idselect.select(features, scores, k, gamma, lengths)

    model, kwargs, counts = case("llava", [(2, 2, 3), (4, 1, 1)])
    with torch.no_grad(), idselect.patch(model, keep=4) as handle:
        model(**kwargs)
    default_kept = [k.tolist() for k in handle.last_stats["kept_indices"]]
    with torch.no_grad(), idselect.patch(model, keep=4, selection=spy) as handle:
        model(**kwargs)
    assert calls == [torch.Size([3, 16, 48])]
    assert [k.tolist() for k in handle.last_stats["kept_indices"]] == default_kept


@pytest.mark.parametrize("bad,error", [(lambda f, s, k, g, n: torch.zeros(f.shape[0], k), "int64 tensor of shape"),
                                       (lambda f, s, k, g, n: torch.zeros(f.shape[0], k + 1, dtype=torch.long), "shape"),
                                       (lambda f, s, k, g, n: torch.full((f.shape[0], k), 99, dtype=torch.long), "outside"),
                                       (lambda f, s, k, g, n: [0] * k, "list")])
def test_a_selection_function_returning_nonsense_is_refused_before_pruning(bad, error):
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    with torch.no_grad(), idselect.patch(model, keep=4, selection=bad), pytest.raises((TypeError, ValueError), match=error):
        model(**kwargs)


@pytest.mark.parametrize("importance", ["unified", "saliency", "relevance"])
@pytest.mark.parametrize("options", [{}, {"relevance_layer": 1}, {"relevance_rope": True}])
def test_importance_choices_run(importance, options):
    model, kwargs, _ = case("llava", [(2, 1, 3)])
    with torch.no_grad(), idselect.patch(model, keep=4, importance=importance, **options) as handle:
        out = model.generate(**kwargs, **GEN)
    assert out.shape[1] == kwargs["input_ids"].shape[1] + GEN["max_new_tokens"]
    assert handle.last_stats["visual_tokens_after"] == 4


def test_llava_next_never_keeps_newline_tokens():
    model, kwargs, counts = case("llava_next", [(2, 1, 2)])
    newline = model.model.image_newline.detach()
    seen = []
    layer = model.model.language_model.layers[0]
    hook = layer.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).detach()), with_kwargs=True)
    with torch.no_grad(), idselect.patch(model, keep=8) as handle:
        model(**kwargs)
    hook.remove()
    assert handle.last_stats["visual_tokens_after"] == 8
    hidden = seen[0][0]
    assert not any(torch.equal(row, newline) for row in hidden)


def test_video_budget_is_per_video_over_all_frames():
    from idselect.testing.cases import FRAMES, PER_FRAME

    model, kwargs, counts = case("video_llava", [(2, 0, 2)])
    with torch.no_grad(), idselect.patch(model, keep=10) as handle:
        model(**kwargs)
    assert counts == [FRAMES * PER_FRAME] and handle.last_stats["visual_tokens_after"] == 10


@pytest.mark.slow
def test_main_job_demo_runs(tmp_path, capsys):
    from idselect.tools import demo

    out = tmp_path / "kept.png"
    assert demo.main(["--repeats", "1", "--max-new-tokens", "2", "--keep", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "visual tokens: 576 -> 32" in printed and "speedup" in printed
    assert out.stat().st_size > 10_000
