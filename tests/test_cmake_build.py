"""The CMake build for C++ users: it compiles against libtorch, owns the schema, and its
kernel gives the same picks as the Python package's."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import idselect._ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_schema_strings_agree():
    with open(os.path.join(ROOT, "csrc", "schema.cpp")) as f:
        assert f'm.def("{idselect._ops.SCHEMA}");' in f.read()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_library_builds_and_matches(tmp_path):
    prefix = subprocess.run(
        [sys.executable, "-c", "import torch.utils; print(torch.utils.cmake_prefix_path)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    lib = build / "libidselect_ops.so"
    g = torch.Generator().manual_seed(0)
    feats, scores = torch.randn(3, 200, 40, generator=g), torch.rand(3, 200, generator=g)
    torch.save((feats, scores), tmp_path / "inputs.pt")
    # A fresh process without the Python package: the library must bring its own schema.
    script = textwrap.dedent(
        f"""
        import torch
        torch.ops.load_library({str(lib)!r})
        feats, scores = torch.load({str(tmp_path / 'inputs.pt')!r})
        torch.save(torch.ops.idselect.select(feats, scores, 50, 20.0), {str(tmp_path / 'out.pt')!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert torch.equal(torch.load(tmp_path / "out.pt"), torch.ops.idselect.select(feats, scores, 50, 20.0))
