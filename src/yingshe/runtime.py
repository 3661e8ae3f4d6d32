"""Device choice, seeding and the CPU allocator: the device is a setting, never a fork of the code."""

from __future__ import annotations

import ctypes
import os
import platform
import random
import sys

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


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 1 << 30  # freed memory at the top of the heap kept for reuse, up to this much
DEFAULT_TRIM_BYTES, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc defaults: `reuse_cpu_memory(False)`


def reuse_cpu_memory(enable: bool = True) -> bool:
    """On Linux with glibc: serve every allocation from the heap and keep freed memory there for
    the next one (mallopt), instead of mapping each large block afresh and unmapping it when freed.

    A CPU training step allocates and frees the same large activations and gradients every step.
    glibc maps each block over its mmap threshold (32 MB at most) on its own, so every step faults
    each of its pages in again and the kernel zeroes them: max-pool's zero-filled gradient alone
    took 14.6 ms of a ~300 ms step of `fast:grey-28`, and 111,000 page faults a step put a quarter
    of its CPU time in the kernel. Kept in the heap they are reused warm: 1.46× fewer CPU seconds
    a step (docs/benchmarks.md, session 10). The price: the process keeps its peak memory instead of
    returning it, which a training process reaches again every step anyway. tcmalloc or jemalloc
    (LD_PRELOAD) do the same by design. The setting holds for the rest of the process (and the
    DataLoader workers it forks). `reuse_cpu_memory(False)` puts back glibc's default values, but
    not its sliding mmap threshold, which glibc stops adjusting once either is set. Returns whether
    the setting took; elsewhere a no-op."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mmap_max, trim = (0, KEEP_FREED_BYTES) if enable else (DEFAULT_MMAP_MAX, DEFAULT_TRIM_BYTES)
    return mallopt(M_MMAP_MAX, mmap_max) == 1 and mallopt(M_TRIM_THRESHOLD, trim) == 1
