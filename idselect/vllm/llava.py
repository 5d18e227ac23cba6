"""LLaVA-1.5 (model_type ``llava``) and LLaVA-NeXT (``llava_next``), CLIP towers, with
ID-Selection, as vLLM architectures.

Per image, as ``idselect.patch(model, keep=k, importance="saliency")`` does with transformers
(docs/hooks.md): [CLS] attention in the vision layer whose output the model uses, averaged over
heads, min-max normalised over the image's candidate tokens, is the importance;
ID-Selection picks ``min(k, candidates)`` of the image's projected features (the LLM's input
embeddings), which go to the LLM in their original order. An image whose tokens all fit in ``k``
is left whole. The images of an encoder step go through the tower in groups, then through one
batched selection (``selection.kept_embeddings``: no host synchronisation, one op call per
distinct budget). LLaVA-NeXT: each crop's saliency comes from its own [CLS], laid out by vLLM's
own anyres merge (run on the host on token indices, ``anyres_layout``); newline tokens are never
candidates and are dropped from a pruned image. The processor gives each image as many
placeholders as tokens it keeps, so positions are those of a hand-pruned prompt.
"""
from __future__ import annotations

import functools
import types
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement

from . import (GAMMA, KEEP, check_vllm_version, engine_settings, refuse_engine_config, refuse_engine_mm_kwargs,
               report_native_kernel, request_settings)
from .selection import kept_embeddings, upload

Rows = np.ndarray  # host row indices
STRATEGIES = ("default", "full")  # LLaVA's vision_feature_select_strategy values
EMBEDDINGS_REFUSED = ("idselect: image embeddings cannot be pruned (the saliency needs the vision tower's "
                      "attention); pass images")


def check_engine(vllm_config, model_types: Sequence[str], model_check=None) -> Dict[str, object]:
    """check_model (or the architecture's ``model_check``), plus what only the engine's whole
    configuration shows; then logs whether idselect's compiled kernel for the engine's device
    loaded."""
    check_vllm_version()  # first: the checks below read this vLLM's configuration
    refuse_engine_mm_kwargs(vllm_config.model_config)
    refuse_engine_config(vllm_config)
    if getattr(vllm_config, "lora_config", None) is not None:
        raise ValueError("idselect: LoRA is not supported with the idselect architectures (not verified: vLLM's "
                         "tower/connector LoRA counts tokens before pruning)")
    settings = (model_check or check_model)(vllm_config.model_config.hf_config, model_types)
    report_native_kernel(vllm_config.device_config.device_type)
    return settings


def check_model(hf_config, model_types: Sequence[str] = ("llava",)) -> Dict[str, object]:
    """The engine's options, after checking that the model is one this architecture prunes."""
    check_vllm_version()
    settings = engine_settings(hf_config)
    vision = hf_config.vision_config
    if hf_config.model_type not in model_types or vision.model_type != "clip_vision_model":
        raise ValueError(
            f"idselect: {hf_config.architectures[0] if hf_config.architectures else 'this architecture'} serves "
            f"{' / '.join(model_types)} (model_type) with a CLIP vision tower, whose [CLS] token gives the "
            f"saliency; got model_type {hf_config.model_type!r} with a {vision.model_type!r} tower"
        )
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"idselect: vision_feature_layer={layer!r}: several feature layers are not supported in vLLM")
    if layer % (vision.num_hidden_layers + 1) == 0:
        raise ValueError(f"idselect: vision_feature_layer={layer} selects the embeddings, which no attention layer "
                         "produced; saliency needs a transformer layer's output")
    if hf_config.vision_feature_select_strategy not in STRATEGIES:
        raise ValueError(f"idselect: vision_feature_select_strategy={hf_config.vision_feature_select_strategy!r} "
                         f"is not one of {STRATEGIES}")
    return settings


# -- processors: min(keep, ...) placeholders per image, the options as per-image fields -------

