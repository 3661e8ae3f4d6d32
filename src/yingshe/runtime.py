"""Device choice and seeding: the device is a setting, never a fork of the code."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from yingshe.errors import YingsheError


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as err:
        raise YingsheError(f"unknown device {setting!r}", "use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise YingsheError("device cuda was asked for but no CUDA GPU is visible", "use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise YingsheError(
            f"device {setting} does not exist: {torch.cuda.device_count()} GPU(s) visible",
            f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}, or set CUDA_VISIBLE_DEVICES",
        )
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every generator the run uses; with `deterministic`, also forbid nondeterministic
    kernels (cuDNN autotuning, atomics-based scatter) at some cost in speed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
