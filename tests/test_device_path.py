"""The batched tensor-op path (idselect.device_path, the default for CUDA tensors) against the
reference, on the CPU (the path is device-agnostic), and the routing that picks it."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import idselect
from idselect import _ops, device_path
from selection_checks import assert_matches_reference
from test_select import clustered_features, random_case

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(60))
def test_matches_reference_random_shapes(seed, device):
    feats, scores, k, gamma, lengths = random_case(seed)
    to = lambda t: None if t is None else t.to(device)
    got = device_path.select(to(feats), to(scores), k, gamma, to(lengths))
    assert got.device.type == device
    assert_matches_reference(got, feats, scores, k, gamma, lengths)


@pytest.mark.parametrize("N,D,k", [(3000, 64, 3000), (576, 4096, 64)])
def test_matches_reference_large(N, D, k):
    g = torch.Generator().manual_seed(N + D)
    feats = clustered_features(1, N, D, 40, g, spread=0.3)
    scores = torch.rand(1, N, generator=g)
    assert_matches_reference(device_path.select(feats, scores, k, 20.0), feats, scores, k, 20.0)


def test_k_one_k_n_and_empty():
    g = torch.Generator().manual_seed(4)
    feats, scores = torch.randn(3, 9, 5, generator=g), torch.rand(3, 9, generator=g)
    assert torch.equal(device_path.select(feats, scores, 1), scores.argmax(dim=1, keepdim=True))
    full = device_path.select(feats, scores, 9)
    assert all(sorted(r) == list(range(9)) for r in full.tolist())
    assert_matches_reference(full, feats, scores, 9, 20.0)
    assert device_path.select(feats, scores, 0).shape == (3, 0)
    assert device_path.select(feats[:0], scores[:0], 0).shape == (0, 0)


def test_ties_go_to_the_smallest_index():
    feats = torch.eye(5)[None]
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert device_path.select(feats, scores, 5).tolist() == [[1, 3, 0, 2, 4]]
    assert device_path.select(torch.randn(2, 10, 8), torch.zeros(2, 10), 6).tolist() == [list(range(6))] * 2


def test_ragged_and_out_of_range_lengths_are_clamped_on_the_device():
    g = torch.Generator().manual_seed(9)
    feats = clustered_features(5, 80, 16, 4, g)
    scores = torch.rand(5, 80, generator=g)
    scores[:, 40:] += 5.0  # the best tokens lie beyond most lengths
    lengths = torch.tensor([80, 41, 3, -7, 500])  # 3 and -7 read as k = 10, 500 as N
    got = device_path.select(feats, scores, 10, 20.0, lengths)
    assert_matches_reference(got, feats, scores, 10, 20.0, lengths)
    assert (got[2] < 10).all() and (got[3] < 10).all() and (got[1] < 41).all()


def test_rows_independent_of_batch_and_strides():
    g = torch.Generator().manual_seed(7)
    feats = clustered_features(6, 300, 96, 5, g)
    scores = torch.rand(6, 300, generator=g)
    lengths = torch.tensor([300, 250, 64, 299, 100, 200])
    batched = device_path.select(feats, scores, 64, 20.0, lengths)
    assert_matches_reference(batched, feats, scores, 64, 20.0, lengths)
    strided = device_path.select(feats.transpose(0, 1).contiguous().transpose(0, 1), scores.t().contiguous().t(), 64, 20.0, lengths)
    assert torch.equal(strided, batched)
    for b in range(6):
        alone = device_path.select(feats[b : b + 1], scores[b : b + 1], 64, 20.0, lengths[b : b + 1])
        assert_matches_reference(alone, feats[b : b + 1], scores[b : b + 1], 64, 20.0, lengths[b : b + 1])


def test_hostile_values_follow_the_documented_rule():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 40, 24, generator=g)
    feats[0, 2] = 0.0
    feats[0, 5, 3] = math.nan
    feats[1, 9, 0] = math.inf
    scores = torch.rand(2, 40, generator=g)
    scores[0, [1, 4, 7, 11]] = torch.tensor([math.nan, math.inf, -3.0, -math.inf])
    for gamma in (0.0, 20.0):
        got = device_path.select(feats, scores, 30, gamma)
        assert_matches_reference(got, feats, scores, 30, gamma)


def test_tf32_setting_does_not_change_the_arithmetic():
    g = torch.Generator().manual_seed(11)
    feats = clustered_features(2, 200, 64, 6, g)
    scores = torch.rand(2, 200, generator=g)
    exact = device_path.select(feats, scores, 50)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert not device_path._matmul_is_exact_fp32(feats.device)
        assert_matches_reference(device_path.select(feats, scores, 50), feats, scores, 50, 20.0)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(device_path.select(feats, scores, 50), exact)


def test_no_host_synchronisation():
    """Meta tensors hold no data: any value read back to the host (.item(), int(), .tolist(),
    a data-dependent branch) raises, so the path passing here never synchronises."""
    feats = torch.empty(3, 50, 8, device="meta", dtype=torch.bfloat16)
    scores = torch.empty(3, 50, device="meta")
    lengths = torch.empty(3, dtype=torch.int64, device="meta")
    out = device_path.select(feats, scores, 20, 20.0, lengths)
    assert out.shape == (3, 20) and out.dtype == torch.int64 and out.device.type == "meta"
    with pytest.raises(Exception):  # the premise: reading a meta value fails
        int(out[0, 0])


def test_choose_backend():
    assert _ops.choose_backend("cpu", ("cpu",)) == "native"
    assert _ops.choose_backend("cuda", ("cpu",)) == "device_path"
    assert _ops.choose_backend("cuda", ("cpu", "cuda")) == "native"
    assert _ops.choose_backend("cpu", ()) == "reference"
    assert _ops.choose_backend("mps", ("cpu", "cuda")) == "reference"
    assert _ops.cuda_kernel_disabled({"IDSELECT_CUDA_KERNEL": "0"})
    for environ in ({}, {"IDSELECT_CUDA_KERNEL": ""}, {"IDSELECT_CUDA_KERNEL": "1"}):
        assert not _ops.cuda_kernel_disabled(environ)
    for value in ("true", "off", " 0", "01"):
        with pytest.raises(ValueError, match=f"IDSELECT_CUDA_KERNEL must be 0 .* got '{value}'"):
            _ops.cuda_kernel_disabled({"IDSELECT_CUDA_KERNEL": value})


def test_cuda_dispatch_key_is_served_as_backend_for_says():
    dump = torch._C._dispatch_dump("idselect::select")
    cuda_line = next(line for line in dump.splitlines() if line.startswith("CUDA:"))
    if idselect.backend_for("cuda") == "device_path":
        assert "_ops.py" in cuda_line, cuda_line  # registered by the Python package
        assert "cuda" not in idselect.native_backends()
    else:
        assert "select_cuda_glue.cpp" in cuda_line, cuda_line


ROUTING_SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import torch, idselect
    dump = torch._C._dispatch_dump("idselect::select")
    cuda_line = next(line for line in dump.splitlines() if line.startswith("CUDA:"))
    print(idselect.backend_for("cuda"), "cuda" in idselect.native_backends(),
          "glue" if "select_cuda_glue.cpp" in cuda_line else "python",
          any("has no CUDA kernel" in str(w.message) for w in caught))
    """
)


