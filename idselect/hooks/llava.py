"""LLaVA-1.5 (``llava``), LLaVA-NeXT (``llava_next``) and Video-LLaVA (``video_llava``)."""
from __future__ import annotations

import sys
from typing import Dict, List, Optional

import torch
from torch import nn

from .. import importance as imp
from .compat import bound_arguments
from .core import FamilyAdapter, Media, PatchHandle


#: Vision towers whose first token is [CLS] (saliency available) and those without one.
CLS_TOWERS = ("clip_vision_model", "internvl_vision")
NO_CLS_TOWERS = ("siglip_vision_model",)


def encoder_layers(tower: nn.Module):
    """The transformer layers of a vision tower (CLIP / SigLIP style)."""
    for path in ("vision_model.encoder.layers", "encoder.layers", "encoder.layer"):
        obj = tower
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise TypeError(f"idselect: cannot find the encoder layers of {type(tower).__name__}")


def layer_feeding(tower: nn.Module, feature_layer) -> Optional[nn.Module]:
    """The encoder layer that produces hidden state ``feature_layer`` (the last one, if the
    model concatenates several); None for the embeddings, which no layer produces."""
    if isinstance(feature_layer, (list, tuple)):
        feature_layer = feature_layer[-1]
    layers = encoder_layers(tower)
    index = feature_layer % (len(layers) + 1)
    return layers[index - 1] if index > 0 else None


