"""The vLLM Qwen2.5-VL and Qwen3-VL architectures (idselect/vllm/qwen.py) against the hooks:
vLLM's greedy tokens must equal ``idselect.patch(model, keep=k)`` (relevance, the family's default)
on the same tiny weights, whose own oracle is the unpatched model on a hand-pruned sequence
(tests/test_hooks_qwen_internvl.py, tests/test_hooks_qwen3_vl.py). Mixed budgets in one batch,
two images per prompt, square, wide and tall images, chunked prefill, tensor parallelism,
`vllm serve`, refusals; and the premise that the position rule matters: vLLM's generic
rule for text after a pruned image gives other tokens.

Runs where vLLM is installed (.ci/vllm.sh); skipped elsewhere. In-process engine (one per
module and family), float32.
"""
import os
import textwrap
import urllib.error

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed (the vLLM CI job installs it: .ci/vllm.sh)")

import idselect  # noqa: E402
from idselect import vllm as idv  # noqa: E402
from idselect.testing.model_dirs import (QWEN_IMAGE_PART, qwen_prompt_ids, qwen_vocabulary,  # noqa: E402
                                         sample_qwen_image, save_tiny_qwen)
from vllm_serving import child_engine, data_url, post, served  # noqa: E402

ENGINE_KEEP = 4
NEW_TOKENS = 8
ENGINE_ARGS = dict(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 << 20, max_model_len=512, seed=0,
                   limit_mm_per_prompt={"image": 2})
#: (words, image seeds): sample_qwen_image sizes cycle square, wide, tall, resized (16, 15, 12,
#: 35 visual tokens for Qwen2.5-VL; 16, 15, 12, 30 for Qwen3-VL); one prompt with two images.
PROMPTS = [(["describe", "the", "image"], [0]), (["what", "is", "in", "this", "picture"], [1]), (["colour"], [2]),
           (["count", "and", "shape"], [3, 6]), (["left", "right"], [5]), (["please", "describe", "the", "top"], [7]),
           (["top"], [10])]
#: None: the engine's keep; 40 keeps every image whole.
BUDGETS = [None, 1, 3, 8, 13, 40]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def folder(request, tmp_path_factory):
    """(path, the in-memory transformers model the folder holds, its processor, family)."""
    from transformers import AutoProcessor

    path = str(tmp_path_factory.mktemp(request.param))
    model = save_tiny_qwen(path, seed=0, family=request.param)
    return path, model, AutoProcessor.from_pretrained(path), request.param


_ORACLE = {}


def hooks_run(folder, words, seeds, keep, gamma=20.0):
    """The oracle: greedy tokens of the transformers model patched by idselect's hooks (the
    family's default importance, relevance) and the visual tokens its LLM received (computed
    once per case and family: several tests ask for the same ones)."""
    key = (folder[3], tuple(words), tuple(seeds), keep, gamma)
    if key not in _ORACLE:
        _ORACLE[key] = _hooks_run(folder, words, seeds, keep, gamma)
    return _ORACLE[key]


def _hooks_run(folder, words, seeds, keep, gamma):
    _, model, processor, _ = folder
    text = " ".join(["user", ":"] + ["".join(QWEN_IMAGE_PART)] * len(seeds) + list(words) + ["assistant", ":"])
    inputs = processor(text=text, images=[sample_qwen_image(s) for s in seeds], return_tensors="pt")
    with idselect.patch(model, keep=keep, gamma=gamma) as handle:
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        visual = handle.last_stats["visual_tokens_after"]
    return out[0, inputs["input_ids"].shape[1]:].tolist(), visual


def request(words, seeds, **mm_kwargs):
    images = [sample_qwen_image(s) for s in seeds]
    req = {"prompt_token_ids": qwen_prompt_ids(words, len(seeds)),
           "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}
    if mm_kwargs:
        req["mm_processor_kwargs"] = mm_kwargs
    return req


@pytest.fixture(scope="module")
def engine(folder):
    llm = vllm.LLM(folder[0], hf_overrides=idv.engine_overrides(folder[3], keep=ENGINE_KEEP), **ENGINE_ARGS)
    yield llm
    del llm


def greedy():
    return vllm.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)


