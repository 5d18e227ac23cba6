"""idselect: ID-Selection (arXiv 2604.05601) visual token selection for LVLMs.

``torch.ops.idselect.select`` is the op; ``idselect.select`` the checked Python entry;
``idselect.reference.select`` the pure-PyTorch oracle; ``idselect.patch`` applies the
selection inside Hugging Face LVLMs; ``idselect.importance`` holds the estimators.
"""
from . import device_path, importance, reference
from ._ops import backend_for, native_backends
from .api import select
from .hooks import patch, supported_model_types

__all__ = ["select", "native_backends", "backend_for", "reference", "device_path", "importance", "patch", "supported_model_types"]
__version__ = "0.1.0"
