"""A checksum of a checkpoint's contents, so a damaged file is caught when it is read.

The digest is SHA-256 over a canonical walk of the payload (tensors by dtype, shape and bytes;
plain data by type and value), computed from the objects rather than from the file's bytes: the
writer stores it inside the file it describes, and the reader recomputes it from what it loaded.
Any flipped byte that still unpickles changes a tensor or a value, hence the digest; one that
does not unpickle fails the load. This is a leaf module: it imports nothing of yingshe.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

ALGORITHM = "sha256"


def payload_digest(payload: Any) -> str:
    """The hex SHA-256 of `payload` (dicts, lists, tuples, tensors, str, numbers, None)."""
    h = hashlib.new(ALGORITHM)
    _feed(h, payload)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}|".encode())
        for key, item in value.items():  # insertion order: torch.load keeps it
            _feed(h, key)
            _feed(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}|".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}|".encode())
        h.update(data)
    elif value is None or isinstance(value, (bool, int, float)):
        h.update(f"{type(value).__name__}:{value!r}|".encode())
    else:
        raise TypeError(f"a checkpoint holds tensors and plain data, not {type(value).__name__}")
