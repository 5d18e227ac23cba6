"""The accuracy harness end to end on a tiny random LLaVA saved to disk with a processor built
offline, and a small generated dataset. The accuracy numbers mean nothing (random weights);
the test checks the plumbing: loading from a path, prompts, pruning per keep, scoring, table."""
import json

import pytest
import torch

from idselect.testing import tiny
from idselect.tools import evaluate


def test_normalize_and_score():
    assert evaluate.normalize("The  Red, car!") == "red car"
    assert evaluate.score("a dog", ["dog", "Dog", "cat"], "vqa") == pytest.approx(2 / 3)
    assert evaluate.score("dog", ["dog"] * 5, "vqa") == 1.0
    assert evaluate.score("dog", ["cat", "dog"], "exact") == 1.0 and evaluate.score("cow", ["cat"], "exact") == 0.0


def save_tiny_llava_with_processor(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    words = ["red", "blue", "green", "dog", "cat", "what", "color", "is", "it", "answer", "the", "question",
             "using", "a", "single", "word", "or", "phrase", "USER:", "ASSISTANT:", "?", "."]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i, w in enumerate(words):
        vocab[w] = 10 + i
    vocab["<image>"] = tiny.IMAGE_TOKEN
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", additional_special_tokens=["<image>"])
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:")
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=7, vision_feature_select_strategy="default",
                               image_token="<image>", num_additional_image_tokens=1, chat_template=template)
    model = tiny.tiny_llava()
    model.save_pretrained(path)
    processor.save_pretrained(path)


def test_eval_command_end_to_end(tmp_path, capsys):
    from PIL import Image

    save_tiny_llava_with_processor(tmp_path / "model")
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(3):
        pixels = (torch.rand(40, 52, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        lines.append(json.dumps({"image": f"img{i}.png", "question": "what color is it ?", "answers": ["red", "red", "blue"]}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.json"
    code = evaluate.main(["--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.jsonl"), "--keep", "4", "0.5",
                          "--max-new-tokens", "2", "--device", "cpu", "--out", str(out), "--suffix", ""])
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 questions" in printed and "accuracy" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["keep"] for r in results] == ["all", 4, 0.5]
    assert [r["visual_tokens_after"] for r in results] == [None, 4, 8]  # 16 tokens per image
    assert all(r["n"] == 3 and len(r["predictions"]) == 3 and 0.0 <= r["accuracy"] <= 1.0 for r in results)


def test_bad_jsonl_line_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"image": "x.png", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:1: each line needs"):
        evaluate.load_rows(str(tmp_path / "d.jsonl"), None, None)
