"""``--model idselect_llava_hf``: lmms-eval's LLaVA chat model (``llava_hf``) with ID-Selection.

Its module imports decord (``pip install decord``); it runs one prompt per ``generate()``
(batch_size 1) and supports the ``llava`` and ``llava_next`` model types.
"""
from __future__ import annotations

from typing import Any, Optional

from lmms_eval.models.chat.llava_hf import LlavaHf

from .models import IdSelectMixin
from .options import pop_options


class IdSelectLlavaHf(IdSelectMixin, LlavaHf):
    """lmms-eval's ``llava_hf`` chat model, patched right after loading.

    Parameters
    ----------
    keep, gamma, importance, alpha, relevance_layer, relevance_rope, selection
        ``idselect.patch``'s options; ``keep`` is required, ``keep=all`` keeps every token.
    device_map : str, optional
        Default: the device. (``llava_hf``'s own default, "", is rejected by transformers 5.)
    **kwargs
        ``llava_hf``'s model_args (pretrained, dtype, batch_size, attn_implementation, ...).
    """

    is_simple = False

    def __init__(self, device: str = "cuda", device_map: Optional[str] = None, **kwargs: Any) -> None:
        options = pop_options(kwargs)  # before loading: a bad value costs no load
        super().__init__(device=device, device_map=device_map or str(device), **kwargs)
        self._idselect_attach(options)
