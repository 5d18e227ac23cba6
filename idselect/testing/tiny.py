"""Tiny random-weight LVLMs built from configs (no download), for tests and the demo.

Builders return the model only; helpers such as ``llava_next_pixels`` ask the model itself how
many placeholder tokens an image needs, so prompts always match the features."""
from __future__ import annotations

import inspect
from typing import List, Sequence

import torch

IMAGE_TOKEN = 100
VIDEO_TOKEN = 101
PAD_TOKEN = 0
VOCAB = 128
SPECIAL_TOKENS = [PAD_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN, 102, 103]  # 102/103: Qwen vision start / end
GAIN = 2.0  # weight scale times sqrt(fan-in): large enough that images move the logits


def _vision(image_size=28, patch_size=7, layers=3):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                            image_size=image_size, patch_size=patch_size, projection_dim=32)


def _text(layers=2):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=512, pad_token_id=PAD_TOKEN)


def _finish(model, seed):
    """Random weights that make the model depend on its image: norm scales near 1, matrices
    scaled by their fan-in (activations keep their size through every layer, so the image
    reaches the logits), embedding tables of unit scale, small biases. Pinned by
    tests/test_tiny_models.py."""
    from torch import nn

    torch.manual_seed(seed)
    with torch.no_grad():
        tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for name, p in model.named_parameters():
            if id(p) in tables:
                p.normal_(0.0, 1.0)
            elif p.dim() > 1:
                p.normal_(0.0, GAIN / p[0].numel() ** 0.5)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
        # Special tokens score 0: with logits of a few units the argmax is never a placeholder
        # (a generated placeholder would make the re-fed sequence invalid).
        model.get_output_embeddings().weight[SPECIAL_TOKENS] = 0.0
    model.generation_config.pad_token_id = PAD_TOKEN
    model.generation_config.eos_token_id = None  # random weights: always generate max_new_tokens
    return model.eval()


def tiny_llava(seed: int = 0, attn_implementation: str = "sdpa", tower: str = "clip"):
    """LLaVA-1.5 layout: CLIP (3 layers, 28 px, 7 px patches: 16 tokens + [CLS]), feature layer
    -2, 'default' strategy, 2-layer Llama with grouped KV heads. ``tower="siglip"``: the
    llava-interleave layout (SigLIP, no [CLS], 'full' strategy, 16 tokens)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    vision, strategy = _vision(), "default"
    if tower == "siglip":
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    image_size=28, patch_size=7)
        strategy = "full"
    cfg = LlavaConfig(vision_config=vision, text_config=_text(), image_token_index=IMAGE_TOKEN,
                      vision_feature_layer=-2, vision_feature_select_strategy=strategy)
    cfg._attn_implementation = attn_implementation
    return _finish(LlavaForConditionalGeneration(cfg), seed)


def tiny_llava_next(seed: int = 0):
    """LLaVA-NeXT anyres: 28 px crops on a grid of up to 2 x 2, newline tokens."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    cfg = LlavaNextConfig(vision_config=_vision(), text_config=_text(), image_token_index=IMAGE_TOKEN,
                          image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]], vision_feature_layer=-2,
                          vision_feature_select_strategy="default")
    return _finish(LlavaNextForConditionalGeneration(cfg), seed)


def tiny_video_llava(seed: int = 0):
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    cfg = VideoLlavaConfig(vision_config=_vision(), text_config=_text(), image_token_index=IMAGE_TOKEN,
                           video_token_index=VIDEO_TOKEN, vision_feature_layer=-2,
                           vision_feature_select_strategy="default")
    return _finish(VideoLlavaForConditionalGeneration(cfg), seed)


def video_llava_image_argument(model) -> str:
    """The keyword for image pixels: ``pixel_values_images`` on transformers 5.17 (which
    silently ignores ``pixel_values``), ``pixel_values`` on newer 5.x."""
    params = inspect.signature(type(model).forward).parameters
    return "pixel_values" if "pixel_values" in params else "pixel_values_images"


