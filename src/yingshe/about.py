"""What `yingshe --version` prints: package versions and the device a run would use, found
without importing torch (importing it costs seconds; the answer must come in well under one).

The versions come from the installed distributions' metadata. The device is read from what the
machine shows: torch's build (its `version.py`, read as text, names the CUDA version it was built
for) and the NVIDIA driver's list of GPUs (`/proc/driver/nvidia/gpus`). `--device auto` picks
CUDA when both are there; this says so without starting CUDA, which `yingshe train` then does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import sys
from pathlib import Path

from yingshe._version import __version__

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda_build() -> str | None:
    """The CUDA version torch was built for ('13.0'), None for a CPU build or no torch."""
    spec = importlib.util.find_spec("torch")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"^cuda\s*(?::[^=]*)?=\s*'([^']+)'", path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None


def device_hint() -> str:
    """The device `--device auto` will choose, and why."""
    cuda = torch_cuda_build()
    gpus = sorted(NVIDIA_GPUS.iterdir()) if NVIDIA_GPUS.is_dir() else []
    if cuda and gpus:
        return f"cuda ({len(gpus)} NVIDIA GPU(s) seen by the driver; torch built for CUDA {cuda})"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps (Apple silicon), if this torch build has it; else cpu"
    if gpus:
        return f"cpu ({len(gpus)} NVIDIA GPU(s) seen, but this torch build has no CUDA)"
    return "cpu (no NVIDIA GPU seen by a driver)" + (f"; torch built for CUDA {cuda}" if cuda else "")


def version_text() -> str:
    torch = version("torch") or "not installed"
    vision = version("torchvision") or "not installed"
    return "\n".join(
        [
            f"yingshe {__version__}",
            f"torch {torch}, torchvision {vision}, python {platform.python_version()}",
            f"device: {device_hint()}",
        ]
    )
