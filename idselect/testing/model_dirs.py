"""Tiny random-weight models saved as complete model folders (config, weights, tokenizer,
processor, chat template), for engines that load a path: vLLM and ``vllm serve``.

The weights are written in the layout of the Hub's llava-hf checkpoints
(``language_model.model.*``, ``vision_tower.vision_model.*``), which vLLM 0.32 loads;
transformers 5's ``save_pretrained`` writes another layout that vLLM 0.32 does not map. The
tokenizer is a word-level vocabulary, so a prompt's words and token ids correspond one to one.
Widths fit vLLM's CPU attention (head size 32 or 64).
"""
from __future__ import annotations

import os
from typing import List

import torch

from ..tools.shapes import LLAVA_1_5_7B
from . import tiny

#: Words of the tiny vocabulary, after the special tokens (ids below).
WORDS = ["user", "assistant", ":", "describe", "the", "image", "what", "is", "in", "this", "picture", "and",
         "a", "an", "of", "to", "colour", "shape", "count", "left", "right", "top", "bottom", "please"]
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
IMAGE = "<image>"
#: One user turn, then "assistant :" ; an image part becomes "<image>" (vLLM's LLaVA placeholder).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : "
    "{% if message['content'] is string %}{{ message['content'] }} "
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endif %}{% endfor %}assistant :"
)
IMAGE_SIZE = 28  # the tiny shape's pixels; patches of 7: 16 tokens and [CLS]


def vocabulary() -> dict:
    """Token ids: the special tokens first, ``<image>`` at tiny.IMAGE_TOKEN, words in between,
    filler words up to tiny.VOCAB."""
    vocab = {PAD: tiny.PAD_TOKEN, UNK: 1, BOS: 2, EOS: 3, IMAGE: tiny.IMAGE_TOKEN}
    free = (i for i in range(tiny.VOCAB) if i not in vocab.values() and i not in tiny.SPECIAL_TOKENS)
    for word in WORDS:
        vocab[word] = next(free)
    for i in free:
        vocab[f"w{i}"] = i
    return vocab


#: Shapes of the folders (both fit vLLM's CPU attention: head size 32 or 64).
#: tiny: the tests' (16 visual tokens); bench: LLaVA-1.5's 576 visual tokens (336 px, 14 px
#: patches) at widths a 2-core CPU runs in seconds (bench/bench_vllm.py).
SHAPES = {
    "tiny": dict(image_size=IMAGE_SIZE, patch_size=7, vision_hidden=64, vision_layers=3, vision_heads=2,
                 text_hidden=128, text_layers=2, text_heads=4, text_kv_heads=2),
    "bench": dict(image_size=LLAVA_1_5_7B.vision.image_size, patch_size=LLAVA_1_5_7B.vision.patch,
                  vision_hidden=256, vision_layers=4, vision_heads=4,
                  text_hidden=512, text_layers=4, text_heads=8, text_kv_heads=8),
}