class BudgetedProcessor:
    """Mixed into a LLaVA-family processor: the request's options become per-image fields (part
    of vLLM's multimodal hash, so cached encoder outputs never mix budgets) and each image
    gets as many placeholders as tokens it keeps (``kept_tokens``)."""

    def settings(self, mm_kwargs: Mapping[str, object]) -> Dict[str, object]:
        refuse_engine_mm_kwargs(self.info.ctx.model_config)
        return request_settings(mm_kwargs, engine_settings(self.info.get_hf_config()))

    def _call_hf_processor(self, hf_data, hf_kwargs):
        plain = {key: value for key, value in hf_kwargs.items() if not key.startswith("idselect_")}
        processed = super()._call_hf_processor(hf_data, plain)
        if "pixel_values" in processed:
            processed.update(self.per_image_options(hf_kwargs, self.image_count(processed)))
        return processed

    def image_count(self, processed) -> int:
        """Images in the HF processor's output (LLaVA: one pixel_values entry per image)."""
        return len(processed["pixel_values"])

    def per_image_options(self, hf_kwargs: Mapping[str, object], images: int) -> Dict[str, torch.Tensor]:
        """The request's options as per-image fields."""
        settings = self.settings(hf_kwargs)
        return {KEEP: torch.full((images,), settings["keep"], dtype=torch.int64),
                GAMMA: torch.full((images,), settings["gamma"], dtype=torch.float64)}

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[KEEP] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)  # read on the host: no sync
        fields[GAMMA] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptReplacement]:
        keep = self.settings(hf_processor_mm_kwargs)["keep"]
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> List[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):
                raise ValueError(EMBEDDINGS_REFUSED)
            size = images.get_image_size(item_idx)
            return [image_token_id] * self.kept_tokens(size.width, size.height, keep)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]

    def kept_tokens(self, width: int, height: int, keep: int) -> int:
        """Tokens an image of this size gives the LLM: all of them if they fit in ``keep``,
        else ``min(keep, candidates)``."""
        tokens = self.info.get_num_image_tokens(image_width=width, image_height=height)
        return tokens if keep >= tokens else min(keep, tokens - self.non_candidates(width, height))

    def non_candidates(self, width: int, height: int) -> int:
        return 0


class UnprunedTokenBudget:
    """Mixed into a processing info: vLLM sizes the encoder's per-step budget, its memory
    profile and the encoder cache by the most tokens an image can have. Without this it would
    measure a dummy image after pruning (the engine's keep) and size them all for that."""

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_max_image_tokens()}


class IdSelectLlavaProcessingInfo(UnprunedTokenBudget, LlavaProcessingInfo):
    pass


class IdSelectLlavaNextProcessingInfo(UnprunedTokenBudget, LlavaNextProcessingInfo):
    pass


class IdSelectLlavaMultiModalProcessor(BudgetedProcessor, LlavaMultiModalProcessor):
    pass


class IdSelectLlavaNextMultiModalProcessor(BudgetedProcessor, LlavaNextMultiModalProcessor):
    def non_candidates(self, width: int, height: int) -> int:
        """Newline tokens: one per row of the unpadded crop grid (vLLM's own count, as in
        LlavaNextProcessingInfo.get_num_image_tokens)."""
        from vllm.model_executor.models.llava_next import get_anyres_image_grid_shape

        info, config = self.info, self.info.get_hf_config()
        encoder = info.get_vision_encoder_info()
        rows, cols = get_anyres_image_grid_shape(image_size=(height, width), grid_pinpoints=config.image_grid_pinpoints,
                                                 patch_size=encoder.get_image_size())
        _, newlines = info._get_num_unpadded_features(original_height=height, original_width=width,
                                                       npatches=encoder.get_patch_grid_length(),
                                                       num_patch_height=rows, num_patch_width=cols)
        return newlines


# -- models ------------------------------------------------------------------------------------

