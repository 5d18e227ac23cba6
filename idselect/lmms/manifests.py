"""Entry-point payload of group ``lmms_eval.models`` (declared in setup.py).

lmms-eval loads this module while ``lmms_eval.models`` is still being imported, so it may
import nothing from lmms-eval but the registry module, and names each class by a dotted path
that lmms-eval imports only when that model is asked for.
"""
from lmms_eval.models.registry_v2 import ModelManifest

MANIFESTS = [
    # lmms-eval's generic Hugging Face chat model, any model type idselect supports.
    ModelManifest(model_id="idselect", chat_class_path="idselect.lmms.models.IdSelectHuggingface"),
    # lmms-eval's LLaVA-1.5 / LLaVA-NeXT chat model (its module needs decord).
    ModelManifest(model_id="idselect_llava_hf", chat_class_path="idselect.lmms.llava_hf.IdSelectLlavaHf"),
]
