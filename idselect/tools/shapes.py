"""The real models' architecture numbers, written once: the FLOPs presets (``flops.PRESETS``),
the end-to-end benchmark's configs (bench/bench_e2e.py) and the demo's geometry derive from
``MODELS``.

Each entry is one checkpoint at one benchmark image: its vision tower, its projector, its LLM
and its placeholder token ids. Token counts are derived (``Model.vision_tokens`` and friends),
never written, so they cannot disagree with the patch size and image size. ``config`` builds
the transformers config; ``scaled`` replaces widths (bench_e2e's small CPU build, same token
counts). Where a number comes from is written next to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Vision:
    """A vision tower. ``image_size``: the side it sees per pass (CLIP / SigLIP); None for the
    Qwen towers, which take the image at its own resolution (``Model.image_side``)."""

    family: str  # "clip", "siglip", "qwen2_5_vl", "qwen3_vl": the transformers config it becomes
    layers: int
    hidden: int
    intermediate: int
    heads: int
    image_size: Optional[int]
    patch: int
    cls_token: bool = False  # a [CLS] token besides the patches (CLIP)
    gated_mlp: bool = False  # SwiGLU (Qwen2.5-VL) vs plain MLP
    spatial_merge: int = 1  # Qwen: merger of spatial_merge x spatial_merge patches into one token
    temporal_patch: int = 1
    window: Optional[int] = None  # Qwen2.5-VL window attention span, in pixels
    full_attention_blocks: Tuple[int, ...] = ()  # Qwen2.5-VL blocks attending globally despite windows
    deepstack_blocks: Tuple[int, ...] = ()  # Qwen3-VL blocks whose features a DeepStack merger takes
    position_embeddings: Optional[int] = None  # Qwen3-VL learned position grid (entries)
    extra: Dict[str, Any] = field(default_factory=dict)  # further config kwargs, passed as they are


@dataclass(frozen=True)
class LLM:
    """The language model. ``rope_theta`` / ``tie_embeddings`` None: the config class's default."""

    family: str  # "llama", "qwen2", "qwen2_5_vl", "qwen3_vl"
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int  # the checkpoint's embedding table (what transformers builds)
    max_positions: int
    head_dim: Optional[int] = None
    rope_theta: Optional[float] = None
    mrope_section: Optional[Tuple[int, ...]] = None
    mrope_interleaved: bool = False
    tie_embeddings: Optional[bool] = None


