"""Importance estimators against naive implementations (eager attention with
output_attentions, which our estimators deliberately do not need)."""
import pytest
import torch

from idselect import importance as imp
from idselect.testing import tiny
from idselect.hooks.integration import MEDIA_ATTR
from idselect.hooks.family import encoder_layers


def test_minmax():
    assert torch.equal(imp.minmax(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(imp.minmax(torch.full((4,), 7.0)), torch.zeros(4))
    torch.testing.assert_close(imp.unified(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), 0.25), torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_cls_attention_equals_eager_clip_attention(layer_index):
    from transformers import CLIPVisionModel

    cfg = tiny._vision()
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    clip = CLIPVisionModel(cfg).eval()
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        out = clip(pixels, output_attentions=True, output_hidden_states=True)
        ours = imp.cls_attention(encoder_layers(clip)[layer_index], out.hidden_states[layer_index])
    naive = out.attentions[layer_index][:, :, 0, :].mean(dim=1)  # [images, 17]
    torch.testing.assert_close(ours, naive, atol=1e-6, rtol=1e-5)


def test_visual_saliency_is_deprecated_and_still_answers():
    from transformers import CLIPVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(tiny._vision()).eval()
    with torch.no_grad():
        states = clip(torch.randn(2, 3, 28, 28), output_hidden_states=True).hidden_states
        with pytest.warns(DeprecationWarning, match="visual_saliency is deprecated"):
            old = imp.visual_saliency(encoder_layers(clip), states, -2, drop_cls=True)
        new = imp.minmax(imp.cls_attention(encoder_layers(clip)[1], states[1])[:, 1:])
    torch.testing.assert_close(old, new)


def test_llava_hook_saliency_is_cls_attention_of_the_feature_layer():
    """vision_feature_layer=-2 on a 3-layer CLIP: the features are layer 1's output, so the
    saliency is layer 1's [CLS] attention to the 16 patches ('default' drops [CLS])."""
    import idselect

    model = tiny.tiny_llava(attn_implementation="eager")
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad(), idselect.patch(model, keep=4):
        out = model.model.get_image_features(pixel_values=pixels, return_dict=True)
        eager = model.model.vision_tower(pixels, output_attentions=True)
    media = getattr(out, MEDIA_ATTR)
    naive = eager.attentions[1][:, :, 0, 1:].mean(dim=1)
    assert [m.num_tokens for m in media] == [16, 16]
    for i, m in enumerate(media):
        torch.testing.assert_close(m.saliency, naive[i], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layer_index", [0, 1])
def test_instruction_relevance_with_rope_equals_eager_llm_attention(layer_index):
    """With rotary embedding, relevance is the LLM's own attention of the last token, restricted
    to the image tokens and renormalised over them, averaged over heads."""
    from transformers import LlamaModel

    cfg = tiny._text()
    cfg._attn_implementation = "eager"
    torch.manual_seed(1)
    llm = LlamaModel(cfg).eval()
    ids = torch.randint(1, 90, (1, 20))
    image_cols = torch.arange(4, 14)
    with torch.no_grad():
        out = llm(input_ids=ids, output_attentions=True, output_hidden_states=True)
        hidden = out.hidden_states[layer_index][0]
        positions = torch.arange(20)[None]
        cos, sin = llm.rotary_emb(hidden[None], positions)
        rot = (cos[0, 19][None], sin[0, 19][None], cos[0, image_cols], sin[0, image_cols])
        ours = imp.instruction_relevance(hidden[19], hidden[image_cols], llm.layers[layer_index], 4, 2, rot)
    attn = out.attentions[layer_index][0, :, 19, image_cols]  # [heads, 10]
    naive = imp.minmax((attn / attn.sum(dim=-1, keepdim=True)).mean(dim=0))
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=1e-4)


def test_instruction_relevance_without_rope_is_plain_qk_softmax():
    from transformers import LlamaModel

    torch.manual_seed(2)
    llm = LlamaModel(tiny._text()).eval()
    hidden = torch.randn(12, 48)
    layer = llm.layers[0]
    with torch.no_grad():
        ours = imp.instruction_relevance(hidden[-1], hidden[:8], layer, 4, 2)
        x = layer.input_layernorm(hidden)
        q = layer.self_attn.q_proj(x[-1]).view(4, 12)
        k = layer.self_attn.k_proj(x[:8]).view(8, 2, 12)
        probs = torch.stack([torch.softmax(k[:, h // 2] @ q[h] / 12**0.5, dim=0) for h in range(4)]).mean(0)
    torch.testing.assert_close(ours, imp.minmax(probs), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_instruction_relevance_equals_eager_attention_of_qwen3_layers(family):
    """Qwen3's attention normalises q and k per head (q_norm / k_norm) and Qwen3.5's q_proj
    also gives an output gate: relevance is still the layer's own attention of the last token,
    here with 3-D M-RoPE positions (an image's tokens share t, vary in h and w)."""
    if family == "qwen3_5":
        pytest.importorskip("transformers.models.qwen3_5")
    model = getattr(tiny, f"tiny_{family}")()
    llm = model.model.language_model
    llm.config._attn_implementation = "eager"
    layer_index = next(i for i, t in enumerate(getattr(llm.config, "layer_types", None) or ["full_attention"])
                       if t == "full_attention")
    embeds = torch.randn(1, 20, 48)
    image_cols = torch.arange(4, 13)
    positions = torch.arange(20).repeat(3, 1, 1)
    positions[:, 0, 4:13] = torch.stack([torch.full((9,), 4), 4 + torch.arange(9) // 3, 4 + torch.arange(9) % 3])
    positions[:, 0, 13:] = torch.arange(7, 14)
    with torch.no_grad():
        out = llm(inputs_embeds=embeds, position_ids=positions, output_attentions=True, output_hidden_states=True)
        hidden = out.hidden_states[layer_index][0]
        cos, sin = llm.rotary_emb(hidden[None], positions)
        rot = (cos[0, 19][None], sin[0, 19][None], cos[0, image_cols], sin[0, image_cols])
        cfg = llm.config
        ours = imp.instruction_relevance(hidden[19], hidden[image_cols], llm.layers[layer_index],
                                         cfg.num_attention_heads, cfg.num_key_value_heads, rot)
    attentions = [a for a in out.attentions if a is not None]
    attn = attentions[0][0, :, 19, image_cols]  # the first attention layer's weights
    naive = imp.minmax((attn / attn.sum(dim=-1, keepdim=True)).mean(dim=0))
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=1e-4)
