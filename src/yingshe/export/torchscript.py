"""TorchScript export through `torch.jit.trace`, metadata in the archive's extra files.

Tracing (not scripting) because the deploy graph has no data-dependent control flow: the flip TTA
decision is a Python bool fixed at export time. PyTorch marks TorchScript as in maintenance; it is
offered for C++/libtorch consumers, ONNX is the recommended format.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import torch

from yingshe.export.graph import DeployModule

EXTRA_FILE = "yingshe.json"


def export_torchscript(module: DeployModule, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta)})
    return buffer.getvalue()


def load_torchscript(model: bytes) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The traced module and its metadata, from the bytes `export_torchscript` wrote."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(model), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE] or "{}")
