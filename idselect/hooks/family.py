"""What a model family tells the hooks, declared: ``Family``. One file per family subclasses it
(docs/hooks.md, "Adding a family"), and ``idselect.hooks.registry`` lists it by model_type.

A family declares
- ``feature_functions``: the base model's functions that encode media, with the modality they
  produce and the vision tower whose [CLS] attention gives saliency (None: no saliency);
- ``modalities``: placeholder tokens, ``config.<modality>_token_id`` (``placeholder_token_id``);
- ``media_inputs``: the model inputs that carry media;
- ``positions``: "1d" or "mrope" (3-D M-RoPE positions; the model's ``rope_deltas`` are kept
  right for the pruned cache);
- ``supported_towers`` / ``saliency_towers``: the vision towers (``vision_config.model_type``)
  it serves, and those with a [CLS] token (importance "auto" is "unified" there, else
  "relevance");
- ``merge_adjacent``: modalities whose media directly following each other form one
  (InternVL's tiles);

and writes ``describe``: the media a feature function's output holds. A family with per-token
LLM inputs of its own (Qwen3-VL's DeepStack rows) also writes ``prune_language_inputs``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .. import importance as imp
from .engine import Media

#: Vision towers whose first token is [CLS] (saliency available) and those without one.
CLS_TOWERS = ("clip_vision_model", "internvl_vision")
NO_CLS_TOWERS = ("siglip_vision_model",)


class Family:
    """The declarative description of a model family (class attributes) and its ``describe``."""

    model_type: str = ""
    #: base model function -> (modality, vision tower attribute for saliency or None)
    feature_functions: Dict[str, Tuple[str, Optional[str]]] = {"get_image_features": ("image", "vision_tower")}
    modalities: Tuple[str, ...] = ("image",)
    media_inputs: Tuple[str, ...] = ("pixel_values",)
    positions: str = "1d"
    supported_towers: Optional[Tuple[str, ...]] = None  # None: any tower of this model_type
    saliency_towers: Tuple[str, ...] = ()
    merge_adjacent: Tuple[str, ...] = ()

    # -- where things are ------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        return model.model if hasattr(model, "model") and hasattr(model.model, "language_model") else model

    def language_model(self, model: nn.Module) -> nn.Module:
        return self.base(model).language_model

    def text_config(self, model: nn.Module):
        return model.config.text_config

    def decoder_layers(self, llm: nn.Module):
        return llm.layers

    def attention_layers(self, llm: nn.Module) -> List[int]:
        """Indices of the LLM layers with softmax attention (``self_attn``), which relevance
        reads W_Q / W_K from (Qwen3.5's linear-attention layers have none)."""
        return [i for i, layer in enumerate(self.decoder_layers(llm)) if hasattr(layer, "self_attn")]

    def placeholder_token_id(self, config, modality: str) -> int:
        """The token id of ``modality``'s placeholders in the LLM input."""
        return getattr(config, f"{modality}_token_id")

    def vision_model_type(self, model: nn.Module) -> Optional[str]:
        return getattr(getattr(model.config, "vision_config", None), "model_type", None)

    def has_saliency(self, model: nn.Module) -> bool:
        """Whether the vision tower offers [CLS] saliency."""
        return self.vision_model_type(model) in self.saliency_towers

    def check(self, model: nn.Module) -> None:
        """Raise TypeError for a checkpoint of this model_type that the hooks cannot serve."""
        tower = self.vision_model_type(model)
        if self.supported_towers is not None and tower not in self.supported_towers:
            raise TypeError(
                f"idselect.patch: {self.model_type} with a {tower!r} vision tower is not supported "
                f"(supported towers: {', '.join(self.supported_towers)})"
            )

    def saliency_layer(self, base: nn.Module, tower_attr: Optional[str], named: Dict[str, Any]) -> Optional[nn.Module]:
        """The vision layer whose input the feature function's call captures for saliency."""
        if tower_attr is None or not self.has_saliency(base):
            return None
        layer = named.get("vision_feature_layer")
        return layer_feeding(getattr(base, tower_attr), base.config.vision_feature_layer if layer is None else layer)

    def feature_strategy(self, base: nn.Module, named: Dict[str, Any]) -> str:
        """The call's vision_feature_select_strategy ("default" drops [CLS] from the features)."""
        strategy = named.get("vision_feature_select_strategy")
        return base.config.vision_feature_select_strategy if strategy is None else strategy

    # -- what the family writes ------------------------------------------------------------
    def describe(self, modality: str, base: nn.Module, named: Dict[str, Any], output: Any,
                 attention: Optional[torch.Tensor]) -> List[Media]:
        """The media in one feature function's ``output`` (in placeholder order).

        Parameters
        ----------
        modality : str
            From ``feature_functions``.
        base : nn.Module
            The base model.
        named : dict
            The feature function's arguments by name.
        output : model output
            What the feature function returned (``pooler_output``: per item features).
        attention : Tensor or None
            Raw [CLS] attention [items, T] of the saliency layer, None without saliency.
        """
        raise NotImplementedError

    def prune_language_inputs(self, kwargs: Dict[str, Any], new_kwargs: Dict[str, Any], keep: torch.Tensor,
                              place: Callable[[torch.Tensor], torch.Tensor], kept_media_tokens: int) -> None:
        """Prune the family's own per-token LLM inputs as the sequence is pruned: ``keep``
        [B, q] marks the columns that stay, ``place`` maps a [B, q, ...] tensor to the pruned
        layout, ``kept_media_tokens`` is how many placeholder columns stay over the batch
        (known on the host: sizes need no read from the device). Writes into ``new_kwargs``."""


# -- helpers for the families ----------------------------------------------------------------
def encoder_layers(tower: nn.Module):
    """The transformer layers of a vision tower (CLIP / SigLIP / InternViT style)."""
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


def layer_position(tower: nn.Module, layer: nn.Module) -> int:
    """Index of ``layer`` among the tower's encoder layers: its input is the tower's
    ``hidden_states[index]`` (embeddings first, then each layer's output)."""
    return next(i for i, candidate in enumerate(encoder_layers(tower)) if candidate is layer)


def cls_attention_of(layer: Optional[nn.Module], layer_input: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Raw [CLS] attention [images, T] of ``layer`` on its captured input."""
    if layer is None or layer_input is None:
        return None
    with torch.no_grad():
        return imp.cls_attention(layer, layer_input)


def patch_saliency(attention: torch.Tensor, strategy: str, item: int, num_tokens: int) -> Optional[torch.Tensor]:
    """Item ``item``'s saliency over its feature tokens: [CLS] dropped with the "default"
    strategy; None when the counts differ (features the attention does not lay out)."""
    row = attention[item, 1:] if strategy == "default" else attention[item]
    return row if row.numel() == num_tokens else None