#: LLaVA-NeXT's anyres grids for the tiny shape (28 px crops: up to 2 x 2 crops and a base view).
TINY_GRID_PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def llava_for_engines(seed: int = 0, shape: str = "tiny", family: str = "llava"):
    """The LLaVA-1.5 layout (``family="llava"``; CLIP with [CLS], feature layer -2, 'default'
    strategy, Llama) or LLaVA-NeXT's anyres layout (``"llava_next"``, tiny shape only) at a
    shape of ``SHAPES``, with idselect.testing.tiny's random-weight recipe."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaNextConfig, LlavaNextForConditionalGeneration)

    if shape not in SHAPES:
        raise ValueError(f"idselect: shape must be one of {sorted(SHAPES)}, got {shape!r}")
    if family not in ("llava", "llava_next") or (family == "llava_next" and shape != "tiny"):
        raise ValueError(f"idselect: family must be 'llava' (any shape) or 'llava_next' (shape 'tiny'), "
                         f"got family={family!r}, shape={shape!r}")
    d = SHAPES[shape]
    vision = CLIPVisionConfig(hidden_size=d["vision_hidden"], intermediate_size=2 * d["vision_hidden"],
                              num_hidden_layers=d["vision_layers"], num_attention_heads=d["vision_heads"],
                              image_size=d["image_size"], patch_size=d["patch_size"], projection_dim=d["vision_hidden"])
    text = LlamaConfig(hidden_size=d["text_hidden"], intermediate_size=2 * d["text_hidden"],
                       num_hidden_layers=d["text_layers"], num_attention_heads=d["text_heads"],
                       num_key_value_heads=d["text_kv_heads"], vocab_size=tiny.VOCAB, max_position_embeddings=2048,
                       pad_token_id=tiny.PAD_TOKEN, bos_token_id=2, eos_token_id=3)
    common = dict(vision_config=vision, text_config=text, image_token_index=tiny.IMAGE_TOKEN,
                  vision_feature_layer=-2, vision_feature_select_strategy="default")
    if family == "llava_next":
        cfg = LlavaNextConfig(image_grid_pinpoints=TINY_GRID_PINPOINTS, **common)
        model_class = LlavaNextForConditionalGeneration
    else:
        cfg, model_class = LlavaConfig(**common), LlavaForConditionalGeneration
    cfg._attn_implementation = "sdpa"
    return tiny._finish(model_class(cfg), seed)


def hub_layout_state_dict(model) -> dict:
    """The model's weights under the llava-hf checkpoint names."""
    renames = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
               ("model.vision_tower.", "vision_tower.vision_model."),
               ("model.multi_modal_projector.", "multi_modal_projector."), ("model.image_newline", "image_newline")]
    out = {}
    for name, tensor in model.state_dict().items():
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        out[name] = tensor.detach().contiguous().clone()
    return out


def save_tiny_llava(path: str, seed: int = 0, shape: str = "tiny", family: str = "llava"):
    """Write a loadable folder at ``path`` (``shape``: a key of ``SHAPES``; ``family``: "llava"
    or "llava_next"); returns the in-memory model (float32, eval mode) whose weights the folder
    holds."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import (CLIPImageProcessor, LlavaNextImageProcessor, LlavaNextProcessor, LlavaProcessor,
                              PreTrainedTokenizerFast)

    model = llava_for_engines(seed, shape, family)
    size, patch = SHAPES[shape]["image_size"], SHAPES[shape]["patch_size"]
    os.makedirs(path, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    save_file(hub_layout_state_dict(model), os.path.join(path, "model.safetensors"), metadata={"format": "pt"})

    word_level = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token=UNK, pad_token=PAD, bos_token=BOS,
                                        eos_token=EOS, extra_special_tokens={"image_token": IMAGE})
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    tokenizer.chat_template = CHAT_TEMPLATE
    sizes = dict(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_convert_rgb=True)
    options = dict(tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token=IMAGE)
    if family == "llava_next":
        images = LlavaNextImageProcessor(image_grid_pinpoints=TINY_GRID_PINPOINTS, **sizes)
        processor = LlavaNextProcessor(image_processor=images, **options)
    else:
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(**sizes), **options)
    processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def prompt_ids(words: List[str], images: int = 1) -> List[int]:
    """Token ids of ``user : <image> ... words assistant :`` for ``images`` images."""
    vocab = vocabulary()
    tokens = ["user", ":"] + [IMAGE] * images + list(words) + ["assistant", ":"]
    return [vocab[t] for t in tokens]


def sample_image(seed: int):
    """A random RGB picture (PIL) of one of four small sizes, from ``seed``: the same picture
    in every process (tests compare vLLM's engine processes with transformers)."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    height, width = [(40, 36), (28, 28), (64, 50), (30, 45)][seed % 4]
    return Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))


# -- Qwen2.5-VL: the same word-level vocabulary, with Qwen's vision tokens ---------------------

