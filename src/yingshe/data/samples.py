"""Contact sheets of a dataset: one PNG with a row of examples per class, and the same images as a
training batch after augmentation (the Ultralytics `train_batch*.jpg` habit), to see at a glance
what the model is given.

Pillow only: cells are scaled up with nearest-neighbour (a 28 px digit stays crisp at 84 px) and
each row is labelled with its class.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CELL = 96  # minimum side of a cell in the sheet
LABEL_WIDTH = 120
GAP = 2


def per_class_indices(labels: np.ndarray, num_classes: int, per_class: int) -> list[list[int]]:
    """The first `per_class` indices of each class, in order (deterministic)."""
    return [np.flatnonzero(labels == c)[:per_class].tolist() for c in range(num_classes)]


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], title: str | None = None) -> Image.Image:
    """rows of (label, [uint8 HxWxC images]) → one RGB image with the labels on the left."""
    side = max((img.shape[0] for _, imgs in rows for img in imgs), default=8)
    scale = max(1, -(-CELL // side))  # ceil
    cell = side * scale
    columns = max((len(imgs) for _, imgs in rows), default=1)
    top = 20 if title else 0
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * (cell + GAP), top + len(rows) * (cell + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title, fill="black")
    for r, (label, images) in enumerate(rows):
        y = top + r * (cell + GAP)
        draw.text((4, y + cell // 2 - 6), label[:18], fill="black")
        for c, array in enumerate(images):
            pixels = np.ascontiguousarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
            tile = Image.fromarray(pixels).convert("RGB")
            sheet.paste(
                tile.resize((cell, cell), Image.Resampling.NEAREST), (LABEL_WIDTH + c * (cell + GAP), y)
            )
    return sheet
