"""lmms-eval model classes that evaluate with ID-Selection (registered by ``manifests.py``).

``IdSelectMixin`` patches the model an lmms-eval class has loaded, counts what idselect did
during ``generate_until`` and reports it; ``IdSelectHuggingface`` is lmms-eval's generic chat
model (``huggingface``) with a loader that works with transformers 5 (see its docstring).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from loguru import logger as eval_logger
from lmms_eval.api.model import lmms
from lmms_eval.models.chat.huggingface import Huggingface
from lmms_eval.models.model_utils import gen_metrics

from ..hooks import supported_model_types
from .options import PatchedModel, PluginOptions, RunStats, pop_options

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}


class IdSelectMixin:
    """Adds ID-Selection to an lmms-eval model class: put it first among the bases and call
    ``_idselect_attach`` once the wrapped class has loaded its model."""

    _idselect: PatchedModel

    def _idselect_attach(self, options: PluginOptions) -> None:
        self._idselect = PatchedModel(self.model, options)
        self._idselect_reported = RunStats()
        eval_logger.info(f"idselect: patched {type(self.model).__name__} on rank {self.rank}: {options.settings()}")

    @property
    def idselect_stats(self) -> RunStats:
        """This process's statistics so far (every ``generate()`` since loading)."""
        return self._idselect.stats

    def clean(self) -> None:
        # lmms-eval frees the model after generating (e.g. for a local judge model); the patch
        # holds a reference to it, so it goes first.
        if getattr(self, "_idselect", None) is not None:
            self._idselect.remove()
        super().clean()

    def _all_reduce_sum(self, values: List[float]) -> List[float]:
        accelerator = self.accelerator
        # On the process's own device: NCCL reduces only CUDA tensors, gloo CPU ones.
        tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
        return accelerator.reduce(tensor, reduction="sum").tolist()

    def generate_until(self, requests) -> list:
        results = super().generate_until(requests)
        self._idselect.raise_if_failed()
        self._idselect_report()
        return results

    def _idselect_report(self) -> Dict[str, Any]:
        """Log this call's and the run's statistics (this process and, in a data-parallel run,
        all processes) and record them for lmms-eval's results JSON ("throughput")."""
        reduce = self._all_reduce_sum if self.world_size > 1 else None
        local_run = self._idselect.stats.copy()
        local_call = local_run.minus(self._idselect_reported)
        self._idselect_reported = local_run
        # Collectives: every process reaches this point once per generate_until call.
        all_call = local_call.summed_over_processes(reduce)
        all_run = local_run.summed_over_processes(reduce)
        settings = self._idselect.options.settings()
        if self.world_size > 1:
            eval_logger.info(f"idselect: rank {self.rank} of {self.world_size}, run so far: {local_run.as_dict()}")
        if self.rank == 0:
            eval_logger.info(f"idselect: settings {settings}; run so far, all {self.world_size} process(es): "
                             f"{all_run.as_dict()}")
        keep = settings["keep"]
        record = {f"idselect_{key}": value for key, value in all_call.as_dict().items()}
        record.update(idselect_gamma=settings["gamma"], idselect_alpha=settings["alpha"],
                      idselect_relevance_layer=self._idselect.handle.options.relevance_layer,  # resolved
                      idselect_relevance_rope=int(settings["relevance_rope"]), idselect_processes=self.world_size,
                      idselect_topk=int(settings["selection"] == "topk"))
        record["idselect_keep_tokens" if isinstance(keep, int) else "idselect_keep_fraction"] = 1.0 if keep == "all" else keep
        # lmms-eval's run summary ("throughput" in the results JSON) averages the extra numbers of
        # the records its models make; one record per generate_until call. No time or tokens:
        # the wrapped model records those itself.
        gen_metrics._record_metrics(total_elapsed_time=0.0, total_gen_tokens=0, avg_speed=0.0, additional_metrics=record)
        return record


