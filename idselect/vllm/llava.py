"""LLaVA-1.5 (model_type ``llava``, CLIP tower) with ID-Selection, as a vLLM architecture.

Per image, as ``idselect.patch(model, keep=k, importance="saliency")`` does with transformers
(docs/hooks.md): [CLS] attention in the vision layer whose output the model uses, averaged over
heads, min-max normalised, is the importance; ``idselect.select`` picks ``min(k, N)`` of the
image's projected features (the LLM's input embeddings), which go to the LLM in their original
order. The processor gives each image as many placeholders as tokens it keeps, so positions are
those of a hand-pruned prompt.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaImageEmbeddingInputs,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement

from .. import importance as imp
from ..api import select as id_select
from . import GAMMA, KEEP, check_vllm_version, engine_settings, request_settings

STRATEGIES = ("default", "full")  # LLaVA's vision_feature_select_strategy values


def check_model(hf_config) -> Dict[str, object]:
    """The engine's options, after checking that the model is one this architecture prunes."""
    check_vllm_version()
    settings = engine_settings(hf_config)
    vision = hf_config.vision_config
    if hf_config.model_type != "llava" or vision.model_type != "clip_vision_model":
        raise ValueError(
            f"idselect: IdSelectLlavaForConditionalGeneration serves LLaVA (model_type 'llava') with a "
            f"CLIP vision tower, whose [CLS] token gives the saliency; got model_type "
            f"{hf_config.model_type!r} with a {vision.model_type!r} tower"
        )
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"idselect: vision_feature_layer={layer!r}: several feature layers are not supported in vLLM")
    if hf_config.vision_feature_select_strategy not in STRATEGIES:
        raise ValueError(f"idselect: vision_feature_select_strategy={hf_config.vision_feature_select_strategy!r} "
                         f"is not one of {STRATEGIES}")
    return settings


class IdSelectLlavaProcessingInfo(LlavaProcessingInfo):
    def engine_settings(self) -> Dict[str, object]:
        return engine_settings(self.get_hf_config())


class IdSelectLlavaMultiModalProcessor(LlavaMultiModalProcessor):
    """LLaVA's processor with ``min(keep, N)`` placeholders per image and the request's options
    as per-image fields (part of vLLM's multimodal hash, so cached encoder outputs never mix
    budgets)."""

    def settings(self, mm_kwargs: Mapping[str, object]) -> Dict[str, object]:
        return request_settings(mm_kwargs, self.info.engine_settings())

    def _call_hf_processor(self, hf_data, hf_kwargs):
        settings = self.settings(hf_kwargs)
        plain = {key: value for key, value in hf_kwargs.items() if not key.startswith("idselect_")}
        processed = super()._call_hf_processor(hf_data, plain)
        if "pixel_values" in processed:
            images = len(processed["pixel_values"])
            processed[KEEP] = torch.full((images,), settings["keep"], dtype=torch.int64)
            processed[GAMMA] = torch.full((images,), settings["gamma"], dtype=torch.float64)
        return processed

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[KEEP] = MultiModalFieldConfig.batched("image")
        fields[GAMMA] = MultiModalFieldConfig.batched("image")
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptReplacement]:
        keep = self.settings(hf_processor_mm_kwargs)["keep"]
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> List[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):
                raise ValueError("idselect: image embeddings cannot be pruned (the saliency needs the vision "
                                 "tower's attention); pass images")
            size = images.get_image_size(item_idx)
            tokens = self.info.get_num_image_tokens(image_width=size.width, image_height=size.height)
            return [image_token_id] * min(keep, tokens)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(IdSelectLlavaMultiModalProcessor, info=IdSelectLlavaProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class IdSelectLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LlavaForConditionalGeneration, pruning each image to its budget before the LLM."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        check_model(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def saliency_layer(self) -> torch.nn.Module:
        # vLLM builds the tower only up to the feature layer: its last layer produces the features.
        return self.vision_tower.vision_model.encoder.layers[-1]

    def cls_attention(self, layer_input: torch.Tensor) -> torch.Tensor:
        """[images, T] attention of [CLS] in the feature layer, averaged over all heads; under
        tensor parallelism each rank holds some heads, and the sum is reduced across ranks so
        that every rank keeps the same tokens."""
        layer = self.saliency_layer()
        attn = layer.self_attn
        qkv, _ = attn.qkv_proj(layer.layer_norm1(layer_input))
        q, k, _ = qkv.chunk(3, dim=-1)
        heads, width = attn.num_heads_per_partition, attn.head_dim
        q = q[:, :1].unflatten(-1, (heads, width)).transpose(1, 2).float()  # [I, h, 1, d]
        k = k.unflatten(-1, (heads, width)).transpose(1, 2).float()  # [I, h, T, d]
        probs = ((q @ k.transpose(-1, -2)) / width ** 0.5).softmax(dim=-1)[:, :, 0]  # [I, h, T]
        if attn.tp_size == 1:
            return probs.mean(dim=1)
        from vllm.distributed import tensor_model_parallel_all_reduce

        return tensor_model_parallel_all_reduce(probs.sum(dim=1)) / attn.num_heads

    def embed_multimodal(self, **kwargs: object):
        keep = kwargs.pop(KEEP, None)
        gamma = kwargs.pop(GAMMA, None)
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        if isinstance(image_input, LlavaImageEmbeddingInputs):
            raise ValueError("idselect: image embeddings cannot be pruned (the saliency needs the vision tower's "
                             "attention); pass images")
        captured = []
        hook = self.saliency_layer().register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            features = self._process_image_input(image_input)  # [images, T, H]: the LLM's image embeddings
        finally:
            hook.remove()
        with torch.no_grad():
            attention = self.cls_attention(captured[-1])
        if self.config.vision_feature_select_strategy == "default":
            attention = attention[:, 1:]
        return prune(features, attention, as_list(keep, features.shape[0]), as_list(gamma, features.shape[0]))


def as_list(values, count: int) -> list:
    """A batched per-image field (a tensor, or a list of 0-d tensors) as Python numbers."""
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    else:
        values = [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    if len(values) != count:
        raise RuntimeError(f"idselect: {len(values)} budgets for {count} images")
    return values


def prune(features: torch.Tensor, attention: torch.Tensor, keeps: list, gammas: list) -> List[torch.Tensor]:
    """Each image's kept feature rows, in their original order: one idselect.select call per
    distinct (k, gamma)."""
    count, tokens = features.shape[:2]
    scores = imp.minmax(attention)
    out: List[torch.Tensor] = [features[i] for i in range(count)]
    groups: Dict[tuple, List[int]] = {}
    for i in range(count):
        k = min(int(keeps[i]), tokens)
        if k < tokens:
            groups.setdefault((k, float(gammas[i])), []).append(i)
    for (k, gamma), members in groups.items():
        rows = torch.tensor(members, device=features.device)
        picked = id_select(features[rows].detach(), scores[rows], k, gamma).sort(dim=1).values
        for j, i in enumerate(members):
            out[i] = features[i, picked[j]]
    return out