QWEN_IMAGE, QWEN_VIDEO, VISION_START, VISION_END = "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
#: One image part: what Qwen's chat template writes for it (vLLM's placeholder string too).
QWEN_IMAGE_PART = [VISION_START, QWEN_IMAGE, VISION_END]
#: The least pixels an image is resized to (Qwen2.5-VL's 14 px patches; scaled for Qwen3-VL's 16).
#: The most: QWEN_SHAPES' max_side squared, so sample_qwen_image's pictures give 12-36 visual
#: tokens in the tiny folders, tall and wide ones among them.
QWEN_MIN_PIXELS = 56 * 56


def qwen_vocabulary() -> dict:
    """vocabulary() with Qwen's image, video and vision start / end tokens at the ids the tiny
    Qwen configs use (tiny.IMAGE_TOKEN, tiny.VIDEO_TOKEN, 102, 103)."""
    vocab = vocabulary()
    specials = {QWEN_IMAGE: tiny.IMAGE_TOKEN, QWEN_VIDEO: tiny.VIDEO_TOKEN, VISION_START: 102, VISION_END: 103}
    vocab = {word: i for word, i in vocab.items() if i not in specials.values() and word != IMAGE}
    vocab.update(specials)
    return vocab


QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
#: Pixels per vision patch: Qwen2.5-VL 14, Qwen3-VL 16 (a 2 x 2 merge makes units of 28 / 32 px).
QWEN_PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}


#: Qwen shapes: tiny (the tests': LLM 128 wide, head size 32) and bench (bench/bench_vllm.py:
#: 256 visual tokens for a 448 px (Qwen2.5-VL) / 512 px (Qwen3-VL) square image, LLM 512 wide x 4
#: layers, head size 64, vision 256 wide x 2 layers), both at widths vLLM's CPU attention runs.
#: The bench tower's depth keeps the ratio of vision to LLM prefill work per image near the real
#: models' (multiply-adds, one 256-token image and 16 text tokens: Qwen2.5-VL-7B about 0.36,
#: Qwen3-VL-8B about 0.22; the bench shapes about 0.47 and 0.38; 4 vision layers would give
#: about 0.95), so the benchmark does not weigh the tower, which pruning does not shorten, more
#: than a real model does.
QWEN_SHAPES = {
    "tiny": dict(vision_hidden=64, vision_heads=2, text_hidden=128, text_heads=4, text_kv_heads=2, text_layers=2,
                 mrope_section=[4, 6, 6], position_grid=16, max_side=168),
    "bench": dict(vision_hidden=256, vision_heads=4, text_hidden=512, text_heads=8, text_kv_heads=8, text_layers=4,
                  mrope_section=[8, 12, 12], position_grid=256, max_side=448),
}


