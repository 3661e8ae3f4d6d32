"""What an exported model carries about itself: classes, input shape, normalisation, versions.

Written twice: as ONNX `metadata_props` (or TorchScript extra files) inside the model, so the file
alone is enough, and as `<file>.json` beside it, for people and tools that do not open models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from yingshe._version import __version__
from yingshe.export.graph import INPUT_NAME, OUTPUT_NAME
from yingshe.inference import Classifier
from yingshe.runs import file_sha256

FORMAT = "yingshe-export"


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
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "meaning": "logits; softmax gives probabilities"},
        "tta_flip": classifier.tta_flip,
        "tta_translate": classifier.tta_translate,
        "model": meta.model.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "yingshe_version": __version__,
        "torch_version": torch.__version__,
        **extra,
    }


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
