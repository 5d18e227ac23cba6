"""Every metadata error, from every backend, names the argument and the value received."""
import pytest
import torch

import idselect
from idselect import reference


def base(B=2, N=6, D=4, device="cpu"):
    return torch.randn(B, N, D, device=device), torch.rand(B, N, device=device)


F, S = base()
METADATA_ERRORS = [
    ((F[0], S, 2, 20.0, None), ValueError, "features", "[6, 4]"),
    ((F, S[0], 2, 20.0, None), ValueError, "scores", "[6]"),
    ((F, S[:1], 2, 20.0, None), ValueError, "scores", "[1, 6]"),
    ((F, S[:, :5], 2, 20.0, None), ValueError, "scores", "[2, 5]"),
    ((F, S, -1, 20.0, None), ValueError, "k", "k=-1"),
    ((F, S, 7, 20.0, None), ValueError, "k", "k=7"),
    ((F, S, 2, -1.0, None), ValueError, "gamma", "gamma=-1"),
    ((F, S, 2, float("nan"), None), ValueError, "gamma", "gamma=nan"),
    ((F, S, 2, float("inf"), None), ValueError, "gamma", "gamma=inf"),
    ((F, S, 2, 20.0, torch.tensor([6, 6], dtype=torch.int32)), ValueError, "lengths", "torch.int32"),
    ((F, S, 2, 20.0, torch.tensor([6, 6, 6])), ValueError, "lengths", "[3]"),
    ((F, S, 2, 20.0, torch.tensor([[6, 6]])), ValueError, "lengths", "[1, 2]"),
    ((F.int(), S, 2, 20.0, None), TypeError, "features", "torch.int32"),
    ((F.double(), S, 2, 20.0, None), TypeError, "features", "torch.float64"),
    ((F, S.long(), 2, 20.0, None), TypeError, "scores", "torch.int64"),
]


def _as_meta(args):
    return tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize("backend", ["op", "reference", "fake"])
@pytest.mark.parametrize("args,exc,name,value", METADATA_ERRORS)
def test_metadata_errors(backend, args, exc, name, value):
    call = {"op": torch.ops.idselect.select, "reference": reference.select, "fake": torch.ops.idselect.select}[backend]
    if backend == "fake":
        args = _as_meta(args)
    with pytest.raises(exc) as info:
        call(*args)
    message = str(info.value)
    assert f"{name} " in message or f"{name}=" in message, message
    assert value in message, message


def test_device_mismatch_is_value_error():
    # Meta vs CPU is the mismatch available on every machine.
    with pytest.raises(ValueError, match="scores must be on the same device"):
        torch.ops.idselect.select(torch.randn(1, 3, 2), torch.rand(1, 3, device="meta"), 1)
    with pytest.raises(ValueError, match="lengths must be on the same device"):
        torch.ops.idselect.select(torch.randn(1, 3, 2), torch.rand(1, 3), 1, 20.0, torch.ones(1, dtype=torch.long, device="meta"))


@pytest.mark.parametrize(
    "scores_fix,message",
    [
        (lambda s: s.index_fill_(1, torch.tensor([3]), float("nan")), "scores[0, 3] = nan"),
        (lambda s: s.index_fill_(1, torch.tensor([1]), float("inf")), "= inf"),
        (lambda s: s.index_fill_(1, torch.tensor([2]), -0.5), "= -0.5"),
    ],
)
def test_value_validation(scores_fix, message):
    feats, scores = base(B=1)
    scores = scores_fix(scores)
    with pytest.raises(ValueError) as info:
        idselect.select(feats, scores, 2)
    assert "scores" in str(info.value) and message in str(info.value)
    # validate=False skips the check; the op still returns k distinct in-range indices.
    out = idselect.select(feats, scores, 2, validate=False)
    assert len(set(out[0].tolist())) == 2


@pytest.mark.parametrize("bad", [1, 7, -3])
def test_length_validation(bad):
    feats, scores = base()
    with pytest.raises(ValueError, match=rf"lengths\[1\] = {bad}"):
        idselect.select(feats, scores, 2, lengths=torch.tensor([6, bad]))


def test_python_api_argument_errors():
    feats, scores = base()
    with pytest.raises(TypeError, match="k must be an int, got float"):
        idselect.select(feats, scores, 2.0)
    with pytest.raises(ValueError, match="unbatched features"):
        idselect.select(feats[0], scores, 2)
    with pytest.raises(ValueError, match="lengths needs batched input"):
        idselect.select(feats[0], scores[0], 2, lengths=torch.tensor([6]))
