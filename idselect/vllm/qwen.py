"""Qwen2.5-VL (model_type ``qwen2_5_vl``) and Qwen3-VL (``qwen3_vl``) with ID-Selection, as vLLM
architectures.

Per image, as ``idselect.patch(model, keep=k)`` does with transformers (its default importance for
Qwen, "relevance"; docs/hooks.md): the importance of an image's tokens is the attention of the
prompt's last token to them at LLM layer 0 (that layer's input norm and W_Q / W_K, no rotary
embedding, softmax over the image's tokens, averaged over heads, min-max normalised);
``idselect.select`` picks ``min(k, tokens)`` of the merger's outputs, which reach the LLM in their
original order (Qwen3-VL: its DeepStack rows go with their tokens; importance and similarity read
the main rows, the LLM's input, as with transformers). The processor gives each image as many
placeholders as tokens it keeps.

The prompt's last token is part of each image's options (and so of vLLM's multimodal hash: an
encoder output cached for one prompt never serves another with a different last token).

Positions follow the hooks' rule, not vLLM's generic pruning rule: every kept token keeps its
original M-RoPE (t, h, w) position, text after an image continues where the unpruned sequence
puts it (after the image's largest extent), and decoding continues after the unpruned prompt's
largest position. The positions of text are fixed when a request arrives
(``get_mrope_input_positions``); those of kept tokens are known once the encoder has selected
them, and reach the runner through vLLM's ``SupportsMultiModalPruning`` interface: each image's
kept rows carry their (t, h, w) in three extra channels, which ``recompute_mrope_positions``
strips and writes at the image's placeholder positions.

vLLM builds its position recompute only when its own (video) pruning is configured; the
architecture turns it on for its engine (``enable_position_recompute``). Images only: the
architecture serves no videos (``get_supported_mm_limits``), since the hooks' joint selection
over a video's frames is not implemented here.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement

from .. import importance as imp
from . import GAMMA, KEEP, QUERY, engine_settings, llava
from .llava import BudgetedProcessor, UnprunedTokenBudget, host_values
from .selection import joined, kept_embeddings, upload

#: Extra channels appended to each image's kept rows: their (t, h, w) M-RoPE offsets.
POSITION_CHANNELS = 3
EMBEDDINGS_REFUSED = ("idselect: image embeddings cannot be pruned by the Qwen architecture (not verified: the "
                      "placeholder count and the relevance need the processor's grid); pass images")


def check_engine(vllm_config, model_types: Sequence[str]) -> Dict[str, object]:
    """The engine's options, after the checks of every idselect architecture (llava.check_engine)
    and the Qwen architectures' own: the model type, and no video pruning of vLLM's."""
    settings = llava.check_engine(vllm_config, model_types, model_check=check_model)
    mm_config = vllm_config.model_config.multimodal_config
    if mm_config is not None and mm_config.is_multimodal_pruning_enabled():
        raise ValueError(f"idselect: video pruning ({mm_config.get_video_pruning_spec()}) is configured: the idselect "
                         "architecture serves images only and prunes them itself; leave video_pruning_rate unset")
    return settings


def check_model(hf_config, model_types: Sequence[str]) -> Dict[str, object]:
    """The engine's options, after checking that the model is one this architecture serves."""
    settings = engine_settings(hf_config)
    if hf_config.model_type not in model_types:
        raise ValueError(f"idselect: {hf_config.architectures[0]} serves {' / '.join(model_types)} (model_type), "
                         f"got model_type {hf_config.model_type!r}")
    return settings


def enable_position_recompute(multimodal_config) -> None:
    """vLLM's runners recompute M-RoPE positions after the encoder (``recompute_mrope_positions``)
    only when its multimodal config says pruning is on, which it derives from a video pruning
    rate. This engine's config says so (this object only: it is the engine's own)."""
    object.__setattr__(multimodal_config, "is_multimodal_pruning_enabled", lambda: True)


# -- processor: min(keep, tokens) placeholders per image; keep, gamma and the query token per image --

class ImagesOnly(UnprunedTokenBudget):
    """Mixed into a Qwen processing info: images only (see the module docstring), and the
    encoder budget sized by an unpruned image."""

    def get_supported_mm_limits(self) -> Mapping[str, Optional[int]]:
        return {"image": None}


class IdSelectQwen2_5_VLProcessingInfo(ImagesOnly, Qwen2_5_VLProcessingInfo):
    pass


class IdSelectQwen3VLProcessingInfo(ImagesOnly, Qwen3VLProcessingInfo):
    def get_supported_mm_processor_kwargs(self) -> Dict[str, set]:
        # Qwen3VLProcessingInfo's own version adds video options, which need the video modality.
        return super(Qwen3VLProcessingInfo, self).get_supported_mm_processor_kwargs()