@dataclass(frozen=True)
class Model:
    """One checkpoint at one benchmark image of ``image_side`` x ``image_side`` pixels."""

    name: str
    wrapper: str  # "llava", "llava_next", "llava_onevision", "qwen2_5_vl", "qwen3_vl"
    vision: Vision
    llm: LLM
    image_side: int
    image_token: int
    tokens: Dict[str, int] = field(default_factory=dict)  # further token ids, as config kwargs
    grid_pinpoints: Tuple[Tuple[int, int], ...] = ()  # anyres resolutions (LLaVA-NeXT / OneVision)
    projector_hidden: Optional[int] = None  # the projector's middle width (None: the LLM's)
    extra: Dict[str, Any] = field(default_factory=dict)  # further wrapper config kwargs

    @property
    def anyres(self) -> bool:
        return bool(self.grid_pinpoints)

    @property
    def crops_per_side(self) -> int:
        """Anyres crops along each side of the (square) image: 1 without anyres."""
        return self.image_side // self.vision.image_size if self.anyres else 1

    @property
    def vision_passes(self) -> int:
        """Vision-tower passes per image: the base view plus the crops (anyres), else 1."""
        return 1 + self.crops_per_side ** 2 if self.anyres else 1

    @property
    def patches(self) -> int:
        """Patches of one vision-tower pass: (side / patch)^2."""
        return ((self.vision.image_size or self.image_side) // self.vision.patch) ** 2

    @property
    def vision_tokens(self) -> int:
        """Tokens of one vision-tower pass, [CLS] included."""
        return self.patches + int(self.vision.cls_token)

    @property
    def visual_tokens(self) -> int:
        """Placeholder tokens per image in the LLM's input, before pruning. Anyres: the base view,
        the crop grid (square image: nothing unpadded) and one newline per grid row."""
        if self.anyres:
            side = self.crops_per_side * (self.vision.image_size // self.vision.patch)
            return self.patches + side * side + side
        return self.patches // self.vision.spatial_merge ** 2

    @property
    def projector_widths(self) -> Tuple[int, int, int]:
        """Input, middle and output width of the 2-layer projector MLP (the Qwen merger takes
        spatial_merge^2 patches concatenated)."""
        width_in = self.vision.hidden * self.vision.spatial_merge ** 2
        middle = self.projector_hidden or self.llm.hidden
        return width_in, middle, self.llm.hidden


def scaled(model: Model, vision: Dict[str, Any], llm: Dict[str, Any]) -> Model:
    """``model`` with some vision / LLM numbers replaced (e.g. tiny widths for a CPU build):
    the image, patches and token ids stay, so the token counts do."""
    return replace(model, vision=replace(model.vision, **vision), llm=replace(model.llm, **llm))


def _first(blocks: Sequence[int], layers: int) -> list:
    """Block indexes of a ``layers``-deep tower: those that exist; for DeepStack, where the
    last one does not, the first ``len(blocks)`` blocks instead, so that its rows still exist."""
    return list(blocks) if not blocks or max(blocks) < layers else list(range(min(len(blocks), layers)))


def config(model: Model, depth: Optional[int] = None):
    """The transformers config of ``model``. ``depth``: that many layers in each tower
    (real widths, fewer layers); Qwen2.5-VL keeps the full-attention blocks that still exist,
    Qwen3-VL's DeepStack taps the first blocks where its own do not."""
    import transformers as tf

    v, t = model.vision, model.llm
    v_layers, t_layers = (v.layers, t.layers) if depth is None else (depth, depth)
    if v.family in ("clip", "siglip"):
        cls = tf.CLIPVisionConfig if v.family == "clip" else tf.SiglipVisionConfig
        vision = cls(hidden_size=v.hidden, intermediate_size=v.intermediate, num_hidden_layers=v_layers,
                     num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch, **v.extra)
    else:
        vision = dict(depth=v_layers, hidden_size=v.hidden, intermediate_size=v.intermediate, num_heads=v.heads,
                      patch_size=v.patch, spatial_merge_size=v.spatial_merge, temporal_patch_size=v.temporal_patch,
                      out_hidden_size=t.hidden, **v.extra)
        if v.window is not None:
            vision.update(window_size=v.window,
                          fullatt_block_indexes=[i for i in v.full_attention_blocks if i < v_layers])
        if v.position_embeddings is not None:
            vision["num_position_embeddings"] = v.position_embeddings
        if v.deepstack_blocks:
            vision["deepstack_visual_indexes"] = _first(v.deepstack_blocks, v_layers)
    text = dict(hidden_size=t.hidden, intermediate_size=t.intermediate, num_hidden_layers=t_layers,
                num_attention_heads=t.heads, num_key_value_heads=t.kv_heads, vocab_size=t.vocab,
                max_position_embeddings=t.max_positions)
    if t.head_dim is not None:
        text["head_dim"] = t.head_dim
    if t.rope_theta is not None:
        rope = {"rope_type": "default", "rope_theta": t.rope_theta}
        if t.mrope_section is not None:
            rope["mrope_section"] = list(t.mrope_section)
        if t.mrope_interleaved:
            rope["mrope_interleaved"] = True
        text["rope_parameters"] = rope
    if t.tie_embeddings is not None:
        text["tie_word_embeddings"] = t.tie_embeddings
    if t.family in ("llama", "qwen2"):
        text = (tf.LlamaConfig if t.family == "llama" else tf.Qwen2Config)(**text)
    wrapper = {"llava": tf.LlavaConfig, "llava_next": tf.LlavaNextConfig, "llava_onevision": tf.LlavaOnevisionConfig,
               "qwen2_5_vl": tf.Qwen2_5_VLConfig, "qwen3_vl": tf.Qwen3VLConfig}[model.wrapper]
    kwargs = dict(model.tokens, **model.extra)
    if model.anyres:
        kwargs["image_grid_pinpoints"] = [list(p) for p in model.grid_pinpoints]
    token_key = "image_token_id" if model.wrapper.startswith("qwen") else "image_token_index"
    return wrapper(vision_config=vision, text_config=text, **{token_key: model.image_token}, **kwargs)


# -- the registry --------------------------------------------------------------------------------
#: CLIP ViT-L/14 at 336 px (LLaVA-1.5 and LLaVA-NeXT): 24 x 24 patches + [CLS]. projection_dim
#: 768 is CLIP-L's image-text projection (unused by LLaVA; written so the config matches).
CLIP_L_336 = Vision("clip", layers=24, hidden=1024, intermediate=4096, heads=16, image_size=336, patch=14,
                    cls_token=True, extra={"projection_dim": 768})
#: Vicuna-7B / Llama-7B as llava-hf ships it: vocabulary 32000 + <image> + <pad>, padded to a
#: multiple of 64 = 32064; 4096 positions.
VICUNA_7B = LLM("llama", layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32064,
                max_positions=4096)

LLAVA_1_5_7B = Model("llava-1.5-7b", "llava", CLIP_L_336, VICUNA_7B, image_side=336, image_token=32000)

#: anyres at 672 x 672 (the llava-v1.6 checkpoints' pinpoints): base + 2 x 2 crops of 576
#: tokens; the unpadded grid 48 x 48 + 48 newlines.
LLAVA_NEXT_7B = Model("llava-next-7b", "llava_next", CLIP_L_336, VICUNA_7B, image_side=672, image_token=32000,
                      grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)))

