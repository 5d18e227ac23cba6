"""Functions of the offline lmms-eval task ``idselect_tiny_vqa`` (tests/test_lmms_plugin.py).

Each row of questions.jsonl names a PNG next to this file; ``draw_images`` made them (a test
checks that it still does), so the task needs no download.
"""
import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))

#: image file -> (shape, RGB colour, (width, height)); sizes differ so rows pad differently.
IMAGES = {
    "red_square.png": ("square", (220, 30, 30), (40, 40)),
    "blue_circle.png": ("circle", (30, 30, 220), (56, 40)),
    "green_square.png": ("square", (30, 200, 30), (40, 64)),
    "blue_square.png": ("square", (30, 30, 220), (48, 48)),
    "red_circle.png": ("circle", (220, 30, 30), (64, 48)),
}


def draw_images(folder: str = HERE) -> None:
    """Write every image of ``IMAGES`` into ``folder``: a coloured shape on a white canvas."""
    for name, (shape, colour, size) in IMAGES.items():
        image = Image.new("RGB", size, (255, 255, 255))
        box = (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4)
        draw = ImageDraw.Draw(image)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=colour)
        image.save(os.path.join(folder, name))


def doc_to_visual(doc):
    return [Image.open(os.path.join(HERE, doc["image"])).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    prediction = results[0].strip().lower()
    return {"exact_match": float(prediction == doc["answer"].lower())}
