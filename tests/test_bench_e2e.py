"""CI checks of the end-to-end benchmark: a smoke run at small shapes (two models into one
results file, batch 1 and 2, every variant), the backend swap it uses for the reference
variant, the dry run of the real shapes (meta-device build, one reduced-depth check), the token
and parameter counts of the Qwen3-VL and LLaVA-OneVision entries, and its flag errors."""
import json
import os
import sys

import pytest
import torch

import idselect
from idselect import reference

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_e2e  # noqa: E402

H100_GIB = 78


@pytest.mark.slow
def test_e2e_smoke_two_models_merge_into_one_file(tmp_path):
    common = ["--size", "small", "--keeps", "64", "--new-tokens", "2", "--repeats", "1", "--out-dir", str(tmp_path)]
    assert bench_e2e.main(["--models", "llava-1.5-7b", "--batches", "1", "2"] + common) == 0
    # A second call, as on separate device calls: its rows join the file.
    assert bench_e2e.main(["--models", "qwen2.5-vl-7b", "--batches", "2"] + common) == 0
    rows = json.loads((tmp_path / "e2e_small_cpu.json").read_text())
    assert sorted({(r["model"], r["batch"]) for r in rows}) == [("llava-1.5-7b", 1), ("llava-1.5-7b", 2), ("qwen2.5-vl-7b", 2)]
    for model, visual, batches in (("llava-1.5-7b", 576, (1, 2)), ("qwen2.5-vl-7b", 256, (2,))):
        for batch in batches:
            case = {r["variant"]: r for r in rows if r["model"] == model and r["batch"] == batch}
            assert sorted(case) == ["id", "oracle", "reference", "topk", "unpruned"]
            assert case["unpruned"]["keep"] == visual and case["unpruned"]["llm_tokens"] == visual + 32
            assert case["unpruned"]["prefill_speedup"] == 1.0 and case["unpruned"]["select_ms"] == 0.0
            for variant in ("id", "topk", "reference"):
                r = case[variant]
                assert r["visual_tokens"] == 64 and r["llm_tokens"] == 64 + 32
                assert r["select_ms"] > 0 and r["prefill_p10_ms"] <= r["prefill_ms"] <= r["prefill_p90_ms"]
                assert r["select_ms"] <= r["hooks_ms"] and r["vision_ms"] > 0 and r["mode"] == "eager"
                assert r["prefill_vs_oracle"] == r["prefill_ms"] / case["oracle"]["prefill_ms"]
                if variant != "reference":  # the reference reads every pick; the op and top-k read nothing
                    assert r["host_syncs"] <= case["unpruned"]["host_syncs"] + 1 and r["kernels"] > 0
            assert case["oracle"]["llm_tokens"] == 64 + 32 and case["oracle"]["generate_ms"] is None
            assert case["unpruned"]["prefill_runs"] == (11 if batch == 1 else 1)
            assert case["id"]["generate_runs"] == 3
            assert case["id"]["backend"] == idselect.backend_for("cpu") and case["reference"]["backend"] == "reference"
            assert case["id"]["prefill_vs_topk"] == case["id"]["prefill_ms"] / case["topk"]["prefill_ms"]
            assert "prefill_vs_topk" not in case["topk"]
    for name in ("e2e_small_cpu.png", "e2e_small_cpu_share.png"):
        assert (tmp_path / name).stat().st_size > 5000
    # Combining per-call files: later files win per (model, batch).
    out = tmp_path / "merged"
    assert bench_e2e.main(["--merge", str(tmp_path / "e2e_small_cpu.json"), "--out-dir", str(out)]) == 0
    assert json.loads((out / "e2e_small_cpu.json").read_text()) == rows


def test_variants_route_the_selection_through_patch():
    """The reference and device-path variants hand patch() the function itself (no private
    name is replaced); on these inputs they keep what the compiled op keeps."""
    spec = bench_e2e.build("llava-1.5-7b", "small")
    model = bench_e2e.make_model(spec, "cpu", torch.float32)
    inputs = bench_e2e.batched_inputs(spec, 2, 32, "cpu", torch.float32)
    kept = {}
    for variant in ("id", "reference", "device_path"):
        with torch.no_grad(), idselect.patch(model, keep=16, selection=bench_e2e.VARIANTS[variant]) as handle:
            model(**inputs)
        kept[variant] = [k.tolist() for k in handle.last_stats["kept_indices"]]
    assert bench_e2e.VARIANTS["reference"] is reference.select
    assert kept["reference"] == kept["id"] == kept["device_path"]