class SaliencyPruning:
    """Mixed into a LLaVA-family vLLM model: runs the image path with the feature layer's q/k/v
    projection captured, and prunes each image's embeddings to its budget."""

    model_types: Sequence[str] = ()  # the model_type values the architecture serves

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        check_engine(vllm_config, self.model_types)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.encoder_budget_tokens = vllm_config.scheduler_config.max_num_encoder_input_tokens

    def saliency_layer(self) -> torch.nn.Module:
        # vLLM builds the tower only up to the feature layer: its last layer produces the features.
        return self.vision_tower.vision_model.encoder.layers[-1]

    def cls_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """[crops, T] attention of [CLS] in the feature layer, averaged over all heads (with
        the 'default' strategy, without [CLS] itself), from the layer's own fused q/k/v
        projection output ``qkv`` (captured as the tower ran: nothing is projected again).
        Under tensor parallelism each rank holds some heads: the sum is reduced across ranks
        so that every rank keeps the same tokens."""
        attn = self.saliency_layer().self_attn
        q, k, _ = qkv.chunk(3, dim=-1)
        heads, width = attn.num_heads_per_partition, attn.head_dim
        q = q[:, :1].unflatten(-1, (heads, width)).transpose(1, 2).float()  # [I, h, 1, d]
        k = k.unflatten(-1, (heads, width)).transpose(1, 2).float()  # [I, h, T, d]
        probs = ((q @ k.transpose(-1, -2)) / width ** 0.5).softmax(dim=-1)[:, :, 0]  # [I, h, T]
        if attn.tp_size == 1:
            attention = probs.mean(dim=1)
        else:
            from vllm.distributed import tensor_model_parallel_all_reduce

            attention = tensor_model_parallel_all_reduce(probs.sum(dim=1)) / attn.num_heads
        return attention[:, 1:] if self.config.vision_feature_select_strategy == "default" else attention

    def crops_per_encoder_call(self) -> int:
        """Crops the tower takes in one call: vLLM's per-step encoder budget over the tokens of
        one crop. The scheduler charges an image its pruned tokens, so one step may bring far
        more images than the unpruned model's memory profile covered; they go through the
        tower in groups of at most this many crops, as the unpruned model would take them."""
        vision = self.config.vision_config
        crop_tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        return max(1, self.encoder_budget_tokens // crop_tokens)

    def embed_multimodal(self, **kwargs: object):
        """The step's images through the tower in groups (``crops_per_encoder_call``), then one
        selection for all of them (``selection.kept_embeddings``: no host synchronisation, a
        number of kernels that does not grow with the images)."""
        keeps, gammas = kwargs.pop(KEEP, None), kwargs.pop(GAMMA, None)
        if kwargs.get("image_embeds") is not None:
            raise ValueError(EMBEDDINGS_REFUSED)
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        count = len(pixel_values)
        keeps, gammas = host_values(keeps, count, int), host_values(gammas, count, float)
        embeddings: List[torch.Tensor] = []
        scores: List[torch.Tensor] = []
        candidates: List[Optional[Rows]] = []
        for start, end in crop_groups(pixel_values, self.crops_per_encoder_call()):
            group = {name: value[start:end] if value is not None else None for name, value in kwargs.items()}
            group_embeddings, group_scores, group_candidates = self.encode_with_saliency(group)
            embeddings += list(group_embeddings)
            scores += group_scores
            candidates += group_candidates
        if len(embeddings) != count or any(e.shape[0] != s.shape[0] for e, s in zip(embeddings, scores)):
            raise RuntimeError(f"idselect: saliency for {[s.shape[0] for s in scores]} tokens, embeddings for "
                               f"{[e.shape[0] for e in embeddings]} ({count} images)")
        return kept_embeddings(embeddings, scores, [int(k) for k in keeps], [float(g) for g in gammas], candidates)

    def encode_with_saliency(self, kwargs):
        """The model's own image path on some images: per image its embeddings, its saliency
        laid out as them (raw [CLS] attention), and the host rows that may be picked (None:
        all)."""
        image_input = self._parse_and_validate_image_input(**kwargs)
        captured = []  # the feature layer's q/k/v projection, as its attention computed it
        hook = self.saliency_layer().self_attn.qkv_proj.register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            embeddings = self._process_image_input(image_input)  # per image: the LLM's image embeddings
        finally:
            hook.remove()
        if len(captured) != 1:  # e.g. a release that compiles the tower and skips module hooks
            raise RuntimeError(f"idselect: the vision tower's feature layer projected q/k/v {len(captured)} times for "
                               "one batch of images (expected once); this vLLM release differs from the verified ones")
        with torch.no_grad():
            attention = self.cls_attention(captured[0])
            scores, candidates = self.image_saliency(image_input, attention)
        return embeddings, scores, candidates

    def image_saliency(self, image_input, attention: torch.Tensor) -> Tuple[List[torch.Tensor], List[Optional[Rows]]]:
        """Per image, the saliency of each of its tokens, laid out as its embeddings, and its
        candidate rows on the host (None: all rows)."""
        return list(attention), [None] * attention.shape[0]


@MULTIMODAL_REGISTRY.register_processor(IdSelectLlavaMultiModalProcessor, info=IdSelectLlavaProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class IdSelectLlavaForConditionalGeneration(SaliencyPruning, LlavaForConditionalGeneration):
    """vLLM's LlavaForConditionalGeneration, pruning each image to its budget before the LLM."""

    model_types = ("llava",)


@MULTIMODAL_REGISTRY.register_processor(IdSelectLlavaNextMultiModalProcessor, info=IdSelectLlavaNextProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class IdSelectLlavaNextForConditionalGeneration(SaliencyPruning, LlavaNextForConditionalGeneration):
    """vLLM's LlavaNextForConditionalGeneration (anyres), pruning each image to its budget."""

    model_types = ("llava_next",)

    def image_saliency(self, image_input, attention: torch.Tensor) -> Tuple[List[torch.Tensor], List[Optional[Rows]]]:
        # The crops of each image, as _process_image_pixels groups them, laid out by vLLM's own
        # anyres merge, run on the host on the crop tokens' indices (``anyres_layout``): one
        # gather puts every image's saliency in its embeddings' layout; newline rows are never
        # candidates (their score there is a placeholder, never read).
        pixel_values = image_input["pixel_values"]
        tokens = attention.shape[1]
        if isinstance(pixel_values, torch.Tensor):
            crops = [pixel_values.shape[1]] * pixel_values.shape[0]
        else:
            crops = [v.shape[0] for v in pixel_values]
        image_sizes = image_input.get("image_sizes")
        if image_sizes is None:
            side = self.config.vision_config.image_size
            sizes = [(side, side)] * len(crops)
        else:  # a host tensor (vLLM's field has keep_on_cpu=True, as vLLM's own merge reads it there)
            sizes = [tuple(int(v) for v in size) for size in
                     (image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else image_sizes)]
        layouts, sources, offset = [], [], 0
        for (height, width), n in zip(sizes, crops):
            source, candidates = anyres_layout(self.config, height, width, n, tokens)
            layouts.append((source.size, candidates))
            sources.append(source + offset)
            offset += n * tokens
        index = upload([np.concatenate(sources)], attention.device)[0]
        scores = attention.reshape(-1)[index].split([size for size, _ in layouts])
        return list(scores), [candidates for _, candidates in layouts]


@functools.lru_cache(maxsize=1024)
def _anyres_layout(image_size: int, patch_size: int, pinpoints: tuple, height: int, width: int, crops: int,
                   tokens: int) -> Tuple[np.ndarray, np.ndarray]:
    vision = types.SimpleNamespace(image_size=image_size, patch_size=patch_size)
    config = types.SimpleNamespace(vision_config=vision, image_grid_pinpoints=[list(p) for p in pinpoints])
    layout = types.SimpleNamespace(config=config, image_newline=torch.full((1,), -1.0, dtype=torch.float64))
    positions = torch.arange(crops * tokens, dtype=torch.float64).view(crops, tokens, 1)
    merged = LlavaNextForConditionalGeneration._merge_image_patch_embeddings(
        layout, torch.tensor([height, width]), positions, strategy="spatial_unpad")[:, 0]
    source = merged.to(torch.int64).numpy()
    candidates = np.flatnonzero(source >= 0)
    source = np.where(source >= 0, source, 0)
    source.flags.writeable = candidates.flags.writeable = False
    return source, candidates


def anyres_layout(config, height: int, width: int, crops: int, tokens: int) -> Tuple[np.ndarray, np.ndarray]:
    """LLaVA-NeXT: for an image of this size with ``crops`` crops of ``tokens`` tokens, the
    crop token each row of its embeddings comes from (an index into its crops' tokens,
    flattened) and the rows that are image tokens (not newlines), laid out by vLLM's own
    ``_merge_image_patch_embeddings`` run on the host on the tokens' indices. Cached per size."""
    vision = config.vision_config
    pinpoints = tuple(tuple(int(v) for v in p) for p in config.image_grid_pinpoints)
    return _anyres_layout(vision.image_size, vision.patch_size, pinpoints, height, width, crops, tokens)


def crop_groups(pixel_values, crops_per_call: int) -> List[tuple]:
    """[start, end) ranges of consecutive images whose crops fit ``crops_per_call`` (at least
    one image per group); an image's crops are its leading dimension when it has several."""
    groups, start, crops = [], 0, 0
    for i, image in enumerate(pixel_values):
        n = image.shape[0] if image.dim() == 4 else 1
        if i > start and crops + n > crops_per_call:
            groups.append((start, i))
            start, crops = i, 0
        crops += n
    groups.append((start, len(pixel_values)))
    return groups


def host_values(values, count: int, kind: type = float) -> list:
    """A batched per-image option field (a tensor, or a list of 0-d tensors) as Python numbers of
    ``kind``. The fields are kept on the host (``keep_on_cpu=True``), so this reads no device
    memory."""
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    elif values is not None:
        values = [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    if values is None or len(values) != count:
        raise RuntimeError(f"idselect: {0 if values is None else len(values)} option values for {count} images "
                           "(the processor gives every image one)")
    return [kind(v) for v in values]