class QueryProcessor(BudgetedProcessor):
    """Mixed into a Qwen processor: BudgetedProcessor, plus the prompt's last token as a
    per-image option (the relevance query), and Qwen's placeholder count from the image grid."""

    def apply(self, inputs, *args, **kwargs):
        """The prompt's last token becomes an option of every image of the request."""
        options = dict(inputs.hf_processor_mm_kwargs)
        if QUERY in options:
            raise ValueError(f"idselect: {QUERY} is set by the processor from the prompt, not by a request")
        if inputs.mm_data_items.get_all_counts().get("image", 0):
            prompt = inputs.prompt
            if isinstance(prompt, str) or not prompt:
                raise RuntimeError(f"idselect: expected the prompt's token ids here, got {type(prompt).__name__}")
            last = int(prompt[-1])
            if last == self.info.get_hf_config().image_token_id:
                raise ValueError("idselect: the prompt ends with an image placeholder; relevance needs the text after "
                                 "it (its last token is the query)")
            options[QUERY] = last
        inputs = dataclasses.replace(inputs, hf_processor_mm_kwargs=options)
        return super().apply(inputs, *args, **kwargs)

    def settings(self, mm_kwargs: Mapping[str, object]) -> Dict[str, object]:
        return super().settings({key: value for key, value in mm_kwargs.items() if key != QUERY})

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        # Qwen3-VL's processor calls the HF processor itself (not _call_hf_processor): the
        # options are taken out and added here, around every Qwen processor's HF call.
        plain = {key: value for key, value in hf_kwargs.items() if not key.startswith("idselect_")}
        processed = super()._apply_hf_processor_main(mm_items, plain)
        if "image_grid_thw" in processed:
            processed.update(self.per_image_options(hf_kwargs, len(processed["image_grid_thw"])))
        return processed

    def _call_hf_processor(self, hf_data, hf_kwargs):
        # Past BudgetedProcessor's: _apply_hf_processor_main adds the options.
        return super(BudgetedProcessor, self)._call_hf_processor(hf_data, hf_kwargs)

    def per_image_options(self, hf_kwargs: Mapping[str, object], images: int) -> Dict[str, torch.Tensor]:
        options = super().per_image_options(hf_kwargs, images)
        options[QUERY] = torch.full((images,), int(hf_kwargs[QUERY]), dtype=torch.int64)
        return options

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[QUERY] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptReplacement]:
        keep = self.settings(hf_processor_mm_kwargs)["keep"]
        config = self.info.get_hf_config()
        merge = config.vision_config.spatial_merge_size

        def replacement(item_idx: int) -> List[int]:
            if isinstance(mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems)), ImageEmbeddingItems):
                raise ValueError(EMBEDDINGS_REFUSED)
            grid = out_mm_kwargs["image"][item_idx]["image_grid_thw"].data
            tokens = int(grid.prod()) // merge ** 2
            return [config.image_token_id] * min(keep, tokens)

        return [PromptReplacement(modality="image", target=[config.image_token_id], replacement=replacement)]


# -- model -----------------------------------------------------------------------------------------