def qwen_for_engines(seed: int = 0, family: str = "qwen2_5_vl", shape: str = "tiny"):
    """A Qwen layout of ``QWEN_SHAPES[shape]``. ``family="qwen2_5_vl"``: vision depth 2 with window
    attention and one full-attention block, 2 x 2 merger. ``"qwen3_vl"``: vision depth 3 (tiny)
    or 2 (bench) with a learned position grid, DeepStack features from vision layers 0 and 1,
    interleaved M-RoPE, q/k norms in the LLM."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    if family not in QWEN_FAMILIES or shape not in QWEN_SHAPES:
        raise ValueError(f"idselect: family must be one of {QWEN_FAMILIES} and shape one of {sorted(QWEN_SHAPES)}, "
                         f"got family={family!r}, shape={shape!r}")
    d = QWEN_SHAPES[shape]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": d["mrope_section"]}
    text = dict(vocab_size=tiny.VOCAB, hidden_size=d["text_hidden"], intermediate_size=2 * d["text_hidden"],
                num_hidden_layers=d["text_layers"], num_attention_heads=d["text_heads"],
                num_key_value_heads=d["text_kv_heads"], max_position_embeddings=4096, pad_token_id=tiny.PAD_TOKEN,
                bos_token_id=2, eos_token_id=3, rope_parameters=rope)
    width = dict(hidden_size=d["vision_hidden"], intermediate_size=2 * d["vision_hidden"], num_heads=d["vision_heads"],
                 out_hidden_size=d["text_hidden"])
    depth = 2
    tokens = dict(image_token_id=tiny.IMAGE_TOKEN, video_token_id=tiny.VIDEO_TOKEN, vision_start_token_id=102,
                  vision_end_token_id=103)
    if family == "qwen2_5_vl":
        vision = dict(depth=depth, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[depth - 1], tokens_per_second=2, **width)
        cfg, model_class = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **tokens), Qwen2_5_VLForConditionalGeneration
    else:
        vision = dict(depth=depth + (shape == "tiny"), patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=d["position_grid"], deepstack_visual_indexes=[0, 1], **width)
        text.update(head_dim=d["text_hidden"] // d["text_heads"], rope_parameters=dict(rope, mrope_interleaved=True))
        cfg, model_class = Qwen3VLConfig(vision_config=vision, text_config=text, **tokens), Qwen3VLForConditionalGeneration
    cfg._attn_implementation = "sdpa"
    return tiny._finish(model_class(cfg), seed)


def save_tiny_qwen(path: str, seed: int = 0, family: str = "qwen2_5_vl", shape: str = "tiny"):
    """Write a loadable Qwen2.5-VL or Qwen3-VL folder (``family``, see qwen_for_engines) at
    ``path``; returns the in-memory model (float32, eval mode) whose weights it holds.
    transformers 5 names the weights ``model.visual.*`` / ``model.language_model.*``, which vLLM
    maps."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)

    model = qwen_for_engines(seed, family, shape)
    os.makedirs(path, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})

    word_level = Tokenizer(models.WordLevel(vocab=qwen_vocabulary(), unk_token=UNK))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##")
    specials = [QWEN_IMAGE, QWEN_VIDEO, VISION_START, VISION_END]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token=UNK, pad_token=PAD, bos_token=BOS,
                                        eos_token=EOS,
                                        extra_special_tokens={"image_token": QWEN_IMAGE, "video_token": QWEN_VIDEO,
                                                              "vision_start_token": VISION_START,
                                                              "vision_end_token": VISION_END})
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    template = CHAT_TEMPLATE.replace("<image> ", "<|vision_start|><|image_pad|><|vision_end|> ")
    tokenizer.chat_template = template
    patch = QWEN_PATCH[family]
    max_side = QWEN_SHAPES[shape]["max_side"] * patch // 14
    bounds = dict(min_pixels=QWEN_MIN_PIXELS * patch * patch // 196, max_pixels=max_side * max_side,
                  patch_size=patch, merge_size=2, temporal_patch_size=2)
    images = Qwen2VLImageProcessor(**bounds)
    if family == "qwen2_5_vl":
        processor = Qwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**bounds),
                                        chat_template=template)
    else:
        processor = Qwen3VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=Qwen3VLVideoProcessor(**bounds),
                                     chat_template=template)
    processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def qwen_prompt_ids(words: List[str], images: int = 1) -> List[int]:
    """Token ids of ``user : <image part> ... words assistant :`` (one vision start, image pad,
    vision end per image) in qwen_vocabulary()."""
    vocab = qwen_vocabulary()
    tokens = ["user", ":"] + QWEN_IMAGE_PART * images + list(words) + ["assistant", ":"]
    return [vocab[t] for t in tokens]


def sample_qwen_image(seed: int):
    """A random RGB picture (PIL) from ``seed``, of one of four sizes: square, wide, tall (the
    M-RoPE extents differ), and one that the pixel bounds resize."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    height, width = [(112, 112), (84, 140), (168, 56), (200, 150)][seed % 4]
    return Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))
