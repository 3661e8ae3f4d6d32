"""ONNX export through `torch.onnx.export`, and ONNX Runtime inference on the CPU.

Exporter: `auto` (the default) uses the TorchScript-based exporter (`dynamo=False`) and falls back
to the torch.export-based one (`dynamo=True`, needs `onnxscript`) if it fails or is gone. Both
exist on every torch >= 2.11 and both reproduce PyTorch to ~2e-7 on yingshe's models, but on the
seed-cnn the legacy path took 0.9 s and dynamo 19–29 s (2 shared cores, torch 2.14.1), and export
runs in tests and CI. Since torch 2.9 dynamo is torch's default and the legacy path is deprecated,
so `exporter="dynamo"` (`--exporter dynamo`) selects it directly; the metadata names the one used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yingshe.errors import YingsheError, require
from yingshe.export.graph import INPUT_NAME, OUTPUT_NAME, DeployModule
from yingshe.export.metadata import FORMAT, from_props, read_task, to_props
from yingshe.inference import ImageClassifier

log = logging.getLogger(__name__)
DEFAULT_OPSET = 18


EXPORTERS = ("auto", "legacy", "dynamo")


def export_onnx(
    module: DeployModule, example: torch.Tensor, opset: int, dynamic_batch: bool, exporter: str = "auto"
) -> tuple[bytes, str]:
    """The serialised ONNX model and the name of the exporter that made it."""
    if exporter == "dynamo":
        return _dynamo(module, example, opset, dynamic_batch), "torch.onnx dynamo"
    try:
        return _legacy(module, example, opset, dynamic_batch), "torch.onnx legacy (TorchScript)"
    except Exception as err:  # any exporter failure: the other exporter may still handle the model
        if exporter == "legacy":
            raise
        log.warning("legacy ONNX exporter failed (%s: %s); trying dynamo", type(err).__name__, err)
    return _dynamo(module, example, opset, dynamic_batch), "torch.onnx dynamo"


def _dynamo(module: DeployModule, example: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=shapes,
            verbose=False,
            report=False,
        )
    return program.model_proto.SerializeToString()


def _legacy(module: DeployModule, example: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def with_metadata(model: bytes, meta: dict[str, Any]) -> bytes:
    """`model` with `meta` as its metadata_props (replacing any of the same keys)."""
    onnx = require("onnx", "deploy", "ONNX export")
    proto = onnx.load_model_from_string(model)
    props = to_props(meta)
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def session(model: bytes | str | Path, threads: int = 0, spin: bool = True):
    """An ONNX Runtime CPU session (`threads` 0: its default). `spin=False` lets idle intra-op
    threads sleep instead of busy-waiting for the next run: a server whose event loop shares the
    cores answers more requests that way (bench/serve_load.py), batch prediction runs are faster
    spinning."""
    ort = require("onnxruntime", "deploy", "running a .onnx model")

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxClassifier(ImageClassifier):
    """An exported `.onnx` file run by ONNX Runtime on the CPU, fed by the same preprocessing as
    every other backend (`ImageClassifier.preprocess`). A multi-label export's metadata makes it
    score with sigmoids and pick labels at the stored thresholds, as the run folder does."""

    def __init__(self, path: str | Path, threads: int = 0, spin: bool = True) -> None:
        path = Path(path)
        if not path.is_file():
            raise YingsheError(
                f"model file {path} does not exist", "pass a .onnx file `yingshe export` wrote"
            )
        try:
            self.session = session(path, threads, spin)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise YingsheError(
                f"{path} is not a loadable ONNX model ({type(err).__name__})",
                "pass a .onnx file written by `yingshe export`",
            ) from err
        meta = from_props(self.session.get_modelmeta().custom_metadata_map)
        if meta.get("format") != FORMAT:
            raise YingsheError(
                f"{path} is an ONNX model but not one `yingshe export` wrote (no yingshe metadata)",
                "export it with `yingshe export RUN --format onnx`",
            )
        self.meta = meta
        self.classes = list(meta["classes"])
        self.image_size = int(meta["image_size"])
        resize = int(meta.get("resize") or self.image_size)  # exports before crop_pct: none
        self.resize = resize if resize != self.image_size else None
        self.channels = int(meta["channels"])
        self.thresholds = read_task(meta, path.name)  # None: single-label (and every export before tasks)
        self.multilabel = self.thresholds is not None
        self.source = path.name
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def logits(self, arrays: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) → float32 logits (N, K); a fixed-batch export runs in chunks."""
        arrays = np.ascontiguousarray(arrays, dtype=np.uint8)
        step = self.fixed_batch or max(len(arrays), 1)
        if self.fixed_batch and len(arrays) % step:
            pad = step - len(arrays) % step
            arrays = np.concatenate([arrays, np.zeros((pad, *arrays.shape[1:]), np.uint8)])
        else:
            pad = 0
        outs = [
            self.session.run(None, {INPUT_NAME: arrays[i : i + step]})[0] for i in range(0, len(arrays), step)
        ]
        out = np.concatenate(outs)
        return out[: len(out) - pad]

    def probabilities(self, arrays: np.ndarray) -> torch.Tensor:
        """Softmax over classes; per-label sigmoid scores for a multi-label export, as `Classifier`."""
        logits = torch.from_numpy(self.logits(arrays))
        return logits.sigmoid() if self.multilabel else logits.softmax(1)