def grid_positions(grids: Sequence[Sequence[int]], merge: int) -> torch.Tensor:
    """(t, h, w) M-RoPE offsets of every LLM token of each image ([sum of tokens, 3], int64,
    images one after another), in the merger's row-major order."""
    parts = [np.indices((t, h // merge, w // merge)).reshape(3, -1).T for t, h, w in grids]
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64))


class IdSelectQwen2_5_VLMultiModalProcessor(QueryProcessor, Qwen2_5_VLMultiModalProcessor):
    pass


class IdSelectQwen3VLMultiModalProcessor(QueryProcessor, Qwen3VLMultiModalProcessor):
    pass


class RelevancePruning:
    """Mixed into a Qwen vLLM model: prunes each image of an encoder step by relevance, in one
    selection for the step, and places the kept tokens at their M-RoPE positions."""

    model_types: Sequence[str] = ()  # the model_type values the architecture serves
    needs_position_recompute = True  # read by the CPU runner's load_model (idselect.vllm.register)

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        check_engine(vllm_config, self.model_types)
        # Before the parent reads it: it then also leaves the encoder out of CUDA graphs, whose
        # path skips embed_multimodal's post-processing (vLLM's note in get_encoder_cudagraph_config).
        enable_position_recompute(vllm_config.model_config.multimodal_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.is_multimodal_pruning_enabled = True
        self.encoder_budget_tokens = vllm_config.scheduler_config.max_num_encoder_input_tokens

    # -- the encoder step: all images of a step in one selection -------------------------------------

    def embed_multimodal(self, **kwargs: object):
        keeps, gammas, queries = (kwargs.pop(name, None) for name in (KEEP, GAMMA, QUERY))
        if kwargs.get("image_embeds") is not None:
            raise ValueError(EMBEDDINGS_REFUSED)
        if kwargs.get("pixel_values_videos") is not None or kwargs.get("video_embeds") is not None:
            raise ValueError("idselect: the Qwen architecture serves images only")
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        grids = image_input["image_grid_thw"].tolist()  # a host tensor (keep_on_cpu): no sync
        embeddings = self.encode(image_input["pixel_values"], image_input["image_grid_thw"], grids)
        count = len(embeddings)
        return self.prune_step(embeddings, grids, host_values(keeps, count, int), host_values(gammas, count, float),
                               host_values(queries, count, int))

    def encode(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, grids: Sequence[Sequence[int]]) -> List[torch.Tensor]:
        """Per image [T_i, D (+ DeepStack levels)]: the model's own image path, on runs of
        consecutive images whose unpruned tokens fit vLLM's per-step encoder budget. The
        scheduler charges an image its kept tokens only, so a step may bring far more images
        than the unpruned model's memory profile covered; the tower takes them as the unpruned
        model would (at least one image per call)."""
        merge = self.config.vision_config.spatial_merge_size
        tokens = [t * h * w // merge ** 2 for t, h, w in grids]
        patches = [t * h * w for t, h, w in grids]
        embeddings: List[torch.Tensor] = []
        start = 0
        while start < len(grids):
            end, used = start + 1, tokens[start]
            while end < len(grids) and used + tokens[end] <= self.encoder_budget_tokens:
                used += tokens[end]
                end += 1
            first = sum(patches[:start])
            part = self._parse_and_validate_image_input(pixel_values=pixel_values[first:first + sum(patches[start:end])],
                                                        image_grid_thw=grid_thw[start:end])
            embeddings += list(self._process_image_input(part))
            start = end
        return embeddings

    def prune_step(self, embeddings: Sequence[torch.Tensor], grids: Sequence[Sequence[int]], keeps: Sequence[int],
                   gammas: Sequence[float], queries: Sequence[int]) -> tuple:
        """The images of one encoder step (host options), pruned in one pass: relevance per run
        of equal-size images, one selection, one gather of the kept rows with their (t, h, w)
        channels appended; no host synchronisation."""
        width = self.llm_input_width()
        features = [emb[:, :width] for emb in embeddings]  # what the LLM's layer 0 receives
        groups = group_by_size(features)
        # One host-to-device copy: the rows' (t, h, w), the query tokens, each size run's images.
        positions, query_ids, *members = upload([grid_positions(grids, self.config.vision_config.spatial_merge_size),
                                                 np.asarray(queries), *map(np.asarray, groups.values())],
                                                embeddings[0].device)
        rows = torch.cat([joined(embeddings), positions.to(embeddings[0].dtype)], dim=1)
        rows = rows.split([emb.shape[0] for emb in embeddings])
        scores = self.relevance(features, query_ids, dict(zip(groups, members)), groups)
        return tuple(kept_embeddings(features, scores, keeps, gammas, rows_of=rows))

    def llm_input_width(self) -> int:
        """Channels of an image row that enter the LLM as its input embedding."""
        return self.config.text_config.hidden_size

    def relevance(self, features: Sequence[torch.Tensor], query_ids: torch.Tensor, members: Dict[int, torch.Tensor],
                  groups: Dict[int, List[int]]) -> List[torch.Tensor]:
        """Per image [T_i] float32: the attention of its query token (the prompt's last;
        ``query_ids`` on the device) to its tokens at LLM layer 0, as
        idselect.importance.instruction_relevance computes it with transformers' layers; the
        images of each size run (``groups`` on the host, ``members`` on the device) in one pass."""
        llm = self.language_model.model
        query_hidden = llm.embed_tokens(query_ids)  # [G, H]: text tokens enter layer 0 as their embeddings
        out: List[Optional[torch.Tensor]] = [None] * len(features)
        for size, images in groups.items():
            keys = torch.stack([features[i] for i in images])  # [g, T, H]
            values = layer_relevance(llm.layers[0], query_hidden.index_select(0, members[size]), keys)
            for row, i in enumerate(images):
                out[i] = values[row]
        return out

    # -- positions: text by the hooks' rule on arrival, kept tokens after the encoder ------------------

    def get_mrope_input_positions(self, input_tokens: List[int], mm_features) -> tuple:
        merge = self.config.vision_config.spatial_merge_size
        parts, start, next_position = [], 0, 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset, length = feature.mm_position.offset, feature.mm_position.length
            t, h, w = (int(v) for v in feature.data["image_grid_thw"].data.tolist())
            t, h, w = t, h // merge, w // merge
            text = offset - start
            parts.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
            base = next_position + text
            if length == t * h * w:  # kept whole: its positions are known now
                parts.append(np.indices((t, h, w)).reshape(3, -1) + base)
            else:  # pruned: the image's base until its kept rows say where they sit
                parts.append(np.full((3, length), base))
            next_position = base + max(t, h, w)
            start = offset + length
        text = len(input_tokens) - start
        parts.append(np.broadcast_to(np.arange(text), (3, text)) + next_position)
        next_position += text
        positions = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.int64)
        return torch.from_numpy(positions.astype(np.int64)), next_position - len(input_tokens)

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        """Strips the position channels from this step's image rows and writes their positions
        (the image's base plus each kept token's (t, h, w)) at the placeholders they fill: the
        first image placeholders at or after ``num_computed_tokens``, in order (a step's rows
        may be the middle of an image under chunked prefill). Text positions stay as set on
        arrival. Runs on the positions' device; the delta is read from them."""
        rows = [mm[:, :-POSITION_CHANNELS] for mm in multimodal_embeddings]
        positions = mrope_positions
        device = positions.device
        ids = (input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor(input_ids)).to(device)
        count = sum(mm.shape[0] for mm in multimodal_embeddings)
        if count:
            offsets = torch.cat([mm[:, -POSITION_CHANNELS:] for mm in multimodal_embeddings]).to(device)
            offsets = offsets.round().long()  # [count, 3]
            index = torch.arange(ids.numel(), device=device)
            image = ids == self.config.image_token_id
            pending = image & (index >= num_computed_tokens)
            rank = pending.long().cumsum(0) - 1
            target = pending & (rank < count)
            # Each placeholder's image starts one after the text token before it.
            last_text = torch.where(image, torch.full_like(index, -1), index).cummax(0).values
            base = torch.where(last_text >= 0, positions[0, last_text.clamp_min(0)] + 1, torch.zeros_like(index))
            values = base[None] + offsets[rank.clamp(0, count - 1)].T
            positions = torch.where(target[None], values.to(positions.dtype), positions)
        delta = int(positions.max()) + 1 - ids.numel() if positions.numel() else -ids.numel()
        return rows, positions, delta


@MULTIMODAL_REGISTRY.register_processor(IdSelectQwen2_5_VLMultiModalProcessor, info=IdSelectQwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class IdSelectQwen2_5_VLForConditionalGeneration(RelevancePruning, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2_5_VLForConditionalGeneration, pruning each image to its budget before the LLM."""

    model_types = ("qwen2_5_vl",)


@MULTIMODAL_REGISTRY.register_processor(IdSelectQwen3VLMultiModalProcessor, info=IdSelectQwen3VLProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class IdSelectQwen3VLForConditionalGeneration(RelevancePruning, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3VLForConditionalGeneration, pruning each image (with its DeepStack rows) to its
    budget before the LLM."""

    model_types = ("qwen3_vl",)


def group_by_size(tensors: Sequence[torch.Tensor]) -> Dict[int, List[int]]:
    """Indices of the tensors by their leading size (host shapes)."""
    groups: Dict[int, List[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(int(t.shape[0]), []).append(i)
    return groups


def layer_relevance(layer: torch.nn.Module, query_hidden: torch.Tensor, key_hidden: torch.Tensor) -> torch.Tensor:
    """[g, T] relevance of g images at one vLLM decoder layer: its input norm, the query and key
    parts of its fused ``qkv_proj`` (per-head ``q_norm`` / ``k_norm`` where the layer has them),
    softmax over T of q k^T / sqrt(d), averaged over all heads (summed over the heads this rank
    holds, then reduced across ranks), min-max normalised per image."""
    attn = layer.self_attn
    g, tokens, width = key_hidden.shape
    heads, kv_heads, head_dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
    norm = layer.input_layernorm
    q = attn.qkv_proj(norm(query_hidden))[0][:, :attn.q_size].reshape(g, heads, head_dim)
    k = attn.qkv_proj(norm(key_hidden.reshape(-1, width)))[0][:, attn.q_size:attn.q_size + attn.kv_size]
    k = k.reshape(g, tokens, kv_heads, head_dim)
    if getattr(attn, "q_norm", None) is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = q.float()  # [g, h, d]
    k = k.float().transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)  # [g, h, T, d]
    # The operations of idselect.importance.instruction_relevance, in its order.
    probs = ((q[:, :, None] @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(head_dim)).softmax(dim=-1)
    if getattr(attn, "total_num_heads", heads) == heads:
        attention = probs.mean(dim=1)
    else:
        from vllm.distributed import tensor_model_parallel_all_reduce

        attention = tensor_model_parallel_all_reduce(probs.sum(dim=1)) / attn.total_num_heads
    return imp.minmax(attention)