def import_in_subprocess(env_value):
    env = dict(os.environ)
    env.pop("IDSELECT_CUDA_KERNEL", None)
    if env_value is not None:
        env["IDSELECT_CUDA_KERNEL"] = env_value
    return subprocess.run([sys.executable, "-c", ROUTING_SCRIPT], capture_output=True, text=True, env=env)


def routing_in_subprocess(env_value):
    done = import_in_subprocess(env_value)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_cuda_kernel_turned_off():
    assert routing_in_subprocess("0") == ["device_path", "False", "python", "False"]


@pytest.mark.parametrize("env_value", [None, "", "1"])
def test_cuda_kernel_on_by_default(env_value):
    backend, native_cuda, registrar, warned = routing_in_subprocess(env_value)
    if torch.version.cuda is None:  # a CPU build has no CUDA kernel; asked for by name, it says so
        assert [backend, native_cuda, registrar, warned] == ["device_path", "False", "python", str(env_value == "1")]
    else:  # a CUDA build (setup.py compiles the kernel whenever torch has CUDA and nvcc)
        assert [backend, native_cuda, registrar, warned] == ["native", "True", "glue", "False"]


def test_cuda_kernel_bad_setting_fails_the_import():
    done = import_in_subprocess("yes")
    assert done.returncode != 0
    assert "ValueError: idselect: IDSELECT_CUDA_KERNEL must be 0" in done.stderr and "got 'yes'" in done.stderr