def test_greedy_tokens_equal_the_hooks_with_mixed_budgets_in_one_batch(folder, engine):
    cases = [(words, seeds, keep) for words, seeds in PROMPTS for keep in BUDGETS]
    requests = [request(w, s, **({} if k is None else {"idselect_keep": k})) for w, s, k in cases]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    for (words, seeds, keep), out in zip(cases, outputs):
        k = ENGINE_KEEP if keep is None else keep
        tokens, visual = hooks_run(folder, words, seeds, k)
        # The LLM sees as many placeholders as the hooks keep: a pruned prompt, never a silent full one.
        assert len(out.prompt_token_ids) == 4 + len(words) + 2 * len(seeds) + visual, (words, seeds, k)
        assert list(out.outputs[0].token_ids) == tokens, (words, seeds, k)


def test_gamma_per_request(folder, engine):
    requests = [request(["describe"], [8], idselect_keep=5, idselect_gamma=g) for g in (0.0, 2.0, 200.0)]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    for g, out in zip((0.0, 2.0, 200.0), outputs):
        assert list(out.outputs[0].token_ids) == hooks_run(folder, ["describe"], [8], 5, gamma=g)[0], g


def test_one_pass_per_encoder_step_without_sync(folder, engine, monkeypatch):
    """Under the engine: an encoder step's images (several sizes and budgets) are pruned in one
    pass (prune_step: relevance per run of equal-size images, one selection, one gather) that
    issues no host synchronisation, and whose kernels do not grow with the number of images."""
    from idselect.testing.counting import count_ops
    from idselect.vllm import qwen

    calls = []
    real = qwen.RelevancePruning.prune_step

    def counted(self, embeddings, grids, keeps, gammas, queries):
        with count_ops() as counts:
            out = real(self, embeddings, grids, keeps, gammas, queries)
        calls.append((len(embeddings), len({tuple(g) for g in grids}), len(set(zip(keeps, gammas))), counts))
        return out

    monkeypatch.setattr(qwen.RelevancePruning, "prune_step", counted)
    keeps = [1, 3, 5, 3, 100, 5, 9, 2]
    requests = [request(["describe"], [300 + i], idselect_keep=k) for i, k in enumerate(keeps)]
    engine.generate(requests, greedy(), use_tqdm=False)
    for first, count in ((400, 6), (500, 2)):  # one size (seeds = 0 mod 4), one budget, new images
        engine.generate([request(["describe"], [first + 4 * i], idselect_keep=3) for i in range(count)], greedy(),
                        use_tqdm=False)
    assert calls and max(n for n, _, _, _ in calls) >= 4, [c[:3] for c in calls]  # several images in a step
    assert all(c.syncs == 0 for _, _, _, c in calls), [(n, dict(c.sync_ops)) for n, _, _, c in calls if c.syncs]
    single = {n: c.kernels for n, sizes, groups, c in calls if sizes == 1 and groups == 1}
    assert len(single) >= 2 and len(set(single.values())) == 1, single  # the same kernels for 2 or 6 images


def test_the_last_prompt_token_is_the_query(folder, engine):
    """Relevance reads the prompt's last token: two prompts that differ only there score the
    same image differently (the oracle says so), and vLLM follows; the token is part of the
    image's multimodal hash, so the second request does not reuse the first one's selection."""
    vocab = qwen_vocabulary()
    prompts = [qwen_prompt_ids(["describe"], 1)[:-1] + [vocab[last]] for last in ("left", "right", "top")]
    requests = [{"prompt_token_ids": ids, "multi_modal_data": {"image": sample_qwen_image(3)},
                 "mm_processor_kwargs": {"idselect_keep": 3}} for ids in prompts]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    _, model, processor, _ = folder
    expected = []
    for ids in prompts:
        last = next(word for word, i in vocab.items() if i == ids[-1])
        text = " ".join(["user", ":", "".join(QWEN_IMAGE_PART), "describe", "assistant", last])
        inputs = processor(text=text, images=[sample_qwen_image(3)], return_tensors="pt")
        with idselect.patch(model, keep=3) as handle:
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
            expected.append((out[0, inputs["input_ids"].shape[1]:].tolist(), repr(handle.last_stats["kept_indices"])))
    assert len({kept for _, kept in expected}) > 1, "the oracle's kept sets do not depend on the last token here"
    assert [list(o.outputs[0].token_ids) for o in outputs] == [tokens for tokens, _ in expected]


