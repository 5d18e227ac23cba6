"""The model registry (idselect.tools.shapes) and what derives from it agree: the transformers
configs built from it, the FLOPs presets (whose numbers are pinned as they were before the
registry), bench_e2e's specs and the demo's geometry."""
import os
import sys

import pytest

from idselect.tools import demo, flops, shapes

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_e2e  # noqa: E402


def test_llava_1_5_config_and_flops():
    model = shapes.MODELS["llava-1.5-7b"]
    cfg = shapes.config(model)
    v, t = cfg.vision_config, cfg.text_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == (4096, 32, 32, 11008)
    assert (v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size) == (1024, 24, 336, 14)
    assert (v.image_size // v.patch_size) ** 2 == model.visual_tokens == 576 and model.vision_tokens == 577
    assert cfg.image_token_index == 32000 and t.vocab_size == 32064
    # The numbers the preset gave before the registry existed (32 text tokens).
    preset = flops.PRESETS["llava-1.5-7b"]
    full, kept = flops.prefill_flops(preset, 32), flops.prefill_flops(preset, 32, 64)
    assert (full["vision"], full["projector"], full["llm"], full["total"]) == (
        381224583168.0, 24159191040, 8068895080448.0, 8474278854656.0)
    assert (kept["llm"], kept["selection"], kept["total"]) == (1248487014400.0, 38956695552, 1692827484160.0)


@pytest.mark.parametrize("name", sorted(shapes.MODELS))
def test_configs_agree_with_the_registry(name):
    model = shapes.MODELS[name]
    cfg = shapes.config(model)
    v, t = cfg.vision_config, cfg.text_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
            t.vocab_size) == (model.llm.hidden, model.llm.intermediate, model.llm.layers, model.llm.heads,
                              model.llm.kv_heads, model.llm.vocab)
    layers = getattr(v, "num_hidden_layers", None) or v.depth
    heads = getattr(v, "num_attention_heads", None) or v.num_heads
    assert (v.hidden_size, v.intermediate_size, layers, heads, v.patch_size) == (
        model.vision.hidden, model.vision.intermediate, model.vision.layers, model.vision.heads, model.vision.patch)
    shape = flops.shape_of(model)
    if name in flops.PRESETS:
        assert flops.PRESETS[name] == shape
    assert (shape.vision_tokens, shape.visual_tokens, shape.vision_passes) == (
        model.vision_tokens, model.visual_tokens, model.vision_passes)
    spec = bench_e2e.build(name, "real")
    assert spec.config.to_dict() == cfg.to_dict() and spec.flops_shape == shape
    assert spec.visual_tokens == model.visual_tokens and spec.image_token == model.image_token


@pytest.mark.parametrize("name, visual, projector", [
    ("llava-next-7b", 576 + 48 * 48 + 48, (1024, 4096, 4096)),
    ("qwen2.5-vl-7b", 256, (4 * 1280, 4 * 1280, 3584)),
    ("qwen2.5-vl-7b-large", 68 * 68, (4 * 1280, 4 * 1280, 3584)),
    ("qwen3-vl-8b", 256, (4 * 1152, 4 * 1152, 4096)),
    ("llava-onevision-7b", 729 + 54 * 54 + 54, (1152, 3584, 3584)),
])
def test_derived_token_counts_and_projectors(name, visual, projector):
    model = shapes.MODELS[name]
    assert model.visual_tokens == visual and model.projector_widths == projector
    small = bench_e2e.build(name, "small")  # tiny widths, the same tokens
    assert small.visual_tokens == visual and small.config.text_config.hidden_size == 256


def test_reduced_depth_keeps_the_special_blocks_that_exist():
    qwen2_5 = shapes.config(shapes.MODELS["qwen2.5-vl-7b"], depth=16).vision_config
    assert qwen2_5.depth == 16 and qwen2_5.fullatt_block_indexes == [7, 15]
    assert shapes.config(shapes.MODELS["qwen3-vl-8b"], depth=25).vision_config.deepstack_visual_indexes == [8, 16, 24]
    assert shapes.config(shapes.MODELS["qwen3-vl-8b"], depth=2).vision_config.deepstack_visual_indexes == [0, 1]


def test_demo_has_llava_1_5_geometry():
    cfg = demo.demo_model().config
    llava = shapes.MODELS["llava-1.5-7b"]
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size) == (llava.vision.image_size, llava.vision.patch)
    assert demo.VISUAL_TOKENS == 576 and demo.synthetic_image().shape == (336, 336, 3)
