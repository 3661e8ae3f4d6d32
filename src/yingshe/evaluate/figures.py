"""The figures of a report, and the data each one needs, drawn into the report's folder.

`api.train` and `api.evaluate` call `report_figures` after writing the numbers, so a failure here
can never cost a report; its file names go into `report["plots"]` and report.md embeds them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.classification import binary_precision_recall_curve

from yingshe.data.augment import Normalize
from yingshe.data.images import centre_crop
from yingshe.data.loader import SplitDataset
from yingshe.data.splits import Split
from yingshe.evaluate import plots
from yingshe.evaluate.explain import Explainer
from yingshe.evaluate.metrics import Predictions
from yingshe.runs import read_metrics_csv
from yingshe.schema import Checkpoint

log = logging.getLogger(__name__)

CURVES = "training_curves.png"
CONFUSION = "confusion_matrix.png"
CONFUSION_NORMALISED = "confusion_matrix_normalized.png"
RELIABILITY = "reliability.png"
ERRORS = "confident_errors.png"
LABEL_CONFUSION = "label-confusion.png"
LABEL_PR = "label-pr.png"
MAX_ERRORS = 16
MAX_LABEL_PANELS = 40  # per-label figures: more panels than this are unreadable; the weakest are drawn


def run_history(checkpoint: str | Path, loaded: Checkpoint) -> list[dict[str, Any]]:
    """Per-epoch rows of the run a checkpoint belongs to: its metrics.csv, else the checkpoint's
    own copy (which stops at the epoch it was saved)."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    rows = read_metrics_csv(folder / "metrics.csv")
    if rows:
        return rows
    return loaded.history


def evaluated_positions(split: Split, skipped: dict[str, str]) -> np.ndarray:
    """Split indices of the predictions, in order: the loader drops unreadable files (by name)."""
    if not skipped:
        return np.arange(len(split))
    return np.array([i for i in range(len(split)) if split.name(i) not in skipped], dtype=np.int64)


def confident_errors(pred: Predictions, count: int = MAX_ERRORS) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in prediction order) of the wrong predictions with the highest confidence."""
    probs = pred.logits.softmax(1)
    confidence, predicted = probs.max(1)
    wrong = torch.nonzero(predicted != pred.labels).flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:count]
    return order.numpy(), confidence[order].numpy()


def weakest_labels(rows: list[dict[str, Any]], count: int = MAX_LABEL_PANELS) -> list[int]:
    """Indices of the `count` `per_class` rows with the lowest F1, ties by most errors (FP + FN).
    A label never present nor predicted has F1 0 by convention yet nothing wrong: it ranks as 1."""

    def key(i: int) -> tuple[float, int, int]:
        row = rows[i]
        errors = row["fp"] + row["fn"]
        return (row["f1"] if errors + row["tp"] else 1.0, -errors, i)

    return sorted(range(len(rows)), key=key)[:count]


def label_curves(pred: Predictions, columns: list[int]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(precision, recall) over every distinct score of each label in `columns`; None for a label
    with no positive image, whose recall is undefined."""
    probs = pred.logits.float().sigmoid()
    curves: list[tuple[np.ndarray, np.ndarray] | None] = []
    for j in columns:
        truth = pred.labels[:, j].long()
        if not truth.any():
            curves.append(None)
            continue
        precision, recall, _ = binary_precision_recall_curve(probs[:, j], truth)
        curves.append((precision.numpy(), recall.numpy()))
    return curves


def label_figures(folder: Path, report: dict[str, Any], pred: Predictions) -> list[str]:
    """A multi-label report's per-label confusion panels and precision–recall curves, weakest first."""
    rows = report["per_class"]
    shown = weakest_labels(rows)
    picked = [rows[i] for i in shown]
    plots.label_confusion_plot(picked, len(rows), folder / LABEL_CONFUSION)
    plots.label_pr_plot(picked, label_curves(pred, shown), len(rows), len(pred.labels), folder / LABEL_PR)
    return [LABEL_CONFUSION, LABEL_PR]


def report_figures(
    folder: Path,
    report: dict[str, Any],
    pred: Predictions,
    model: nn.Module,
    normalize: Normalize,
    split: Split,
    skipped: dict[str, str],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Draw every figure; returns the report keys `plots` (file names) and `confident_errors`.

    `pred` are the predictions behind `report`, in `split` order less the `skipped` files.
    """
    classes = report["classes"]
    image_size, channels = report["data"]["image_size"], report["data"]["channels"]
    names: list[str] = []
    if history:
        best = (report.get("training") or {}).get("best_epoch")
        plots.training_curves(history, folder / CURVES, report.get("title", ""), best)
        names.append(CURVES)
    if report.get("task") == "multilabel":  # per-label figures; no calibration or argmax errors
        return {"plots": names + label_figures(folder, report, pred), "confident_errors": []}
    plots.confusion_matrix_plot(report["confusion_matrix"], classes, folder / CONFUSION)
    plots.confusion_matrix_plot(report["confusion_matrix"], classes, folder / CONFUSION_NORMALISED, True)
    plots.reliability_diagram(report["calibration"], report["ece"], folder / RELIABILITY)
    names += [CONFUSION, CONFUSION_NORMALISED, RELIABILITY]
    side = report["data"].get("resize", image_size)  # data.crop_pct: decoded larger, centre-cropped
    errors = error_examples(pred, model, normalize, split, skipped, (image_size, side), channels, classes)
    if errors["rows"]:
        plots.error_grid(
            errors["images"],
            errors["heatmaps"],
            errors["captions"],
            folder / ERRORS,
            f"Most confidently wrong {report.get('split', 'test')} images "
            f"({plots.METHOD_NAMES[errors['method']]} of the predicted class)",
        )
        names.append(ERRORS)
    return {"plots": names, "confident_errors": errors["rows"]}


def error_examples(
    pred: Predictions,
    model: nn.Module,
    normalize: Normalize,
    split: Split,
    skipped: dict[str, str],
    sizes: tuple[int, int],
    channels: int,
    classes: list[str],
) -> dict[str, Any]:
    """The most confidently wrong images, their heat maps for the predicted class, and captions.
    `sizes`: (image size, side read at before the centre crop)."""
    image_size, side = sizes
    order, confidence = confident_errors(pred)
    if len(order) == 0:
        return {"rows": [], "images": None, "heatmaps": None, "captions": [], "method": ""}
    indices = evaluated_positions(split, skipped)[order]
    items = SplitDataset(split, side, channels)
    crops = [centre_crop(items[int(i)][0], image_size) for i in indices]
    images = np.stack([c.permute(1, 2, 0).numpy() for c in crops])  # (N, H, W, C) uint8
    predicted = pred.logits[order].argmax(1).numpy()
    maps = Explainer(model, normalize, image_size, channels)(images, predicted)
    rows, captions = [], []
    for i, index in enumerate(indices):
        true, guess = classes[int(pred.labels[order[i]])], classes[int(predicted[i])]
        rows.append(
            {
                "index": int(index),
                "name": split.name(int(index)),
                "true": true,
                "predicted": guess,
                "confidence": float(confidence[i]),
            }
        )
        captions.append(
            f"true: {plots.short(true, 20)}\npred: {plots.short(guess, 20)} ({100 * confidence[i]:.0f}%)"
        )
    return {
        "rows": rows,
        "images": images,
        "heatmaps": maps.heatmaps,
        "captions": captions,
        "method": maps.method,
    }
