"""Helpers shared by test modules (importable as `support`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Train on one CPU thread: the model then comes out bit-identical on any machine (the order
    of float sums depends on the thread count, and each subprocess or torchrun rank runs with
    OMP_NUM_THREADS=1), and on a shared 2-core box one thread runs several times faster than two
    that keep preempting each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
