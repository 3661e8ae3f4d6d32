"""What an exported model carries about itself: classes, input shape, normalisation, versions.

Written twice: as ONNX `metadata_props` (or TorchScript extra files) inside the model, so the file
alone is enough, and as `<file>.json` beside it, for people and tools that do not open models.

A multi-label export adds `task: "multilabel"` and one `thresholds` entry per class: its logits
mean sigmoid scores, a label applying when its score reaches its threshold. A single-label export
carries neither key, as every export before multi-label did, so old and new files read alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from yingshe._version import __version__
from yingshe.errors import YingsheError
from yingshe.export.graph import INPUT_NAME, OUTPUT_NAME
from yingshe.inference import Classifier
from yingshe.runs import file_sha256

FORMAT = "yingshe-export"
SINGLE_LABEL, MULTI_LABEL = "multiclass", "multilabel"  # the `task` values (schema.CheckpointMeta.task)
SOFTMAX_MEANING = "logits; softmax gives probabilities"
SIGMOID_MEANING = "logits; sigmoid gives each label's score, a label applies when it reaches its threshold"


def export_metadata(classifier: Classifier, checkpoint: Path, fmt: str, **extra: Any) -> dict[str, Any]:
    """The self-description of an export of `classifier` (loaded from `checkpoint`)."""
    meta = classifier.checkpoint.meta
    return {
        "format": FORMAT,
        "export_format": fmt,
        "classes": classifier.classes,
        "image_size": classifier.image_size,
        "resize": classifier.resize or classifier.image_size,
        "preprocessing": preprocessing(classifier),
        "channels": classifier.channels,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "normalized_inside": True},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "meaning": SOFTMAX_MEANING},
        "tta_flip": classifier.tta_flip,
        "tta_translate": classifier.tta_translate,
        "model": meta.model.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "yingshe_version": __version__,
        "torch_version": torch.__version__,
        **extra,
        **task_fields(classifier),
    }


def task_fields(classifier: Classifier) -> dict[str, Any]:
    """Multi-label only: the task, the thresholds `Classifier.above` applies (0.5 each where the
    checkpoint has none, e.g. a last.pt written before tuning) and the sigmoid output meaning.
    Nothing for single-label, whose exports stay as they were."""
    if not classifier.multilabel:
        return {}
    output = {"name": OUTPUT_NAME, "dtype": "float32", "meaning": SIGMOID_MEANING}
    return {"task": MULTI_LABEL, "thresholds": classifier.label_thresholds(), "output": output}


def read_task(meta: dict[str, Any], source: str) -> list[float] | None:
    """The per-class thresholds of a multi-label export, None for a single-label one (or one
    written before the `task` key existed); anything else is refused rather than guessed at."""
    task = meta.get("task", SINGLE_LABEL)
    if task == SINGLE_LABEL:
        return None
    if task != MULTI_LABEL:
        raise YingsheError(
            f"{source} is a {task!r} export, which this yingshe ({__version__}) cannot read",
            "predict with the yingshe version that exported it, or re-export the run with this one",
        )
    thresholds = meta.get("thresholds")
    classes = meta.get("classes") or []
    if not isinstance(thresholds, list) or len(thresholds) != len(classes):
        raise YingsheError(
            f"{source} is a multi-label export without one threshold per class in its metadata",
            "re-export the run with `yingshe export RUN`",
        )
    return [float(t) for t in thresholds]


def preprocessing(classifier: Classifier) -> str:
    """How to turn an image into the model's uint8 input, for readers who do it themselves."""
    size, side = classifier.image_size, classifier.resize or classifier.image_size
    mode = "RGB" if classifier.channels == 3 else "greyscale (L)"
    steps = f"resize the shorter side to {side} px (bilinear, antialiased), crop the centre {side}×{side}"
    if side != size:
        steps += f", then its centre {size}×{size} (offset {(side - size) // 2} px)"
    return f"upright by EXIF orientation, {mode}, {steps}; uint8 NHWC (normalised inside the model)"


def to_props(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props are string → string: scalars as text, the rest as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def from_props(props: dict[str, str]) -> dict[str, Any]:
    """The inverse of `to_props` (strings that are not JSON stay strings)."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
