"""lmms-eval runs through the plugin's entry points, offline, on a tiny random LLaVA saved to
disk and the five-question task in tests/lmms_task. Skipped without lmms-eval (install it with
``bash .ci/lmms.sh``, which also runs these tests).

The tiny model's answers mean nothing and barely depend on the image; what is checked is the
plumbing: registration, loading + patching, pruning counts, batches, two processes, the
statistics in the results JSON, and that keep=all answers exactly as lmms-eval's own model.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lmms_eval")

from idselect.testing import tiny  # noqa: E402
from test_evaluate import save_tiny_llava_with_processor  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TASK_DIR = os.path.join(HERE, "lmms_task")
QUESTIONS = 5
TOKENS_PER_IMAGE = 16  # the tiny LLaVA: 28 px images, 7 px patches
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _name_every_token(checkpoint):
    """Give every id of the tiny model's vocabulary a word, so that no answer decodes to ""."""
    path = os.path.join(checkpoint, "tokenizer.json")
    with open(path) as f:
        spec = json.load(f)
    used = set(spec["model"]["vocab"].values())
    spec["model"]["vocab"].update({f"w{i}": i for i in range(tiny.VOCAB) if i not in used})
    with open(path, "w") as f:
        json.dump(spec, f)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny_llava"))
    save_tiny_llava_with_processor(path)
    _name_every_token(path)
    return path


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_lmms_eval(out_dir, model, model_args, batch_size=1, processes=1):
    """One lmms-eval run from the command line; returns (results JSON, {doc_id: answer}, output)."""
    command = ["-m", "lmms_eval", "--model", model, "--model_args", model_args, "--tasks", "idselect_tiny_vqa",
               "--include_path", TASK_DIR, "--batch_size", str(batch_size), "--output_path", str(out_dir),
               "--log_samples", "--verbosity", "INFO"]
    env = {**os.environ, **OFFLINE}
    if processes > 1:
        # accelerate's multi-process launcher; ACCELERATE_USE_CPU makes it a gloo (CPU) run.
        env["ACCELERATE_USE_CPU"] = "1"
        command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port())] + command
    else:
        command += ["--device", "cpu"]
    done = subprocess.run([sys.executable] + command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    results = glob.glob(os.path.join(str(out_dir), "*", "*_results.json"))
    samples = glob.glob(os.path.join(str(out_dir), "*", "*_samples_idselect_tiny_vqa.jsonl"))
    assert done.returncode == 0 and len(results) == 1 and len(samples) == 1, output[-6000:]
    with open(results[0]) as f:
        summary = json.load(f)
    with open(samples[0]) as f:
        answers = {row["doc_id"]: row["filtered_resps"] for row in map(json.loads, f)}
    assert sorted(answers) == list(range(QUESTIONS)), output[-3000:]
    return summary, answers, output


def idselect_numbers(summary):
    """The plugin's record in the results JSON ("throughput", keys avg_idselect_*)."""
    prefix = "avg_idselect_"
    return {key[len(prefix):]: value for key, value in summary["throughput"].items() if key.startswith(prefix)}


def test_entry_points_register_the_models():
    from lmms_eval.models import get_model, list_available_models

    assert {"idselect", "idselect_llava_hf"} <= set(list_available_models())
    model_class = get_model("idselect")
    assert model_class.__name__ == "IdSelectHuggingface" and model_class.is_simple is False


def test_pruned_run_with_batches(checkpoint, tmp_path):
    summary, answers, output = run_lmms_eval(tmp_path, "idselect", f"pretrained={checkpoint},keep=4,gamma=10",
                                             batch_size=2)
    numbers = idselect_numbers(summary)
    # 5 prompts in batches of 2: three generate() calls, each with images.
    assert numbers["generate_calls"] == numbers["prefills"] == 3
    assert numbers["visual_tokens_before"] == QUESTIONS * TOKENS_PER_IMAGE
    assert numbers["visual_tokens_after"] == QUESTIONS * 4 < numbers["visual_tokens_before"]
    assert numbers["select_ms"] > 0 and numbers["keep_tokens"] == 4 and numbers["gamma"] == 10 and numbers["topk"] == 0
    assert summary["config"]["model_args"].endswith("keep=4,gamma=10")
    assert all(answer.strip() for answer in answers.values())
    assert "idselect: settings {'keep': 4, 'gamma': 10.0" in output


def test_topk_baseline_through_model_args(checkpoint, tmp_path):
    summary, _, output = run_lmms_eval(tmp_path, "idselect", f"pretrained={checkpoint},keep=4,selection=topk")
    numbers = idselect_numbers(summary)
    assert numbers["topk"] == 1 and numbers["visual_tokens_after"] == QUESTIONS * 4
    assert "'selection': 'topk'" in output


def test_keep_all_answers_as_lmms_evals_own_model(checkpoint, tmp_path):
    pytest.importorskip("decord")  # lmms-eval's llava_hf module imports it
    # lmms-eval's own LLaVA model, unpatched (its default device_map "" fails on transformers 5).
    _, reference, _ = run_lmms_eval(tmp_path / "own", "llava_hf", f"pretrained={checkpoint},device_map=cpu,dtype=float32")
    assert all(answer.strip() for answer in reference.values())
    for model, batch_size in [("idselect", 1), ("idselect", 2), ("idselect_llava_hf", 1)]:
        summary, answers, _ = run_lmms_eval(tmp_path / f"{model}{batch_size}", model,
                                            f"pretrained={checkpoint},dtype=float32,keep=all", batch_size)
        assert answers == reference, (model, batch_size)
        numbers = idselect_numbers(summary)
        assert numbers["visual_tokens_before"] == numbers["visual_tokens_after"] == QUESTIONS * TOKENS_PER_IMAGE
        assert numbers["keep_fraction"] == 1.0


def test_family_model_prunes(checkpoint, tmp_path):
    pytest.importorskip("decord")
    summary, _, _ = run_lmms_eval(tmp_path, "idselect_llava_hf", f"pretrained={checkpoint},keep=0.25,importance=saliency")
    numbers = idselect_numbers(summary)
    assert numbers["prefills"] == QUESTIONS and numbers["keep_fraction"] == 0.25
    assert numbers["visual_tokens_after"] == QUESTIONS * 4 < numbers["visual_tokens_before"] == QUESTIONS * 16


def test_two_processes(checkpoint, tmp_path):
    """accelerate, two CPU processes: each patches its own replica; the statistics in the
    results JSON are summed over both, and each process logs its own."""
    summary, answers, output = run_lmms_eval(tmp_path, "idselect", f"pretrained={checkpoint},keep=4",
                                             batch_size=2, processes=2)
    numbers = idselect_numbers(summary)
    assert numbers["processes"] == 2
    assert "patched LlavaForConditionalGeneration on rank 0" in output and "on rank 1:" in output
    assert "idselect: rank 0 of 2" in output and "idselect: rank 1 of 2" in output
    # lmms-eval pads the ranks to equal request counts: the padding prompts run too.
    assert numbers["visual_tokens_before"] >= QUESTIONS * TOKENS_PER_IMAGE
    assert numbers["visual_tokens_after"] * 4 == numbers["visual_tokens_before"]
    assert all(answer.strip() for answer in answers.values())


def test_errors_at_load(checkpoint, tmp_path):
    from lmms_eval.models import get_model
    from transformers import LlamaForCausalLM

    model_class = get_model("idselect")
    with pytest.raises(ValueError, match="keep must be .* got keep='lots'"):
        model_class(pretrained=checkpoint, keep="lots", device="cpu")
    with pytest.raises(ValueError, match="keep is required"):
        model_class(pretrained=checkpoint, device="cpu")
    with pytest.raises(TypeError, match="unknown model_args \\['kep'\\]"):
        model_class(pretrained=checkpoint, keep=4, kep=4, device="cpu")
    LlamaForCausalLM(tiny._text()).save_pretrained(tmp_path / "llama")
    with pytest.raises(TypeError, match="model_type 'llama' .* is not supported; supported: .*llava"):
        model_class(pretrained=str(tmp_path / "llama"), keep=4, device="cpu")


def test_clean_unpatches_and_frees_the_model(checkpoint):
    from lmms_eval.models import get_model

    lm = get_model("idselect")(pretrained=checkpoint, keep=4, device="cpu", batch_size=2)
    model = lm.model
    assert getattr(model.model, "_idselect_handle", None) is lm._idselect.handle and "generate" in model.__dict__
    assert lm.processor.tokenizer.padding_side == "left"
    lm.clean()  # what lmms-eval does after generating
    assert getattr(model.model, "_idselect_handle", None) is None and "generate" not in model.__dict__
    assert "_model" not in vars(lm) and lm._idselect.model is None
