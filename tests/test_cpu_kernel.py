"""The native CPU kernel's own settings: every x86-64 ISA level this CPU runs
(IDSELECT_CPU_ISA), every lookahead (IDSELECT_CPU_LOOKAHEAD: fixed, or adaptive by default),
every cap on the tokens per register tile (IDSELECT_CPU_TILE_TOKENS: 1 is a one-token loop)
and every thread count give the same bits as the default run, which itself matches the reference (tests/test_select.py)."""
import itertools
import os

import pytest
import torch

import idselect
from idselect import _C, reference

LEVELS = {"x86-64-v4": ["v4", "v3", "baseline"], "x86-64-v3": ["v3", "baseline"], "baseline": ["baseline"]}


@pytest.fixture
def setting(monkeypatch):
    def apply(isa=None, lookahead=None, tile=None):
        for name, value in (("IDSELECT_CPU_ISA", isa), ("IDSELECT_CPU_LOOKAHEAD", lookahead),
                            ("IDSELECT_CPU_TILE_TOKENS", tile)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
    return apply


def levels():
    os.environ.pop("IDSELECT_CPU_ISA", None)
    return LEVELS[_C.cpu_isa()]


def cases():
    g = torch.Generator().manual_seed(5)
    for B, N, D, k, dtype in [(1, 576, 1024, 64, torch.float32), (3, 130, 77, 20, torch.bfloat16),
                              (5, 64, 33, 64, torch.float16), (1, 300, 4096, 40, torch.bfloat16),
                              (7, 50, 31, 9, torch.float32), (2, 9, 1, 9, torch.float16),
                              # D over two chunks of the tile sweep (1024) and a partial third
                              (1, 97, 2080, 33, torch.float32),
                              # over 8 MiB of features: adaptive passes of 8 to 32 rows
                              (1, 600, 4096, 48, torch.float32),
                              # 16-bit chunks converted per 1024 elements, with a tail; fewer
                              # tokens than a tile, every one picked
                              (2, 40, 2080, 30, torch.bfloat16), (3, 5, 40, 5, torch.float16)]:
        feats = torch.randn(B, N, D, generator=g).to(dtype)
        feats[0, 1] = feats[0, 0]  # an exact duplicate: suppressed to 0 when picked
        scores = torch.rand(B, N, generator=g)
        lengths = torch.randint(k, N + 1, (B,), generator=g)
        yield feats, scores, k, lengths
    # Clustered tokens: suppression reorders the candidates, so speculative rows miss and the
    # adaptive lookahead both grows and shrinks.
    centres = torch.randn(6, 96, generator=g)
    feats = centres[torch.randint(0, 6, (400,), generator=g)] + 0.1 * torch.randn(400, 96, generator=g)
    yield feats[None], torch.rand(1, 400, generator=g), 120, None


@pytest.mark.parametrize("case_index", range(11))
def test_every_level_lookahead_and_thread_count_gives_the_same_bits(setting, case_index):
    feats, scores, k, lengths = list(cases())[case_index]
    setting()
    want = torch.ops.idselect.select(feats, scores, k, 20.0, lengths)
    threads = torch.get_num_threads()
    try:
        for isa, lookahead, tile, n_threads in itertools.product(levels(), [1, 3, 8, 13, 32, "auto"],
                                                                 [1, 2, 4, "auto"], sorted({1, threads})):
            setting(isa, lookahead, tile)
            torch.set_num_threads(n_threads)
            got = torch.ops.idselect.select(feats, scores, k, 20.0, lengths)
            assert torch.equal(got, want), (isa, lookahead, tile, n_threads)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(want[:, :1], reference.select(feats, scores, 1, 20.0, lengths))  # sanity: same first pick


def test_every_level_reads_every_float16_and_bfloat16_value_exactly(setting):
    """Each level converts 16-bit features with its own vector code: the norms (hence the
    weights) of tokens made of every 16-bit pattern must be what float32 gives."""
    bits = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        values = bits.view(dtype)
        finite = values[torch.isfinite(values.float())][:4096 * 8].reshape(8, 4096)
        scores = torch.rand(1, 8)
        for isa in levels():
            setting(isa)
            got = torch.ops.idselect.select(finite[None], scores, 8, 20.0)
            setting()
            want = torch.ops.idselect.select(finite.float()[None], scores, 8, 20.0)
            assert torch.equal(got, want), (dtype, isa)


def test_the_level_is_reported_and_a_bad_or_unavailable_level_is_refused(setting):
    setting()
    best = _C.cpu_isa()
    assert best in LEVELS
    for isa in levels():
        setting(isa)
        assert _C.cpu_isa() == {"v4": "x86-64-v4", "v3": "x86-64-v3", "baseline": "baseline"}[isa]
    setting("avx9000")
    with pytest.raises(ValueError, match="IDSELECT_CPU_ISA must be auto, v4, v3 or baseline, got 'avx9000'"):
        _C.cpu_isa()
    with pytest.raises(ValueError, match="IDSELECT_CPU_ISA must be auto"):
        idselect.select(torch.randn(4, 8), torch.rand(4), 2)
    if best != "x86-64-v4":
        setting("v4")
        with pytest.raises(ValueError, match="offers at most"):
            torch.ops.idselect.select(torch.randn(1, 4, 8), torch.rand(1, 4), 2)


@pytest.mark.parametrize("lookahead, tile, message", [
    ("abc", None, "IDSELECT_CPU_LOOKAHEAD must be auto or an integer in \\[1, 32\\], got 'abc'"),
    ("0", None, "IDSELECT_CPU_LOOKAHEAD must be auto or an integer in \\[1, 32\\], got '0'"),
    ("33", None, "got '33'"),
    (None, "yes", "IDSELECT_CPU_TILE_TOKENS must be auto or an integer in \\[1, 6\\], got 'yes'"),
    (None, "0", "IDSELECT_CPU_TILE_TOKENS must be auto or an integer in \\[1, 6\\], got '0'"),
    (None, "7", "got '7'"),
    (" 3", None, "IDSELECT_CPU_LOOKAHEAD must be auto or an integer in \\[1, 32\\], got ' 3'"),
    (None, "+2", "IDSELECT_CPU_TILE_TOKENS must be auto or an integer in \\[1, 6\\], got '\\+2'"),
])
def test_a_bad_setting_is_refused_before_any_work(setting, lookahead, tile, message):
    setting(lookahead=lookahead, tile=tile)
    with pytest.raises(ValueError, match=message):
        torch.ops.idselect.select(torch.randn(2, 64, 16), torch.rand(2, 64), 8, 20.0)  # rows in parallel too
    with pytest.raises(ValueError, match=message):
        torch.ops.idselect.select(torch.randn(1, 64, 16), torch.rand(1, 64), 8, 20.0)


def test_concurrent_callers_and_a_forked_child_get_the_same_bits():
    """The token passes' helper threads serve one caller at a time (the others run alone), and
    a forked child never waits for helpers it does not have."""
    import multiprocessing as mp
    import threading

    g = torch.Generator().manual_seed(2)
    cases = [(torch.randn(1, 576, 256, generator=g), torch.rand(1, 576, generator=g)) for _ in range(3)]
    want = [torch.ops.idselect.select(f, s, 64, 20.0) for f, s in cases]
    errors = []

    def work(i):
        for r in range(10):
            f, s = cases[(i + r) % 3]
            if not torch.equal(torch.ops.idselect.select(f, s, 64, 20.0), want[(i + r) % 3]):
                errors.append((i, r))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda q: q.put(torch.equal(torch.ops.idselect.select(*cases[0], 64, 20.0), want[0])),
                        args=(queue,))
    child.start()
    assert queue.get(timeout=60) is True
    child.join(timeout=60)