def test_the_oracle_tells_selections_apart(folder):
    """The premise of the equality test: on these prompts the answer depends on which tokens are
    kept, so a vLLM path that pruned differently (not at all, or by top-k) fails."""
    whole = pruned_by_topk = 0
    _, model, processor, _ = folder
    for words, seeds in PROMPTS:
        text = " ".join(["user", ":"] + ["".join(QWEN_IMAGE_PART)] * len(seeds) + list(words) + ["assistant", ":"])
        inputs = processor(text=text, images=[sample_qwen_image(s) for s in seeds], return_tensors="pt")
        unpruned = hooks_run(folder, words, seeds, 1000)[0]
        for keep in (2, 3, 4, 8, 13):  # (keep 1 is the same pick either way: the most important token)
            id_tokens = hooks_run(folder, words, seeds, keep)[0]
            whole += id_tokens != unpruned
            with idselect.patch(model, keep=keep, selection="topk"):
                topk = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
            pruned_by_topk += id_tokens != topk[0, inputs["input_ids"].shape[1]:].tolist()
    assert whole >= 15 and pruned_by_topk >= 4, (whole, pruned_by_topk)


# -- other processes: chunked prefill, the generic position rule, tensor parallelism, the server ----

#: vLLM's EVS rule for Qwen2.5-VL, run first in an engine's process: text after an image restarts
#: at its base + the grid's width (ours: + max(height, width)).
GENERIC_RULE = textwrap.dedent(
    """
    from idselect.vllm import qwen

    ours = qwen.RelevancePruning.get_mrope_input_positions

    def generic(self, input_tokens, mm_features):
        positions, delta = ours(self, input_tokens, mm_features)
        merge = self.config.vision_config.spatial_merge_size
        positions = positions.clone()
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            t, h, w = feature.data["image_grid_thw"].data.tolist()
            end = feature.mm_position.offset + feature.mm_position.length
            shift = max(h, w) // merge - w // merge  # ours minus the generic rule's extent
            positions[:, end:] -= shift
            delta -= shift
        return positions, delta

    qwen.RelevancePruning.get_mrope_input_positions = generic
    """
)


def run_child(tmp_path, folder, cases, extra=None, env_extra=None, prelude="", overrides=None, expect_error=False):
    """An engine in a process of its own (vllm_serving.child_engine) with ENGINE_ARGS and ``extra``."""
    overrides = idv.engine_overrides(folder[3], keep=ENGINE_KEEP) if overrides is None else overrides
    return child_engine(tmp_path, folder[0], overrides, dict(ENGINE_ARGS, **(extra or {})), cases, "qwen", NEW_TOKENS,
                        env_extra, prelude=prelude, expect_error=expect_error)


def expected(folder, cases):
    return [hooks_run(folder, words, seeds, ENGINE_KEEP if keep is None else keep)[0] for words, seeds, keep in cases]


def test_chunked_prefill_splits_images(tmp_path, folder):
    """max_num_batched_tokens=40 (the encoder's budget too: one unpruned image of at most 36
    tokens per step): long prompts are prefilled in chunks that split the kept tokens of an
    image, whose positions are then written in two steps; the tokens stay the hooks'."""
    cases = [(words, seeds, keep) for words, seeds in PROMPTS[3:5] for keep in (3, 13, 40)]
    cases += [(["describe"] * 30, [2, 3], 9)]
    assert run_child(tmp_path, folder, cases, {"max_num_batched_tokens": 40}) == expected(folder, cases)


def test_the_generic_position_rule_gives_other_tokens(tmp_path, folder):
    """The equality test checks the position rule: with vLLM's generic rule for text after a
    pruned image (its base + the grid's width, not + max(height, width)), tall images give
    other tokens than the hooks'."""
    if folder[3] != "qwen2_5_vl":
        pytest.skip("one family shows it; the rule code is shared")
    cases = [(words, [2], keep) for words, _ in PROMPTS for keep in (1, 3, 6)]
    tokens = run_child(tmp_path, folder, cases, env_extra={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},  # patched in this process
                       prelude=GENERIC_RULE)
    oracle = expected(folder, cases)
    assert sum(a != b for a, b in zip(tokens, oracle)) >= 3, "the generic rule gives the hooks' tokens here"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="tensor parallelism over 2 CPU ranks needs 2 cores")
