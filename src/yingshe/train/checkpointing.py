"""What a checkpoint must hold, beyond weights and optimiser, for a resume to continue exactly.

- The random generators the rest of the run draws from: Python's `random`, NumPy's global
  generator, torch's CPU generator (the batch augmentation draws its crops, flips and mixes there,
  on the CPU) and every CUDA generator (the same draws on a GPU).
- The position inside an unfinished epoch (`EpochProgress`): the epoch's order itself is derived
  from (seed, epoch) by the samplers, so the position is a count of the batches already taken
  from the data source, which the resumed run skips at the source, without augmenting them, so
  the next augmentation draw is the one an uninterrupted run makes. With it go the epoch's running
  train-loss and accuracy sums, so the epoch's metrics.csv row comes out the same. A run that
  ends inside an epoch keeps the same record of it in its last.pt (`FitState.partial`), so an
  extension of the run finishes that epoch.

Stored as tensors and plain data, so checkpoints still load with `weights_only=True`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from yingshe.errors import YingsheError


def capture_rng() -> dict[str, Any]:
    """Every global generator's state."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the generators `capture_rng` saw (checkpoints from before Python/NumPy states were
    saved restore torch's only)."""
    if "python" in rng:
        version, state, gauss = rng["python"]
        random.setstate((version, tuple(state), gauss))
    if "numpy" in rng:
        n = rng["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])


@dataclass
class EpochProgress:
    """Where an unfinished epoch stands: batches taken from the source, and the running sums."""

    epoch: int
    batches: int  # source batches consumed (a batch of only unreadable files counts too)
    loss_sum: torch.Tensor  # sum of loss × batch size, on the device while training
    correct: torch.Tensor
    seen: int

    @classmethod
    def start(cls, epoch: int, device: torch.device) -> EpochProgress:
        zero = torch.zeros((), device=device)  # device accumulators: no host sync per step
        return cls(epoch, 0, zero, zero.clone(), 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches": self.batches,
            "loss_sum": self.loss_sum.detach().cpu().clone(),
            "correct": self.correct.detach().cpu().clone(),
            "seen": self.seen,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(d["epoch"], d["batches"], d["loss_sum"].to(device), d["correct"].to(device), d["seen"])


def checkpoint_due(step: int, every: int | None, batches: int, steps_per_epoch: int) -> bool:
    """Whether step `step` writes a mid-epoch last.pt under `train.checkpoint_every`; never on an
    epoch's last batch, which the end-of-epoch checkpoint covers."""
    return bool(every) and step % every == 0 and batches < steps_per_epoch


def check_every(every: int | None) -> None:
    if every is not None and (isinstance(every, bool) or every < 1):
        raise YingsheError(
            f"train.checkpoint_every must be a number of steps >= 1, not {every!r}",
            "set train.checkpoint_every=K (last.pt every K steps), or null for once per epoch",
        )