def anyres_pixels(model, image_sizes: Sequence[Sequence[int]], seed: int = 0):
    """LLaVA-NeXT / LLaVA-OneVision anyres inputs for the given (H, W) sizes: pixel_values
    [images, crops, 3, S, S], image_sizes, and the placeholder count of each image (asked of
    the unpatched model itself)."""
    import sys

    num_crops = sys.modules[type(model.model).__module__].image_size_to_num_patches
    side = model.config.vision_config.image_size
    g = torch.Generator().manual_seed(seed)
    crops = [num_crops(s, model.config.image_grid_pinpoints, side) for s in image_sizes]
    pixel_values = torch.randn(len(image_sizes), max(crops), 3, side, side, generator=g)
    sizes = torch.tensor(image_sizes)
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes, return_dict=True).pooler_output
    return pixel_values, sizes, [int(f.shape[0]) for f in feats]


def prompt(text_before: List[int], media_tokens: int, text_after: List[int], token: int = IMAGE_TOKEN) -> List[int]:
    return list(text_before) + [token] * media_tokens + list(text_after)


def left_pad(rows: List[List[int]]):
    """input_ids and attention_mask, left-padded (the convention generate() expects)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def tiny_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL layout: vision depth 2 with window attention (window 56 px = 2 merged
    units) and one full-attention block, 2 x 2 merger, text M-RoPE (mrope_section 2/2/2)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=56, out_hidden_size=48, fullatt_block_indexes=[1], tokens_per_second=2)
    text = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=PAD_TOKEN, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]})
    cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
                           vision_start_token_id=102, vision_end_token_id=103)
    return _finish(Qwen2_5_VLForConditionalGeneration(cfg), seed)


#: Qwen3-VL / Qwen3.5 vision tower: depth 3, 8 px patches, a learned 4 x 4 position grid, 2 x 2 merger.
_QWEN3_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=8, spatial_merge_size=2,
                     temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=16)


def tiny_qwen3_vl(seed: int = 0):
    """Qwen3-VL layout: vision depth 3 (8 px patches, learned 4 x 4 position grid) with
    DeepStack features from vision layers 0 and 1 added after LLM layers 0 and 1, 2 x 2 merger,
    3-layer text model with interleaved M-RoPE (mrope_section 2/2/2 of head_dim 12)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    vision = dict(_QWEN3_VISION, deepstack_visual_indexes=[0, 1])
    text = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=12, max_position_embeddings=1024, pad_token_id=PAD_TOKEN,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2],
                                 "mrope_interleaved": True})
    cfg = Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
                        vision_start_token_id=102, vision_end_token_id=103)
    return _finish(Qwen3VLForConditionalGeneration(cfg), seed)


def tiny_qwen3_5(seed: int = 0):
    """Qwen3.5 layout: Qwen3-VL's vision path without DeepStack, and a hybrid 4-layer text
    model (Gated DeltaNet linear attention in layers 0 and 2, gated full attention with
    q / k norms in layers 1 and 3), interleaved M-RoPE on half of head_dim 12."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    vision = _QWEN3_VISION
    text = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=12, max_position_embeddings=1024, pad_token_id=PAD_TOKEN,
                linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"] * 2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 1],
                                 "mrope_interleaved": True, "partial_rotary_factor": 0.5})
    cfg = Qwen3_5Config(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
                        vision_start_token_id=102, vision_end_token_id=103)
    return _finish(Qwen3_5ForConditionalGeneration(cfg), seed)


def tiny_llava_onevision(seed: int = 0):
    """LLaVA-OneVision layout: SigLIP (3 layers, 28 px crops, 7 px patches: 16 tokens, no
    [CLS]), anyres_max_9 on a grid of up to 2 x 2 crops with newline tokens, 'full' strategy,
    feature layer -1; videos pooled 2 x 2 per frame plus one newline."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=28, patch_size=7)
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=_text(), image_token_index=IMAGE_TOKEN,
                               video_token_index=VIDEO_TOKEN, image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]],
                               vision_feature_layer=-1, vision_feature_select_strategy="full",
                               vision_aspect_ratio="anyres_max_9")
    return _finish(LlavaOnevisionForConditionalGeneration(cfg), seed)


def tiny_internvl(seed: int = 0):
    """InternVL layout: InternViT (2 layers, 56 px tiles, 7 px patches: 64 patches + [CLS]),
    pixel shuffle 0.5 (16 tokens per tile), a Qwen2 LLM."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    vision = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  image_size=[56, 56], patch_size=[7, 7])
    text = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=PAD_TOKEN)
    cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, downsample_ratio=0.5,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    return _finish(InternVLForConditionalGeneration(cfg), seed)
