"""The FLOPs model: hand-computed layer counts and the pruning ratios it implies."""
import pytest

from idselect.tools import flops


def test_llama_layer_count_by_hand():
    t = flops.Tower(layers=1, hidden=4096, intermediate=11008, heads=32, kv_heads=32, gated_mlp=True)
    n = 100
    by_hand = 2 * (4 * n * 4096 * 4096) + 2 * 2 * n * n * 4096 + 2 * 3 * n * 4096 * 11008
    assert t.flops(n) == by_hand


def test_grouped_kv_and_window():
    t = flops.Tower(layers=2, hidden=64, intermediate=128, heads=8, kv_heads=2, gated_mlp=False)
    n = 10
    per_layer = 2 * n * 64 * (2 * 64 + 2 * 16) + 2 * 2 * n * 4 * 64 + 2 * n * 64 * 128 * 2
    assert t.flops(n, windowed_tokens=4) == 2 * per_layer


@pytest.mark.parametrize("preset", sorted(flops.PRESETS))
def test_pruning_reduces_llm_flops_monotonically(preset):
    rows = flops.report(preset, 32, [None, 192, 64, 16])
    assert rows[0]["total_vs_unpruned"] == 1.0
    llm = [r["llm"] for r in rows]
    assert llm == sorted(llm, reverse=True)
    assert all(r["vision"] == rows[0]["vision"] for r in rows)  # the vision tower still sees every patch


def test_llava_15_at_16_tokens():
    f16 = flops.prefill_flops(flops.PRESETS["llava-1.5-7b"], 32, 16)
    full = flops.prefill_flops(flops.PRESETS["llava-1.5-7b"], 32)
    assert f16["llm_tokens"] == 48 and full["llm_tokens"] == 608
    # LLM FLOPs fall to 7.7% here; the paper's ">97% fewer FLOPs" counts differently (docs/efficiency.md, "Against the paper").
    assert 0.07 < f16["llm"] / full["llm"] < 0.085


def decoder_flops_by_hand(n, layers, hidden, heads, kv_heads, head_dim, intermediate, gated):
    """One stack on n tokens from raw config numbers; head_dim kept apart so that a config whose
    heads * head_dim differs from hidden would show up here (flops.Tower assumes they match)."""
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    projections = 2 * n * hidden * (2 * q_width + 2 * kv_width)  # q and o: q_width; k and v: kv_width
    attention = 2 * 2 * n * n * q_width  # Q K^T and A V over all heads
    mlp = 2 * n * hidden * intermediate * (3 if gated else 2)
    return layers * (projections + attention + mlp)


def test_qwen3_vl_8b_token_counts_by_hand():
    shape = flops.PRESETS["qwen3-vl-8b"]
    height = width = 512
    patches = (height // 16) * (width // 16)  # patch_size 16
    assert shape.vision_tokens == patches == 1024 and shape.vision_passes == 1
    assert shape.visual_tokens == patches // 4 == 256  # spatial_merge_size 2: 2 x 2 patches per token
    assert flops.prefill_flops(shape, 32)["llm_tokens"] == 32 + 256


@pytest.mark.parametrize("keep", [None, 64])
def test_qwen3_vl_8b_llm_by_hand(keep):
    n = 32 + (256 if keep is None else keep)
    # text_config: 36 layers, hidden 4096, 32 heads, 8 kv heads, head_dim 128, intermediate 12288
    # (SwiGLU), vocab 151936; logits for the last token only.
    by_hand = decoder_flops_by_hand(n, 36, 4096, 32, 8, 128, 12288, gated=True) + 2 * 4096 * 151936
    assert flops.prefill_flops(flops.PRESETS["qwen3-vl-8b"], 32, keep)["llm"] == by_hand


def test_qwen3_vl_8b_vision_counts_deepstack_mergers():
    f = flops.prefill_flops(flops.PRESETS["qwen3-vl-8b"], 32, 64)
    # vision_config: 27 blocks, hidden 1152, 16 heads (head_dim 72), plain MLP 4304, full attention
    # over all 1024 patches in every block.
    tower = decoder_flops_by_hand(1024, 27, 1152, 16, 16, 72, 4304, gated=False)
    # A merger: 2 x 2 patches concatenated (4 * 1152 = 4608) -> 4608 -> out_hidden_size 4096, per token.
    merger = 256 * 2 * (4608 * 4608 + 4608 * 4096)
    assert f["projector"] == merger  # the main merger feeds the LLM's input embeddings
    assert f["vision"] - tower == 3 * merger  # one DeepStack merger per deepstack_visual_indexes entry
    assert f["vision"] + f["projector"] - tower == 4 * merger


def test_llava_onevision_token_counts_by_hand():
    shape = flops.PRESETS["llava-onevision-7b"]
    side = 384 // 14  # SigLIP at 384 px, patch 14: 27 x 27 patches, no [CLS]
    base = side * side
    crops_per_side = 768 // 384  # a 768 x 768 image picks the 768 x 768 pinpoint: 2 x 2 crops
    grid = crops_per_side * side  # 54 x 54 features; square image, so nothing to unpad
    assert (grid * grid / (9 * base)) ** 0.5 <= 1.1  # anyres_max_9 leaves it at full size
    newlines = grid  # one per row
    assert shape.vision_tokens == base == 729
    assert shape.vision_passes == 1 + crops_per_side ** 2 == 5
    assert shape.visual_tokens == base + grid * grid + newlines == 3699
    assert flops.prefill_flops(shape, 32)["llm_tokens"] == 32 + 3699


def test_llava_onevision_flops_by_hand():
    f = flops.prefill_flops(flops.PRESETS["llava-onevision-7b"], 32, 64)
    # SigLIP so400m minus its last layer: 26 layers, hidden 1152, 16 heads (head_dim 72), MLP 4304;
    # 5 passes of 729 patches.
    assert f["vision"] == 5 * decoder_flops_by_hand(729, 26, 1152, 16, 16, 72, 4304, gated=False)
    # 2-layer MLP 1152 -> 3584 -> 3584 on every crop's patches (newlines are not projected).
    assert f["projector"] == 5 * 729 * 2 * (1152 * 3584 + 3584 * 3584)
    # Qwen2-7B: 28 layers, hidden 3584, 28 heads, 4 kv heads, head_dim 128, SwiGLU 18944, vocab 152128.
    assert f["llm"] == decoder_flops_by_hand(32 + 64, 28, 3584, 28, 4, 128, 18944, gated=True) + 2 * 3584 * 152128
