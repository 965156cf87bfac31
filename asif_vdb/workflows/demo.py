"""A small anchor set the project makes itself (coloured shapes drawn with PIL): no download, no
licence question. ``asif demo`` ingests it, builds a label set and classifies unseen drawings."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (240, 220, 20), "purple": (130, 40, 170), "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "grey": (150, 150, 150), "black": (15, 15, 15)}


def draw(colour: str, shape: str, background: str, rng: random.Random, size: int = 160) -> Image.Image:
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 4, size // 2 - 8)
    cx, cy = rng.randint(r + 4, size - r - 4), rng.randint(r + 4, size - r - 4)
    fill = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[colour])
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def make_demo_data(folder: Path, seed: int = 0, per_combo: int = 3) -> tuple[Path, list[tuple[Path, str]]]:
    """Write anchors (images + captions.csv) and held-out query images; returns (csv, [(query, shape)])."""
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                for i in range(per_combo):
                    name = f"{colour}_{shape}_{background}_{i}.png"
                    draw(colour, shape, background, rng).save(images / name)
                    rows.append((f"images/{name}", f"a {colour} {shape} on a {background} background"))
    table = folder / "captions.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    queries = []
    qdir = folder / "queries"
    qdir.mkdir(exist_ok=True)
    for shape in SHAPES:
        for i in range(3):
            colour, background = rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS))
            path = qdir / f"query_{shape}_{i}.png"
            draw(colour, shape, background, random.Random(rng.random())).save(path)
            queries.append((path, shape))
    return table, queries