def test_tensor_parallel_two_ranks(tmp_path, folder):
    """TP = 2: each rank holds 2 of the LLM's 4 query heads; only the reduction of the relevance
    across ranks makes both ranks keep the hooks' tokens."""
    if folder[3] != "qwen3_vl":
        pytest.skip("one family (the relevance code is shared): Qwen3-VL, with q/k norms")
    cases = [(words, seeds, keep) for words, seeds in PROMPTS[:4] for keep in (None, 2)]
    tokens = run_child(tmp_path, folder, cases, {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"},
                       {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    assert tokens == expected(folder, cases)


def test_refusals_at_start(tmp_path, folder):
    if folder[3] != "qwen2_5_vl":
        pytest.skip("one family (check_engine is shared)")
    in_process = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the engine's own error, not the front end's summary
    error = run_child(tmp_path, folder, [(["describe"], [0], None)], {"video_pruning_rate": 0.5}, in_process,
                      expect_error=True)
    assert "video pruning" in error and "serves images only" in error, error
    overrides = dict(idv.engine_overrides(folder[3], keep=4), idselect_importance="saliency")
    error = run_child(tmp_path, folder, [(["describe"], [0], None)], env_extra=in_process, overrides=overrides,
                      expect_error=True)
    assert f"not available in vLLM for {folder[3]}: only 'relevance'" in error, error


@pytest.mark.parametrize("options, message", [
    ({"idselect_keep": 0}, r"idselect_keep'\] must be >= 1"),
    ({"idselect_query_token": 5}, r"idselect_query_token is set by the processor from the prompt"),
    ({"idselect_importance": "saliency"}, r"unknown mm_processor_kwargs \['idselect_importance'\]"),
])
def test_bad_request_options_are_refused(engine, options, message):
    with pytest.raises(Exception, match=message):
        engine.generate([request(["describe"], [0], **options)], greedy(), use_tqdm=False)


def test_prompts_and_media_the_architecture_refuses(engine):
    ends_with_image = {"prompt_token_ids": qwen_prompt_ids([], 1)[:4],  # user : <|vision_start|><|image_pad|>
                       "multi_modal_data": {"image": sample_qwen_image(0)}}
    with pytest.raises(Exception, match=r"the prompt ends with an image placeholder"):
        engine.generate([ends_with_image], greedy(), use_tqdm=False)
    import numpy as np

    video = {"prompt_token_ids": qwen_prompt_ids(["describe"], 0), "multi_modal_data": {"video": np.zeros((2, 56, 56, 3),
                                                                                                         dtype=np.uint8)}}
    with pytest.raises(Exception, match=r"video"):
        engine.generate([video], greedy(), use_tqdm=False)
    # and the engine still serves
    out = engine.generate([request(["describe"], [0])], greedy(), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == NEW_TOKENS


def test_vllm_serve_chat_completion(tmp_path, folder):
    if folder[3] != "qwen3_vl":
        pytest.skip("one family through the server (the processor path is shared)")
    vocab = qwen_vocabulary()
    with served(tmp_path, folder[0], idv.engine_overrides(folder[3], keep=ENGINE_KEEP), max_model_len=512) as url:
        for keep in (None, 2, 9):
            body = {"model": folder[0], "temperature": 0.0, "max_tokens": NEW_TOKENS, "return_token_ids": True,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": data_url(sample_qwen_image(2))}},
                        {"type": "text", "text": "describe the image"}]}]}
            if keep is not None:
                body["mm_processor_kwargs"] = {"idselect_keep": keep}
            try:
                reply = post(f"{url}/v1/chat/completions", body)
            except urllib.error.HTTPError as error:
                pytest.fail(f"keep={keep}: HTTP {error.code}: {error.body}")
            tokens, visual = hooks_run(folder, ["describe", "the", "image"], [2], ENGINE_KEEP if keep is None else keep)
            assert reply["prompt_token_ids"].count(vocab["<|image_pad|>"]) == visual, reply["prompt_token_ids"]
            assert reply["choices"][0]["token_ids"] == tokens, keep
