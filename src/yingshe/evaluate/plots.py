"""Every figure yingshe draws: training curves, confusion matrices (per label for multi-label data),
precision–recall curves per label, reliability, heat-map overlays.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas attached explicitly, never
through pyplot: that is headless by construction, keeps no global figure registry (no leaks when
a tuning study draws thousands), is safe in threads, and leaves a notebook's own backend alone.
Layout is matplotlib's constrained layout plus a tight bounding box, so long class names are never
clipped; sizes grow with the number of classes and per-cell numbers are dropped above 20 classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from yingshe.runs import atomic_write_bytes

DPI = 110
ANNOTATE_MAX_CLASSES = 20  # above this a number per cell is unreadable; colour alone carries it
LABEL_CHARS = 24  # longer class names are shortened with an ellipsis in tight spots
TRAIN_STYLE = {"linestyle": "--", "alpha": 0.8}
HEAT_CMAP = "jet"  # the Grad-CAM convention: blue cold, red hot
HEAT_ALPHA = 0.6
METHOD_NAMES = {"gradcam": "Grad-CAM", "saliency": "gradient saliency"}
LABEL_COLUMNS = 8  # most panels a row in the per-label figures: 40 labels fill 8 × 5 at ~1.7 in a panel
PANEL_NAME_CHARS = 20  # a label's name above its panel


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Render to PNG and write atomically (a reader never sees half a file)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def short(name: str, limit: int = LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --- training curves -----------------------------------------------------------------------------


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["epoch"], row[key]) for row in history if key in row and not math.isnan(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(
    history: Sequence[dict[str, Any]], path: str | Path, title: str = "", best_epoch: int | None = None
) -> Path:
    """Loss and accuracy (train dashed, validation solid) and the learning rate, per epoch, with
    a marker on every point (one epoch is a point, not an empty axis) and the best epoch marked."""
    fig = new_figure(13, 3.8)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    for split, style in (("train", TRAIN_STYLE), ("val", {})):
        loss_ax.plot(*_series(history, f"{split}_loss"), marker="o", label=split, **style)
        acc_ax.plot(*_series(history, f"{split}_accuracy"), marker="o", label=split, **style)
    lr_ax.plot(*_series(history, "lr"), marker="o", color="tab:green")
    loss_ax.set(title="Loss (cross-entropy)", xlabel="epoch", ylabel="mean loss")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    lr_ax.set(title="Learning rate (end of epoch)", xlabel="epoch", ylabel="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    epochs = [row["epoch"] for row in history]
    for ax in (loss_ax, acc_ax, lr_ax):
        epoch_axis(ax, epochs)
        if best_epoch is not None:
            ax.axvline(
                best_epoch, color="0.4", linestyle=":", linewidth=1, label=f"best (epoch {best_epoch})"
            )
    loss_ax.legend(fontsize=8), acc_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def epoch_axis(ax: Any, epochs: Sequence[int]) -> None:
    """Whole-epoch ticks and half an epoch of margin, so a one- or two-epoch run reads sanely."""
    ax.grid(alpha=0.3)
    if epochs:
        first, last = int(min(epochs)), int(max(epochs))  # metrics.csv gives floats
        ax.set_xlim(first - 0.5, last + 0.5)
        if last - first < 12:
            ax.set_xticks(range(first, last + 1))
            return
    ax.xaxis.get_major_locator().set_params(integer=True)


def compare_curves(histories: dict[str, Sequence[dict[str, Any]]], path: str | Path) -> Path:
    """Validation (solid) and training (dashed) loss and accuracy of several runs, overlaid."""
    fig = new_figure(12, 4.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for (name, history), colour in zip(histories.items(), colours, strict=True):
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(*_series(history, f"val_{metric}"), color=colour, marker="o", label=f"{short(name)} val")
            ax.plot(
                *_series(history, f"train_{metric}"),
                color=colour,
                marker=".",
                **TRAIN_STYLE,
                label=f"{short(name)} train",
            )
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="mean loss")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    epochs = [row["epoch"] for history in histories.values() for row in history]
    for ax in (loss_ax, acc_ax):
        epoch_axis(ax, epochs)
    handles, labels = loss_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    return save(fig, path)


# --- confusion matrix ----------------------------------------------------------------------------


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool) -> Figure:
    """Counts, or rows scaled to 1 (each row's diagonal is that class's recall)."""
    counts = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    values = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalize else counts
    annotate = k <= ANNOTATE_MAX_CLASSES
    cell = 0.55 if annotate else min(0.3, max(0.16, 12 / k))  # inches per row/column
    font = min(9.0, max(4.5, 0.6 * cell * 72))  # tick labels must fit one cell's height
    side = k * cell
    fig = new_figure(side + 3.2, side + 2.2)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalize else "images")
    names = [short(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if annotate else 90, fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    if annotate:
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
        threshold = (1 if normalize else values.max()) / 2
        for (t, p), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            colour = "white" if value > threshold else "black"
            ax.text(p, t, text, ha="center", va="center", fontsize=8 if k <= 12 else 6.5, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    kind = "row-normalised (recall on the diagonal)" if normalize else "counts"
    ax.set_title(f"Confusion matrix, {kind}: {int(counts.sum())} images")
    return fig


def confusion_matrix_plot(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, normalize: bool = False
) -> Path:
    return save(confusion_figure(matrix, classes, normalize), path)


# --- per-label panels (multi-label) ---------------------------------------------------------------


def label_grid(n: int, panel: tuple[float, float], margin: tuple[float, float]) -> tuple[Figure, list[Any]]:
    """A figure of `n` small panels (inches each, plus `margin` for titles), about 1.5 columns a row
    so 2–40 panels stay near the page's shape; the grid's unused cells are hidden."""
    columns = max(1, min(n, LABEL_COLUMNS, math.ceil(math.sqrt(1.5 * n))))
    rows = math.ceil(n / columns)
    fig = new_figure(max(4.8, panel[0] * columns + margin[0]), max(3.2, panel[1] * rows + margin[1]))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, list(axes[:n])


def shown_labels(shown: int, total: int, images: int) -> str:
    """The per-label figures' title tail: how many labels are drawn, of how many."""
    which = f"all {total} labels" if shown == total else f"the {shown} labels with the lowest F1 of {total}"
    return f"{which}, lowest F1 first; {images} images"