_QWEN_TOKENS = {"video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653}

#: Qwen2.5-VL-7B-Instruct at 448 x 448: 32 x 32 patches of 14 px, 2 x 2 merger -> 256 tokens
#: (merger MLP 4 * 1280 = 5120 -> 5120 -> 3584); window attention over 112 px (8 x 8 = 64
#: patches) except the 4 full-attention blocks 7, 15, 23, 31.
QWEN2_5_VL_7B = Model(
    "qwen2.5-vl-7b", "qwen2_5_vl",
    Vision("qwen2_5_vl", layers=32, hidden=1280, intermediate=3420, heads=16, image_size=None, patch=14,
           gated_mlp=True, spatial_merge=2, temporal_patch=2, window=112, full_attention_blocks=(7, 15, 23, 31),
           extra={"tokens_per_second": 2}),
    LLM("qwen2_5_vl", layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152064,
        max_positions=32768, rope_theta=1000000.0, mrope_section=(16, 24, 24)),
    image_side=448, image_token=151655, tokens=_QWEN_TOKENS, projector_hidden=4 * 1280)
#: The same model at 1904 x 1904: 136 x 136 patches, 68 x 68 = 4624 tokens.
QWEN2_5_VL_7B_LARGE = replace(QWEN2_5_VL_7B, name="qwen2.5-vl-7b-large", image_side=1904)

#: Qwen3-VL-8B-Instruct at 512 x 512 (a round 256 tokens; a multiple of 32 px inside the
#: processor's pixel bounds, so not resized): 32 x 32 patches of 16 px, full attention in every
#: vision block, 2 x 2 merger -> 16 x 16 = 256 tokens; merger MLP 4 * 1152 = 4608 -> 4608 ->
#: 4096; DeepStack mergers of the same shape after vision blocks 8, 16 and 24 (0-based), whose
#: outputs the LLM adds to its first 3 layers' hidden states. Numbers: the checkpoint's
#: config.json as public code transcribes it (the Hub file itself was not read): vision depth 27,
#: hidden 1152, intermediate 4304, 16 heads, a learned 48 x 48 position grid (2304); text 36
#: layers, hidden 4096, intermediate 12288, 32 heads, 8 kv heads, head_dim 128, vocab 151936,
#: 262144 positions, rope_theta 5e6 (also NVIDIA Megatron-Bridge's Qwen3-VL provider's
#: rotary_base), interleaved M-RoPE sections 24 / 20 / 20 (of head_dim / 2 = 64), untied LM head
#: (the 2B / 4B tie). These shapes give exactly the 8,767,123,696 parameters the Hub reports
#: (576.4M in vision); rope settings carry no parameters, so only those sources back them. Layer
#: structure from transformers' models/qwen3_vl (plain GELU MLP in vision blocks, SwiGLU in the LLM).
QWEN3_VL_8B = Model(
    "qwen3-vl-8b", "qwen3_vl",
    Vision("qwen3_vl", layers=27, hidden=1152, intermediate=4304, heads=16, image_size=None, patch=16,
           spatial_merge=2, temporal_patch=2, deepstack_blocks=(8, 16, 24), position_embeddings=2304),
    LLM("qwen3_vl", layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, vocab=151936,
        max_positions=262144, head_dim=128, rope_theta=5000000.0, mrope_section=(24, 20, 20), mrope_interleaved=True),
    image_side=512, image_token=151655, tokens=_QWEN_TOKENS, projector_hidden=4 * 1152,
    extra={"tie_word_embeddings": False})

#: llava-hf/llava-onevision-qwen2-7b-ov-hf at 768 x 768, anyres_max_9: best pinpoint 768 x 768,
#: so 5 SigLIP passes of 384 px (base + 2 x 2 crops), 27 x 27 = 729 patches each, no [CLS]; the
#: LLM gets the base 729 + the crop grid 54 x 54 (square: nothing unpadded; sqrt(54 * 54 / (9 *
#: 729)) = 0.67 <= 1.1, so no anyres_max_9 downscaling) + 54 newlines = 3,699 tokens. SigLIP
#: so400m with its last layer dropped: 26 layers, hidden 1152, intermediate 4304, 16 heads, no
#: pooling head (transformers' convert_llava_onevision_weights_to_hf.py; LLaVA-NeXT's
#: siglip_encoder.py drops layers[-1:]). Projector 1152 -> 3584 -> 3584. LLM Qwen2-7B-Instruct's
#: config.json (as public code transcribes it): 28 layers, hidden 3584, intermediate 18944, 28
#: heads, 4 kv heads, rope_theta 1e6, 32768 positions; vocab 152064 + 2 added tokens padded to a
#: multiple of 64 = 152128 by the same conversion script; untied LM head. Token ids, feature
#: layer -1 with the "full" strategy, anyres_max_9 and the 6 x 6 grid of 384 px pinpoints are
#: LlavaOnevisionConfig's defaults, written for this checkpoint; spelled out so that a change of
#: defaults cannot change what is built.
LLAVA_ONEVISION_7B = Model(
    "llava-onevision-7b", "llava_onevision",
    Vision("siglip", layers=26, hidden=1152, intermediate=4304, heads=16, image_size=384, patch=14,
           extra={"vision_use_head": False}),
    LLM("qwen2", layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, vocab=152128, max_positions=32768,
        rope_theta=1000000.0, tie_embeddings=False),
    image_side=768, image_token=151646, tokens={"video_token_index": 151647},
    grid_pinpoints=tuple((h, w) for h in range(384, 2305, 384) for w in range(384, 2305, 384)),
    extra={"vision_feature_layer": -1, "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
           "tie_word_embeddings": False})

MODELS: Dict[str, Model] = {m.name: m for m in (LLAVA_1_5_7B, LLAVA_NEXT_7B, QWEN2_5_VL_7B, QWEN2_5_VL_7B_LARGE,
                                                QWEN3_VL_8B, LLAVA_ONEVISION_7B)}
