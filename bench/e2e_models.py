"""The models of the end-to-end benchmark (bench/bench_e2e.py): each real model's config from
idselect/tools/shapes.py, the small build's widths, one image's inputs, batched prompts."""
import dataclasses

import torch

from idselect import device_path, reference
from idselect.tools import shapes
from idselect.tools.flops import shape_of

MODELS = tuple(shapes.MODELS)  # llava-1.5-7b, llava-next-7b, qwen2.5-vl-7b(-large), qwen3-vl-8b, llava-onevision-7b
#: Parameter counts of the released checkpoints, to check the configs against. Hugging Face model
#: cards: llava-hf/llava-1.5-7b-hf, llava-hf/llava-v1.6-vicuna-7b-hf, Qwen/Qwen2.5-VL-7B-Instruct,
#: llava-hf/llava-onevision-qwen2-7b-ov-hf ("8.03B params"). Qwen/Qwen3-VL-8B-Instruct: its card
#: rounds to "9B params"; 8,767,123,696 is the safetensors total the Hub API reports for it.
KNOWN_PARAMS = {"llava-1.5-7b": 7.06e9, "llava-next-7b": 7.06e9, "qwen2.5-vl-7b": 8.29e9, "qwen2.5-vl-7b-large": 8.29e9,
                "qwen3-vl-8b": 8.767e9, "llava-onevision-7b": 8.03e9}

#: variant -> selection= of idselect.patch: "id" is the op as dispatched here
#: (idselect.backend_for); a function replaces the op for that handle (patch's docstring).
VARIANTS = {
    "id": "id",
    "topk": "topk",
    "reference": reference.select,
    "device_path": device_path.select,
}


@dataclasses.dataclass
class Spec:
    name: str
    cls: type
    config: object
    image_inputs: dict  # inputs of one image (no input_ids), repeated per batch row
    visual_tokens: int  # LLM placeholder tokens per image
    image_token: int
    flops_shape: object  # idselect.tools.flops.ModelShape at the real widths, for the time plan


#: The small build (``--size small``): every model's image, patches and token counts, at widths
#: a CPU runs in seconds; all else, as the real build, from idselect.tools.shapes.
_SMALL_VISION = dict(layers=2, hidden=64, intermediate=128, heads=4)
_SMALL_LLM = dict(layers=4, hidden=256, intermediate=688, heads=8)
SMALL = {  # wrapper -> (vision, LLM) replacements
    "llava": (dict(_SMALL_VISION, extra={"projection_dim": 64}), dict(_SMALL_LLM, kv_heads=8)),
    "llava_next": (dict(_SMALL_VISION, extra={"projection_dim": 64}), dict(_SMALL_LLM, kv_heads=8)),
    "qwen2_5_vl": (dict(_SMALL_VISION, full_attention_blocks=(1,)),
                   dict(_SMALL_LLM, kv_heads=2, mrope_section=(4, 6, 6))),
    "qwen3_vl": (_SMALL_VISION,
                 dict(_SMALL_LLM, kv_heads=2, head_dim=32, max_positions=32768, mrope_section=(6, 5, 5))),
    "llava_onevision": (_SMALL_VISION, dict(_SMALL_LLM, kv_heads=2)),
}


def image_inputs(model):
    """Inputs of one image (no input_ids) at the model's benchmark image size."""
    v = model.vision
    if model.wrapper.startswith("qwen"):  # packed patches: channels x temporal patch x patch x patch per row
        grid = model.image_side // v.patch
        return {"pixel_values": torch.randn(grid * grid, 3 * v.temporal_patch * v.patch * v.patch),
                "image_grid_thw": torch.tensor([[1, grid, grid]])}
    if model.anyres:  # the base view and the crops
        return {"pixel_values": torch.randn(1, model.vision_passes, 3, v.image_size, v.image_size),
                "image_sizes": torch.tensor([[model.image_side, model.image_side]])}
    return {"pixel_values": torch.randn(1, 3, v.image_size, v.image_size)}


def build(name, size, depth=None):
    """The Spec of a model name. ``depth``: real widths with that many layers in each tower."""
    import transformers

    if name not in shapes.MODELS:
        raise ValueError(f"unknown model {name!r}")
    real = shapes.MODELS[name]
    model = real if size == "real" else shapes.scaled(real, *SMALL[real.wrapper])
    cfg = shapes.config(model, depth)
    cls = getattr(transformers, type(cfg).__name__.replace("Config", "ForConditionalGeneration"))
    return Spec(name, cls, cfg, image_inputs(model), model.visual_tokens, model.image_token, shape_of(real))


def batched_inputs(spec, batch, text_tokens, device, dtype):
    """input_ids with the image after 4 text tokens, the image repeated on every row."""
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 30000, (text_tokens,), generator=g).tolist()
    ids = torch.tensor([text[:4] + [spec.image_token] * spec.visual_tokens + text[4:]] * batch, device=device)
    inputs = {"input_ids": ids}
    if spec.name.startswith("qwen"):
        inputs["mm_token_type_ids"] = (ids == spec.image_token).long()
    for key, value in spec.image_inputs.items():
        # Qwen packs every image's patches in one tensor (rows concatenated); LLaVA has a batch dim.
        value = torch.cat([value] * batch) if spec.name.startswith("qwen") else value.repeat(batch, *[1] * (value.dim() - 1))
        inputs[key] = value.to(device, dtype) if torch.is_floating_point(value) else value.to(device)
    return inputs


def make_model(spec, device, dtype):
    spec.config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the final dtype: a 7B model in float32 first would need 28 GiB more
    try:
        with torch.device(device):
            model = spec.cls(spec.config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = 0
    return model


def param_count(model):
    return sum(p.numel() for p in model.parameters())
