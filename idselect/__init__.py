"""idselect: ID-Selection (arXiv 2604.05601) visual token selection for LVLMs.

``torch.ops.idselect.select`` is the op; ``idselect.select`` the checked Python entry;
``idselect.reference.select`` the pure-PyTorch oracle.
"""
from . import reference
from ._ops import native_backends
from .api import select

__all__ = ["select", "native_backends", "reference"]
__version__ = "0.1.0"