class _ProcessorCall:
    """A processor whose call takes lmms-eval's ``audios=`` (transformers 5 accepts only
    ``audio=``) and leaves out empty media lists; everything else is the processor's."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, *args, audios=None, **kwargs):
        if audios:
            kwargs["audio"] = audios
        for media in ("images", "videos", "audio"):
            if media in kwargs and not kwargs[media]:
                del kwargs[media]
        return self.processor(*args, **kwargs)

    def __getattr__(self, name):
        if name == "processor":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.processor, name)


class IdSelectHuggingface(IdSelectMixin, Huggingface):
    """lmms-eval's generic Hugging Face chat model, evaluated with ID-Selection.

    Generation, prompts and answers are ``Huggingface.generate_until``'s. Loading is this
    class's own: lmms-eval 0.7.3 chooses the model class by looking ``config.model_type`` up
    among config classes (never found), so it loads the base model without a language-model
    head, and it places every data-parallel process on ``cuda:<local rank>``. This loader
    uses ``AutoModelForImageTextToText``, accelerate's device for each process (GPU or CPU),
    pads batches on the left, and patches the model right after loading.

    Parameters
    ----------
    pretrained : str
        Checkpoint directory or hub id (``config.model_type`` must be one idselect supports).
    keep, gamma, importance, alpha, relevance_layer, relevance_rope, selection
        ``idselect.patch``'s options; ``keep`` is required, ``keep=all`` keeps every token.
    device : str
        Device of a single-process run (lmms-eval's ``--device``).
    device_map : str, optional
        Passed to ``from_pretrained`` in a single-process run (e.g. "auto" to spread a large
        model over the GPUs); default: ``device``.
    batch_size : int
        Prompts per ``generate()`` call (left-padded).
    dtype : {"bfloat16", "float16", "float32", "auto"}
        Weights dtype (bfloat16, as lmms-eval's ``huggingface`` model).
    attn_implementation : {None, "sdpa", "eager", "flash_attention_2"}
    use_cache, trust_remote_code, system_prompt, reasoning_prompt, max_length
        As lmms-eval's ``huggingface`` model.
    """

    is_simple = False

    def __init__(self, pretrained: str, device: Optional[str] = "cuda", device_map: Optional[str] = None,
                 batch_size: Any = 1, dtype: str = "bfloat16", attn_implementation: Optional[str] = None,
                 use_cache: bool = True, trust_remote_code: bool = False, system_prompt: Optional[str] = None,
                 reasoning_prompt: Optional[str] = None, max_length: int = 2048, **kwargs) -> None:
        from accelerate import Accelerator
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        options = pop_options(kwargs)
        if kwargs:
            raise TypeError(f"idselect: unknown model_args {sorted(kwargs)} for --model idselect")
        if dtype not in _DTYPES:
            raise ValueError(f"idselect (lmms-eval model_args): dtype must be one of {', '.join(_DTYPES)}, got dtype={dtype!r}")
        if attn_implementation not in (None, "sdpa", "eager", "flash_attention_2"):
            raise ValueError("idselect (lmms-eval model_args): attn_implementation must be sdpa, eager or "
                             f"flash_attention_2, got attn_implementation={attn_implementation!r}")
        lmms.__init__(self)

        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        model_type = getattr(config, "model_type", None)
        if model_type not in supported_model_types():
            # Before the weights load; idselect.patch would say the same after.
            raise TypeError(f"idselect.patch: model_type {model_type!r} ({pretrained}) is not supported; "
                            f"supported: {', '.join(supported_model_types())}")

        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            # Data parallel: one replica per process, on the device accelerate gives it.
            self._device = self.accelerator.device
            self.device_map = "cpu" if self._device.type == "cpu" else str(self._device)
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        else:
            self._device = torch.device(device or "cpu")
            self.device_map = device_map or str(self._device)
        load = {"dtype": _DTYPES[dtype], "device_map": self.device_map, "trust_remote_code": trust_remote_code}
        if attn_implementation is not None:
            load["attn_implementation"] = attn_implementation
        self._model = AutoModelForImageTextToText.from_pretrained(pretrained, **load).eval()

        processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        processor.tokenizer.padding_side = "left"  # batched generate() and idselect's hooks expect it
        self.processor = _ProcessorCall(processor)
        self._tokenizer = processor.tokenizer
        raw_prompt = reasoning_prompt or system_prompt
        self.system_prompt = self._resolve_system_prompt(raw_prompt.replace("\\n", "\n")) if raw_prompt else None
        self._config = self._model.config
        self._max_length = int(max_length)
        self.batch_size_per_gpu = int(batch_size)
        self.use_cache = use_cache
        self._idselect_attach(options)