def cls_attention_of(layer: Optional[nn.Module], layer_input: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Raw [CLS] attention [images, T] of ``layer`` on its captured input."""
    if layer is None or layer_input is None:
        return None
    with torch.no_grad():
        return imp.cls_attention(layer, layer_input)


def placeholder_mask(base: nn.Module, token_id: int, input_ids, inputs_embeds) -> torch.Tensor:
    if input_ids is not None:
        return input_ids == token_id
    token = base.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
    return (inputs_embeds == token).all(-1)


def image_and_video_masks(base: nn.Module, original, args, kwargs) -> Dict[str, torch.Tensor]:
    """Placeholder positions of both modalities, for models with image and video tokens."""
    named = bound_arguments(original, args, kwargs)
    ids, embeds = named.get("input_ids"), named.get("inputs_embeds")
    return {"image": placeholder_mask(base, base.config.image_token_id, ids, embeds),
            "video": placeholder_mask(base, base.config.video_token_id, ids, embeds)}


class LlavaAdapter(FamilyAdapter):
    model_type = "llava"
    tower_attr = "vision_tower"
    supported_towers = CLS_TOWERS + NO_CLS_TOWERS  # vision_config.model_type values this family serves

    def feature_layer_and_strategy(self, base, named):
        layer = named.get("vision_feature_layer")
        strategy = named.get("vision_feature_select_strategy")
        return (base.config.vision_feature_layer if layer is None else layer,
                base.config.vision_feature_select_strategy if strategy is None else strategy)

    def saliency_layer(self, base, original, tower_attr, args, kwargs) -> Optional[nn.Module]:
        if not self.has_saliency(base):  # no [CLS] token: no saliency to capture
            return None
        named = bound_arguments(original, args, kwargs)
        layer = named.get("vision_feature_layer")
        return layer_feeding(getattr(base, tower_attr), base.config.vision_feature_layer if layer is None else layer)

    def wrap_features(self, handle, base, name, tower_attr, describe) -> None:
        handle.replace(base, name, lambda orig: handle.wrap_feature_fn(
            orig,
            lambda *a, **k: self.saliency_layer(base, orig, tower_attr, a, k),
            lambda out, layer_input, *a, **k: describe(
                base, orig, out, cls_attention_of(self.saliency_layer(base, orig, tower_attr, a, k), layer_input), a, k)))

    def describe_images(self, base, original, output, attention, args, kwargs) -> List[Media]:
        named = bound_arguments(original, args, kwargs)
        _, strategy = self.feature_layer_and_strategy(base, named)
        features = output.pooler_output
        counts = [int(f.shape[0]) for f in features]
        media = []
        for i, n in enumerate(counts):
            sal = None
            if attention is not None and named.get("image_sizes") is None:
                row = attention[i, 1:] if strategy == "default" else attention[i]
                sal = row if row.numel() == n else None
            media.append(Media("image", n, sal))
        return media

    def token_masks(self, base, original, args, kwargs) -> Dict[str, torch.Tensor]:
        named = bound_arguments(original, args, kwargs)
        return {"image": placeholder_mask(base, base.config.image_token_id, named.get("input_ids"), named.get("inputs_embeds"))}

    def vision_model_type(self, model: nn.Module) -> Optional[str]:
        return getattr(getattr(model.config, "vision_config", None), "model_type", None)

    def has_saliency(self, model: nn.Module) -> bool:
        return self.vision_model_type(model) in CLS_TOWERS

    def check(self, model: nn.Module) -> None:
        tower = self.vision_model_type(model)
        if tower not in self.supported_towers:
            raise TypeError(
                f"idselect.patch: {self.model_type} with a {tower!r} vision tower is not supported "
                f"(supported towers: {', '.join(self.supported_towers)})"
            )

    def install(self, handle: PatchHandle) -> None:
        base = self.base(handle.model)
        self.wrap_features(handle, base, "get_image_features", self.tower_attr, self.describe_images)
        self.install_common(handle, lambda *a, **k: self.token_masks(base, base.forward, a, k))


class LlavaNextAdapter(LlavaAdapter):
    """Anyres: saliency per crop from each crop's own [CLS], laid out exactly as the features
    by the model's own ``pack_image_features``. Newline tokens are never candidates: when an
    image is pruned they are dropped and its whole budget goes to image tokens."""

    model_type = "llava_next"

    def describe_images(self, base, original, output, attention, args, kwargs) -> List[Media]:
        named = bound_arguments(original, args, kwargs)
        _, strategy = self.feature_layer_and_strategy(base, named)
        features = output.pooler_output
        if attention is None:
            return [Media("image", int(f.shape[0])) for f in features]
        if strategy == "default":
            attention = attention[:, 1:]
        image_sizes = named["image_sizes"]
        module = sys.modules[type(base).__module__]
        crops = [module.image_size_to_num_patches(image_size=s, grid_pinpoints=base.config.image_grid_pinpoints,
                                                  patch_size=base.config.vision_config.image_size) for s in image_sizes]
        per_image = torch.split(attention[..., None], crops, dim=0)
        # Newline positions come out as -1 (attention probabilities are >= 0).
        sentinel = torch.tensor([-1.0], device=attention.device)
        packed, _ = base.pack_image_features(list(per_image), image_sizes, strategy, image_newline=sentinel)
        media = []
        for f, p in zip(features, packed):
            values = p[:, 0]
            if values.numel() != f.shape[0]:
                media.append(Media("image", int(f.shape[0])))
                continue
            candidates = values >= 0
            media.append(Media("image", int(f.shape[0]), values.clamp_min(0), candidates))
        return media


class VideoLlavaAdapter(LlavaAdapter):
    """Images as in LLaVA-1.5; each video is one medium over all its frames (joint selection;
    ``keep`` counts tokens per video)."""

    model_type = "video_llava"
    tower_attr = "image_tower"

    def describe_videos(self, base, original, output, attention, args, kwargs) -> List[Media]:
        named = bound_arguments(original, args, kwargs)
        videos = named["pixel_values_videos"]
        num_videos, frames = videos.shape[:2]
        per_frame = output.pooler_output.shape[1]  # [CLS] kept: attention is [V*F, T] as is
        media = []
        for v in range(num_videos):
            sal = None
            if attention is not None and attention.shape[1] == per_frame:
                sal = attention[v * frames : (v + 1) * frames].reshape(-1)
            media.append(Media("video", frames * per_frame, sal))
        return media

    def describe_images(self, base, original, output, attention, args, kwargs) -> List[Media]:
        named = bound_arguments(original, args, kwargs)
        _, strategy = self.feature_layer_and_strategy(base, named)
        features = output.pooler_output  # [images, T, H]
        media = []
        for i in range(features.shape[0]):
            sal = None
            if attention is not None:
                sal = attention[i, 1:] if strategy == "default" else attention[i]
                sal = sal if sal.numel() == features.shape[1] else None
            media.append(Media("image", int(features.shape[1]), sal))
        return media

    def token_masks(self, base, original, args, kwargs) -> Dict[str, torch.Tensor]:
        return image_and_video_masks(base, original, args, kwargs)

    def install(self, handle: PatchHandle) -> None:
        super().install(handle)
        base = self.base(handle.model)
        self.wrap_features(handle, base, "get_video_features", "video_tower", self.describe_videos)