@pytest.mark.slow
def test_dry_run_real_shapes(tmp_path):
    """Meta-device builds of every real shape (parameter counts against the released
    checkpoints), one real-width reduced-depth check, every case under an H100's memory."""
    assert bench_e2e.main(["--dry-run", "--out-dir", str(tmp_path)]) == 0
    plan = json.loads((tmp_path / "e2e_real_dryrun.json").read_text())
    by_model = {r["model"]: r for r in plan["models"]}
    assert sorted(by_model) == sorted(bench_e2e.MODELS)
    for r in plan["models"]:
        assert abs(r["params_vs_known"] - 1) < 0.01, r["model"]
        for batch in (1, 8):
            assert r[f"peak_estimate_gib_b{batch}"] < H100_GIB
            assert r[f"peak_estimate_gib_b{batch}"] > r[f"peak_parts_gib_b{batch}"]["weights"] > 13
    assert by_model["qwen2.5-vl-7b-large"]["visual_tokens_expected"] == 68 * 68
    assert by_model["llava-next-7b"]["visual_tokens_expected"] == 576 + 48 * 48 + 48
    assert by_model["qwen3-vl-8b"]["visual_tokens_expected"] == 16 * 16
    assert by_model["llava-onevision-7b"]["visual_tokens_expected"] == 729 + 54 * 54 + 54
    assert all(call["fits"] for call in plan["meta"]["device_calls"])
    assert {c["model"] for c in plan["meta"]["device_calls"]} == set(bench_e2e.MODELS)

    assert bench_e2e.main(["--dry-run", "--depth", "2", "--models", "llava-1.5-7b", "--out-dir", str(tmp_path)]) == 0
    check = json.loads((tmp_path / "e2e_real_dryrun.json").read_text())["models"][0]["depth_check"]
    assert check["visual_tokens_before"] == 576 and check["sequence_length_before"] == 608
    assert check["visual_tokens_after"] == 16 and check["sequence_length_after"] == 48


@pytest.mark.parametrize("name, visual", [("qwen3-vl-8b", 16 * 16), ("llava-onevision-7b", 729 + 54 * 54 + 54)])
def test_qwen3_vl_and_onevision_token_and_parameter_counts(name, visual):
    """What the hooks see in a pruned prefill of the small build (the real token counts: 512 px
    in 16 px patches merged 2 x 2; 768 px anyres_max_9 = base + 2 x 2 crops of 27 x 27 patches,
    plus a newline per grid row), and the real shapes' parameter count against the released
    checkpoint within the dry run's 1%."""
    spec = bench_e2e.build(name, "small")
    assert spec.visual_tokens == visual
    model = bench_e2e.make_model(spec, "cpu", torch.float32)
    inputs = bench_e2e.batched_inputs(spec, 2, 32, "cpu", torch.float32)
    with torch.no_grad(), idselect.patch(model, keep=16) as handle:
        model(**inputs, use_cache=True, logits_to_keep=1)
    stats = handle.last_stats
    assert stats["visual_tokens_before"] == 2 * visual and stats["visual_tokens_after"] == 2 * 16
    assert stats["sequence_length_before"] == visual + 32 and stats["sequence_length_after"] == 16 + 32
    del model
    real = bench_e2e.build(name, "real")
    with torch.device("meta"):
        params = bench_e2e.param_count(real.cls(real.config))
    assert abs(params / bench_e2e.KNOWN_PARAMS[name] - 1) < 0.01
    if name == "qwen3-vl-8b":
        assert params == 8_767_123_696  # the Hub's exact safetensors total for Qwen/Qwen3-VL-8B-Instruct


@pytest.mark.parametrize("argv, message", [
    (["--models", "llava-2"], "unknown model 'llava-2'"),
    (["--keeps", "0"], "--keeps"),
    (["--batches", "x"], "--batches"),
    (["--variants", "fast"], "--variants"),
    (["--depth", "2"], "--depth needs --size real"),
    (["--size", "real", "--depth", "1"], "--depth must be >= 2"),
    (["--dry-run", "--device", "cuda"], "--dry-run runs on the CPU"),
    (["--merge", "/nonexistent.json"], "--merge: no such file"),
])
def test_flag_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench_e2e.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
