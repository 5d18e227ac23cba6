"""The supported families by ``config.model_type``: adding a family is one file that
subclasses ``idselect.hooks.family.Family`` and one entry here (docs/hooks.md, "Adding a family")."""
from __future__ import annotations

from typing import Dict, Tuple

from .family import Family
from .internvl import InternVL
from .llava import Llava
from .llava_next import LlavaNext
from .llava_onevision import LlavaOnevision
from .qwen2_5_vl import Qwen25VL
from .qwen3_5 import Qwen35
from .qwen3_vl import Qwen3VL
from .video_llava import VideoLlava

REGISTRY: Dict[str, Family] = {
    family.model_type: family
    for family in (Llava(), LlavaNext(), VideoLlava(), LlavaOnevision(), Qwen25VL(), Qwen3VL(), Qwen35(), InternVL())
}


def supported_model_types() -> Tuple[str, ...]:
    """The ``config.model_type`` values ``idselect.patch`` serves."""
    return tuple(sorted(REGISTRY))
