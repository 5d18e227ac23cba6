"""The CUDA path choice (csrc/cuda/select_dispatch.h), a pure function, checked on the CPU
against the rule as docs/algorithm.md states it ("CUDA paths")."""
import itertools
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1 << 30
CAP = GiB  # kWorkspaceCapBytes


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    exe = tmp_path_factory.mktemp("plan") / "plan_driver"
    build = subprocess.run(
        ["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", os.path.join(ROOT, "tests", "cpp", "plan_driver.cpp"), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr

    def run(queries):
        text = "".join(" ".join(str(x) for x in q) + "\n" for q in queries)
        done = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True)
        return [(p, int(r), int(w)) for p, r, w in (line.split() for line in done.stdout.splitlines())]

    return run


def one(plan, B, N, D, k, dtype="bf16", major=9, request="auto"):
    return plan([(B, N, D, k, dtype, major, request)])[0]


def test_goal_shapes_take_the_gram_path_in_one_group(plan):
    for B, N, D, k in [(1, 576, 4096, 64), (16, 576, 4096, 64), (1, 2880, 4096, 288), (1, 4608, 3584, 460)]:
        assert one(plan, B, N, D, k) == ("gram", B, B * N * N * 4)


def test_trivial_k(plan):
    assert one(plan, 4, 100, 8, 0)[0] == "none"
    assert one(plan, 0, 100, 8, 5)[0] == "none"
    assert one(plan, 4, 100, 8, 1)[0] == "argmax"
    assert one(plan, 4, 100, 8, 1, request="gram")[0] == "argmax"
    assert one(plan, 4, 100, 8, 1, request="stream")[0] == "stream"  # G8: tests stress stream with k = 1


def test_k1_longer_than_shared_memory_holds_streams(plan):
    """G1: the argmax kernel keeps a row's scores in shared memory (8192 tokens at most)."""
    assert one(plan, 1, 8192, 64, 1)[0] == "argmax"
    assert one(plan, 1, 8193, 64, 1)[0] == "stream"
    assert one(plan, 2, 9000, 64, 1, request="gram")[0] == "stream"


def test_gram_needs_few_tokens_per_pick_and_a_row_in_shared_memory(plan):
    assert one(plan, 1, 6400, 64, 50)[0] == "gram"  # N = 128 k
    assert one(plan, 1, 6401, 64, 50)[0] == "stream"
    assert one(plan, 1, 2928, 4096, 64)[0] == "gram"  # LLaVA-NeXT at keep 64 (N / k = 46)
    assert one(plan, 1, 8192, 64, 8192)[0] == "gram"
    assert one(plan, 1, 8193, 64, 8193)[0] == "stream"
    assert one(plan, 1, 60000, 8, 100, request="gram")[0] == "stream"  # not feasible: auto stands


def test_requests(plan):
    assert one(plan, 1, 5000, 64, 10, request="gram")[0] == "gram"  # feasible, though it does not pay
    assert one(plan, 1, 576, 4096, 64, request="stream")[0] == "stream"


def test_tensor_cores_only_from_sm80(plan):
    assert one(plan, 1, 576, 64, 64, dtype="f16", major=7)[0] == "stream"
    assert one(plan, 1, 576, 64, 64, dtype="bf16", major=7)[0] == "stream"
    assert one(plan, 1, 576, 64, 64, dtype="f32", major=7)[0] == "gram"


def test_workspace_cap_groups_rows_and_falls_back_when_one_row_does_not_fit(plan):
    per_row = 4608 * 4608 * 4
    path, rows, weight_bytes = one(plan, 300, 4608, 3584, 460)
    assert path == "gram" and rows == CAP // per_row and weight_bytes == rows * per_row <= CAP
    # One row of 8192 tokens is 256 MiB: 4 rows per group; rows never exceed the cap.
    assert one(plan, 9, 8192, 64, 8192) == ("gram", 4, 4 * 8192 * 8192 * 4)


def test_path_never_depends_on_the_batch(plan):
    shapes = [(576, 4096, 64), (2880, 4096, 288), (4608, 3584, 460), (100, 8, 1), (5000, 64, 10), (8000, 16, 8000),
              (50, 24, 10), (9000, 8, 1)]
    for (N, D, k), dtype, request in itertools.product(shapes, ["f32", "f16", "bf16"], ["auto", "gram", "stream"]):
        paths = {one(plan, B, N, D, k, dtype, 9, request)[0] for B in (1, 2, 16, 300, 100_000)}
        assert len(paths) == 1, (N, D, k, dtype, request, paths)


def test_groups_cover_the_batch_under_the_cap(plan):
    queries = [(B, N, 64, max(2, N // 8), "bf16", 9, "auto")
               for B in (1, 3, 77, 5000) for N in (2, 63, 64, 65, 576, 4096, 8192)]
    for (B, N, _, _, _, _, _), (path, rows, weight_bytes) in zip(queries, plan(queries)):
        if path != "gram":
            assert N > 128 * max(2, N // 8) or N * N * 4 > CAP, (B, N)
            continue
        assert 1 <= rows <= B and weight_bytes == rows * N * N * 4 <= CAP
        assert rows == B or (rows + 1) * N * N * 4 > CAP  # groups as large as fit
