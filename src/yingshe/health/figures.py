"""The check's figures: a PNG grid per finding, and the distributions of classes and shapes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from yingshe.data.images import open_image
from yingshe.data.splits import SourceData
from yingshe.evaluate.plots import save, short
from yingshe.runs import atomic_write_bytes

SIDE = 64  # thumbnails drawn in grids


def picture(data: SourceData, split: str, position: int) -> np.ndarray:
    """A (≤64, ≤64, 3) uint8 picture of one image; grey noise-free blank when it cannot be read."""
    chosen = data.splits[split]
    try:
        if chosen.files is not None:
            image = open_image(chosen.files.read(position))  # size limits, EXIF turn
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
    """One row of pictures per finding (a duplicate pair, a suspect) over its caption, two
    findings to a line; drawn with Pillow (matplotlib's layout took seconds per grid)."""
    width = max(len(r) for r in rows)
    per_line = 2 if width <= 2 else 1
    cell_w, cell_h, pad = max(width * (SIDE + 4), 240), SIDE + 30, 6
    lines = -(-len(rows) // per_line)
    canvas = Image.new("RGB", (per_line * (cell_w + pad) + pad, lines * (cell_h + pad) + 28), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill="black")
    for i, (pictures, caption) in enumerate(zip(rows, captions, strict=True)):
        x0, y0 = pad + (i % per_line) * (cell_w + pad), 28 + (i // per_line) * (cell_h + pad)
        for j, array in enumerate(pictures):
            canvas.paste(Image.fromarray(array), (x0 + j * (SIDE + 4), y0))
        draw.text((x0, y0 + SIDE + 4), caption[:48], fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def distributions(
    classes: list[str], counts: dict[str, list[int]], widths, heights, modes: Counter, path: Path
) -> Path:
    """Class counts per split, image sizes, aspect ratios and modes, in one figure."""
    fig = Figure(figsize=(11, 7), dpi=80)  # fixed margins: a layout engine costs seconds here
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.12, hspace=0.45, wspace=0.2)
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
    b.hist2d(w[ok], h[ok], bins=20, cmin=1) if len(set(w[ok]) | set(h[ok])) > 1 else b.plot(
        w[ok][:1], h[ok][:1], "o"
    )
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