def label_confusion_figure(rows: Sequence[dict[str, Any]], total: int) -> Figure:
    """One 2×2 panel per `per_class` row, in the given order (weakest first): truth × decision (no,
    yes) with each cell's count and share of its true row. Right cells are blue and wrong ones red,
    darker for a larger share, so a label that misses or over-calls stands out at a glance."""
    fig, axes = label_grid(len(rows), (1.75, 1.9), (0.6, 1.0))
    images = sum(rows[0][key] for key in ("tp", "fp", "fn", "tn"))  # the same for every label
    for ax, row in zip(axes, rows, strict=True):
        counts = np.array([[row["tn"], row["fp"]], [row["fn"], row["tp"]]], dtype=np.float64)
        share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        right = np.eye(2, dtype=bool)
        ax.imshow(np.ma.masked_where(~right, share), cmap="Blues", vmin=0, vmax=1)
        ax.imshow(np.ma.masked_where(right, share), cmap="Reds", vmin=0, vmax=1)
        names = (("TN", "FP"), ("FN", "TP"))
        for (t, p), value in np.ndenumerate(share):
            colour = "white" if value > 0.6 else "black"
            text = f"{names[t][p]} {int(counts[t, p])}\n{100 * value:.0f}%"
            ax.text(p, t, text, ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks([0, 1], ["no", "yes"], fontsize=7)
        ax.set_yticks([0, 1], ["no", "yes"], fontsize=7)
        ax.tick_params(length=0, pad=2)
        title = (
            f"{short(row['class'], PANEL_NAME_CHARS)}\nF1 {100 * row['f1']:.0f}% at {row['threshold']:.2f}"
        )
        ax.set_title(title, fontsize=8)
    fig.supxlabel("predicted (score ≥ the label's threshold)", fontsize=9)
    fig.supylabel("true", fontsize=9)
    fig.suptitle(
        f"Per-label confusion, share of the true row (blue right, red wrong):\n"
        f"{shown_labels(len(rows), total, images)}",
        fontsize=10,
    )
    return fig


def label_confusion_plot(rows: Sequence[dict[str, Any]], total: int, path: str | Path) -> Path:
    return save(label_confusion_figure(rows, total), path)


def label_pr_figure(
    rows: Sequence[dict[str, Any]],
    curves: Sequence[tuple[np.ndarray, np.ndarray] | None],
    total: int,
    images: int,
) -> Figure:
    """Each row's precision–recall curve (`curves`: (precision, recall), None where the label has no
    positive image), the label's frequency (a random ranking's precision) dashed, and the operating
    point at its threshold marked. The axes are named in the title: a figure-wide x label and the
    legend below would collide under constrained layout."""
    fig, axes = label_grid(len(rows), (1.75, 1.75), (0.6, 1.2))
    for ax, row, curve in zip(axes, rows, curves, strict=True):
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.05), xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
        ax.tick_params(labelsize=7, length=2, pad=1)
        ax.grid(alpha=0.3)
        name = short(row["class"], PANEL_NAME_CHARS)
        if curve is None:
            ax.text(0.5, 0.5, "no positive image", ha="center", va="center", fontsize=7, color="0.4")
            ax.set_title(f"{name}\n(no AP)", fontsize=8)
            continue
        precision, recall = curve
        ax.plot(recall, precision, drawstyle="steps-post", color="tab:blue", lw=1.2, label="PR curve")
        chance = row["support"] / max(images, 1)
        ax.axhline(chance, color="0.5", linestyle="--", lw=0.8, label="label frequency")
        ax.plot(row["recall"], row["precision"], "o", color="tab:red", ms=5, label="at its threshold")
        ax.set_title(
            f"{name}\nAP {100 * row['average_precision']:.0f}%, F1 {100 * row['f1']:.0f}%", fontsize=8
        )
    drawn = [ax for ax, curve in zip(axes, curves, strict=True) if curve is not None]
    if drawn:
        handles, labels = drawn[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    title = f"Per-label precision (y) against recall (x):\n{shown_labels(len(rows), total, images)}"
    fig.suptitle(title, fontsize=10)
    return fig


def label_pr_plot(
    rows: Sequence[dict[str, Any]],
    curves: Sequence[tuple[np.ndarray, np.ndarray] | None],
    total: int,
    images: int,
    path: str | Path,
) -> Path:
    return save(label_pr_figure(rows, curves, total, images), path)


# --- calibration ---------------------------------------------------------------------------------


def reliability_diagram(calibration: dict[str, list[float]], ece: float, path: str | Path) -> Path:
    """Accuracy against confidence per bin, with the gap to the diagonal, and the bin counts."""
    edges = np.asarray(calibration["edges"])
    count = np.asarray(calibration["count"])
    accuracy = np.asarray(calibration["accuracy"])
    confidence = np.asarray(calibration["confidence"])
    width = np.diff(edges)
    used = count > 0
    fig = new_figure(6.2, 6.8)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        edges[:-1][used],
        accuracy[used],
        width[used],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.6,
        label="accuracy in bin",
    )
    top.bar(
        edges[:-1][used],
        confidence[used] - accuracy[used],
        width[used],
        bottom=accuracy[used],
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        linewidth=0.6,
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy in bin")
    top.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    top.set_title(f"Reliability diagram: ECE {100 * ece:.2f}% ({len(width)} bins)")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    share = count / max(count.sum(), 1)
    bottom.bar(edges[:-1], share, width, align="edge", color="tab:gray", edgecolor="black", linewidth=0.6)
    bottom.set(xlabel="confidence (top-1 probability)", ylabel="share of images")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bottom.grid(alpha=0.3)
    for ax in (top, bottom):
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    return save(fig, path)


# --- images and heat maps ------------------------------------------------------------------------


def show_image(ax: Any, image: np.ndarray, heatmap: np.ndarray | None = None) -> None:
    """A uint8 (H, W, C) image, with a heat map in [0, 1] over it when given."""
    grey = image.shape[-1] == 1
    ax.imshow(
        image[..., 0] if grey else image,
        cmap="gray" if grey else None,
        vmin=0,
        vmax=255,
        interpolation="nearest",
    )
    if heatmap is not None:
        # opacity follows the heat, so cold regions show the image itself rather than a blue tint
        alpha = HEAT_ALPHA * np.clip(heatmap / 0.5, 0, 1)
        ax.imshow(heatmap, cmap=HEAT_CMAP, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def error_grid(
    images: np.ndarray,
    heatmaps: np.ndarray | None,
    captions: Sequence[str],
    path: str | Path,
    title: str,
    columns: int = 4,
) -> Path:
    """Each example as a pair (image, heat-map overlay) under its caption, `columns` pairs a row."""
    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    fig = new_figure(2.9 * columns, 1.95 * rows + 0.5)
    cells = np.atleast_1d(fig.subfigures(rows, columns)).ravel()
    for i, cell in enumerate(cells):
        axes = cell.subplots(1, 2)
        if i >= n:
            for ax in axes:
                ax.set_axis_off()
            continue
        show_image(axes[0], images[i])
        show_image(axes[1], images[i], None if heatmaps is None else heatmaps[i])
        cell.suptitle(captions[i], fontsize=8)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def explanation_figure(
    image: np.ndarray,
    heatmap: np.ndarray,
    top: Sequence[tuple[str, float]],
    target: str,
    method: str,
    title: str,
    path: str | Path,
) -> Path:
    """One image: the input, the heat map of class `target` over it, and the top-k classes (the
    explained class in red)."""
    fig = new_figure(10, 3.4)
    image_ax, heat_ax, bar_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    show_image(image_ax, image)
    image_ax.set_title("input (as the model sees it)", fontsize=9)
    show_image(heat_ax, image, heatmap)
    heat_ax.set_title(f"{METHOD_NAMES.get(method, method)} of {short(target)}", fontsize=9)
    names = [name for name, _ in top][::-1]  # best on top
    probs = [p for _, p in top][::-1]
    colours = ["tab:red" if name == target else "tab:gray" for name in names]
    bars = bar_ax.barh(range(len(top)), probs, color=colours)
    bar_ax.set_yticks(range(len(top)), [short(name) for name in names], fontsize=9)
    bar_ax.set_xlim(0, 1.18)
    bar_ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bar_ax.bar_label(bars, [f"{100 * p:.1f}%" for p in probs], padding=3, fontsize=8)
    bar_ax.set_title(f"top {len(top)} classes", fontsize=9)
    fig.suptitle(short(title, 90), fontsize=10)
    return save(fig, path)
