"""Counting what a piece of PyTorch code asks of the device, on the CPU: the aten ops that would
launch a kernel, and the operations that make the host wait for the device.

On a GPU every non-view aten op is (at least) one kernel launch, and each of the operations in
``SYNC_OPS`` (or a boolean-mask index, ``tolist()``, ``numpy()``) reads device memory on the
host, i.e. waits for everything queued before it. Counted on the CPU, the same code path gives
the same counts without a GPU, so tests can pin a hot path's launch and sync budget.

``count_ops()`` counts both, with a ``TorchDispatchMode`` (aten ops, after Python dispatch) and
a ``TorchFunctionMode`` (``Tensor.tolist`` / ``Tensor.numpy``, which read memory directly
without an aten op).
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Counter, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops whose result size or value the host must read from the device.
SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
            "unique_consecutive", "unique_dim", "bincount", "histc")
#: ops that read device memory on the host without an aten op.
HOST_READS = ("tolist", "numpy")


@dataclass
class OpCounts:
    """What ran inside ``count_ops``."""

    kernels: int = 0  # aten ops that are not views (each one a kernel launch on a GPU)
    syncs: int = 0  # host reads of device values (SYNC_OPS, boolean-mask indexing, HOST_READS)
    by_op: Counter = field(default_factory=collections.Counter)
    sync_ops: Counter = field(default_factory=collections.Counter)


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or ()))


class _Dispatch(TorchDispatchMode):
    def __init__(self, counts: OpCounts):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if not func.is_view:
            self.counts.kernels += 1
            self.counts.by_op[name] += 1
        if name in SYNC_OPS or (name in ("index", "index_put", "index_put_", "_index_put_impl_") and _has_bool_index(args)) \
                or (name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and len(args) == 1
                    and not (kwargs or {}).get("output_size")):
            self.counts.syncs += 1
            self.counts.sync_ops[name] += 1
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self, counts: OpCounts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.counts.syncs += 1
            self.counts.sync_ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_ops() -> Iterator[OpCounts]:
    """Count the kernels and host syncs of the code run inside (on the CPU, what it would
    launch and wait for on a GPU).

    Examples
    --------
    >>> with count_ops() as counts:
    ...     model(**inputs)
    >>> counts.kernels, counts.syncs
    """
    counts = OpCounts()
    with _Function(counts), _Dispatch(counts):
        yield counts
