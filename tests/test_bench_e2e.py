"""CI smoke run of the end-to-end benchmark (small shapes, one model, few tokens)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_e2e  # noqa: E402


@pytest.mark.parametrize("model", ["llava-1.5-7b", "qwen2.5-vl-7b"])
def test_e2e_smoke(tmp_path, model):
    assert bench_e2e.main(["--size", "small", "--models", model, "--keeps", "64", "--new-tokens", "2",
                           "--repeats", "1", "--out-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "e2e_small_cpu.json").read_text())
    assert [r["keep"] for r in rows] == [576 if model.startswith("llava") else 256, 64]
    assert rows[1]["visual_tokens"] == 64 and rows[1]["llm_tokens"] == 64 + 32
    assert rows[0]["prefill_speedup"] == 1.0 and rows[1]["select_ms"] > 0
    assert (tmp_path / "e2e_small_cpu.png").stat().st_size > 5000
