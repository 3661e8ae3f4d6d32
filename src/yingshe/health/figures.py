"""The check's figures: a PNG grid per finding, and the distributions of classes and shapes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from yingshe.data.splits import SourceData
from yingshe.evaluate.plots import new_figure, save, short, show_image

SIDE = 64  # thumbnails drawn in grids


def picture(data: SourceData, split: str, position: int) -> np.ndarray:
    """A (≤64, ≤64, 3) uint8 picture of one image; grey noise-free blank when it cannot be read."""
    chosen = data.splits[split]
    try:
        if chosen.files is not None:
            image = Image.open(io.BytesIO(chosen.files.read(position)))
            image.load()
        elif chosen.images is not None:
            array = chosen.images[position]
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        else:
            array = chosen.packed.take(np.array([position]))[0]
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        image = image.convert("RGB")
        image.thumbnail((SIDE, SIDE))
        return np.asarray(image)
    except Exception:  # an unreadable file is drawn as a blank cell; its caption says why
        return np.full((SIDE, SIDE, 3), 200, dtype=np.uint8)


def rows_grid(rows: Sequence[Sequence[np.ndarray]], captions: Sequence[str], path: Path, title: str) -> Path:
    """One row of pictures per finding (a duplicate pair, a suspect), captioned."""
    width = max(len(r) for r in rows)
    columns = 2 if width <= 2 else 1  # pairs two to a line
    lines = -(-len(rows) // columns)
    fig = new_figure(2.2 * width * columns, 1.6 * lines + 0.4)
    cells = np.atleast_1d(fig.subfigures(lines, columns)).ravel()
    for i, cell in enumerate(cells):
        axes = np.atleast_1d(cell.subplots(1, width))
        for j, ax in enumerate(axes):
            if i < len(rows) and j < len(rows[i]):
                show_image(ax, rows[i][j])
            else:
                ax.set_axis_off()
        if i < len(rows):
            cell.suptitle(captions[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def distributions(
    classes: list[str], counts: dict[str, list[int]], widths, heights, modes: Counter, path: Path
) -> Path:
    """Class counts per split, image sizes, aspect ratios and modes, in one figure."""
    fig = new_figure(11, 7)
    (a, b), (c, d) = fig.subplots(2, 2)
    x = np.arange(len(classes))
    step = 0.8 / max(1, len(counts))
    for i, (split, values) in enumerate(counts.items()):
        a.bar(x + i * step, values, width=step, label=split)
    a.set_xticks(x + 0.4 - step / 2, [short(c, 12) for c in classes], rotation=60, fontsize=7)
    a.set_title("images per class")
    a.legend()
    w, h = np.asarray(widths, dtype=float), np.asarray(heights, dtype=float)
    ok = (w > 0) & (h > 0)
    b.scatter(w[ok], h[ok], s=4, alpha=0.3)
    b.set_xlabel("width (px)")
    b.set_ylabel("height (px)")
    b.set_title("image sizes")
    c.hist(np.log2(w[ok] / h[ok]), bins=41)
    c.set_xlabel("log2(width / height)")
    c.set_title("aspect ratios")
    names = list(modes)
    d.bar(names, [modes[m] for m in names])
    d.set_title("image modes")
    return save(fig, path)
