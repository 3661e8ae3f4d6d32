"""Time to accuracy on Fashion-MNIST: the seeds' approach against yingshe's `fast` recipe.

Both run in this one process, one after the other, on the same data (../shared/datasets, or
$YINGSHE_DATA), and both are timed from the moment they start reading the data:
(a) the seeds' approach, reimplemented faithfully: their 4-block conv–BN–ReLU CNN (yingshe's
    `seed-cnn`, 1×28×28), Adam lr 1e-3, batch 64, per-image transforms (flip, ±10° rotation,
    to-float, normalise) in a DataLoader with worker processes, test accuracy after each epoch;
(b) `yingshe.train` with the `fast` recipe, trained on all 60k images and evaluated on the test
    split (data.val_fraction=0, with the recipe's flip TTA) where the recipe validates: after its
    last step only (train.val_every=0), so its time is that of its whole 2.5-epoch schedule.
Mode `target` (default) stops each as soon as an epoch reaches --target test accuracy, or at
--budget seconds, and prints the ratio of the wall times. Mode `budget` runs each for --budget
seconds (the recipe for as many epochs as fit, estimated from its first epoch) and reports the
best test accuracy each reached. Each approach's process CPU seconds (user + system, its ended
worker processes included; from its start to its end, so the seeds' figure includes the epoch
in which the budget ran out) are reported beside the wall times, since wall time on a shared
machine swings 3-5x. The last line holds the key=value figures:
seed_s fast_s time_ratio seed_cpu_s fast_cpu_s cpu_ratio seed_acc fast_acc.

    nice -n 15 .venv/bin/python bench/time_to_accuracy.py [--mode target|budget] [--budget 1500]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import yingshe
from yingshe.config import DataConfig
from yingshe.data.dataset import read_spec
from yingshe.models import create_model
from yingshe.recipes import recipe_config
from yingshe.train.callbacks import Callback

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


class SeedImages(Dataset):
    """The seeds' per-image pipeline: uint8 HWC array → flip, rotate, float, normalise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool):
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        steps = [v2.RandomHorizontalFlip(), v2.RandomRotation(10)] if train else []
        self.transform = v2.Compose(
            [*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.2860], [0.3530])]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1)  # (1, 28, 28) uint8
        return self.transform(image), int(self.labels[i])


def seed_run(data_dir: str, target: float | None, budget: float, workers: int) -> tuple[float, float, int]:
    """(seconds to target or budget, best test accuracy, epochs) for the seeds' approach."""
    started = time.perf_counter()
    source = read_spec(DataConfig(spec="fashion-mnist", data_dir=data_dir))
    train, test = source.splits["train"], source.splits["test"]
    torch.manual_seed(0)
    train_loader = DataLoader(
        SeedImages(train.images, train.labels, True),
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    test_loader = DataLoader(SeedImages(test.images, test.labels, False), batch_size=256, num_workers=workers)
    model = create_model("seed-cnn", 10, 1, 28)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, epoch, elapsed = 0.0, 0, 0.0
    while time.perf_counter() - started < budget:
        epoch += 1
        model.train()
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if time.perf_counter() - started > budget:
                break
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in test_loader:
                correct += int((model(images).argmax(1) == labels).sum())
                total += len(labels)
        accuracy = correct / total
        best = max(best, accuracy)
        elapsed = time.perf_counter() - started
        print(f"  seed  epoch {epoch:>2}  test acc {100 * accuracy:.2f}%  at {elapsed:.1f} s", flush=True)
        if target is not None and accuracy >= target:
            break
    else:
        elapsed = time.perf_counter() - started
    del train_loader, test_loader  # stop and reap the workers, so cpu_seconds() counts them
    gc.collect()
    return elapsed, best, epoch


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended (DataLoader
    workers, preparation pools): the figure that does not swing with other load on the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_cpu(fn, *args) -> tuple[float, tuple]:
    """(CPU seconds, result) of fn(*args)."""
    before = cpu_seconds()
    result = fn(*args)
    gc.collect()
    return cpu_seconds() - before, result


class StopAt(Callback):
    """Records when the per-epoch test accuracy first reaches `target`, and stops there (or at
    `budget` seconds). `val` is the test split here (data.val_fraction=0)."""

    def __init__(self, started: float, target: float | None, budget: float):
        self.started, self.target, self.budget = started, target, budget
        self.seconds, self.best, self.epochs = None, 0.0, 0

    def on_epoch_end(self, trainer, row) -> None:
        elapsed = time.perf_counter() - self.started
        self.epochs = round(trainer.state.step / trainer.steps_per_epoch, 2)  # 2.5 for the recipe's
        if not trainer.validated:  # the recipe's train.val_every skipped this epoch's test pass
            print(f"  fast  epoch {row['epoch']:>2}  (not evaluated)  at {elapsed:.1f} s")
            return
        self.best = max(self.best, row["val_accuracy"])
        print(
            f"  fast  epoch {row['epoch']:>2}  test acc {100 * row['val_accuracy']:.2f}%  at {elapsed:.1f} s"
        )
        reached = self.target is not None and row["val_accuracy"] >= self.target
        if reached or elapsed >= self.budget:
            self.seconds = elapsed
            trainer.state.should_stop = True

    def on_epoch_start(self, trainer, epoch, steps) -> None:
        if time.perf_counter() - self.started >= self.budget:
            trainer.state.should_stop = True


def fast_run(
    data_dir: str, target: float | None, budget: float, epochs: float | None
) -> tuple[float, float, float]:
    started = time.perf_counter()
    out = tempfile.mkdtemp(prefix="yingshe-tta-")
    overrides = [
        f"data.data_dir={data_dir}",
        "data.val_fraction=0",
        f"train.out={out}",
        "train.exist_ok=true",
    ]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    cfg = recipe_config("fast", data="fashion-mnist", overrides=overrides)
    stop = StopAt(started, target, budget)
    yingshe.train(cfg, callbacks=[stop])
    return stop.seconds or time.perf_counter() - started, stop.best, stop.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("YINGSHE_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--mode", choices=["target", "budget"], default="target")
    parser.add_argument("--target", type=float, default=0.93, help="test accuracy to reach (mode target)")
    parser.add_argument("--budget", type=float, default=1500.0, help="seconds per approach at most")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the seeds' approach")
    parser.add_argument("--fast-epochs", type=float, help="epochs of the fast recipe (default: the recipe's)")
    parser.add_argument("--skip-seed", action="store_true", help="only the fast recipe (seed_s is then 0)")
    args = parser.parse_args()
    target = args.target if args.mode == "target" else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"mode {args.mode}, budget {args.budget} s"
    )

    print("(a) the seeds' approach")
    seed_cpu, (seed_s, seed_acc, seed_epochs) = 0.0, (0.0, 0.0, 0)
    if not args.skip_seed:
        seed_cpu, (seed_s, seed_acc, seed_epochs) = timed_cpu(
            seed_run, args.data_dir, target, args.budget, args.workers
        )
    print("(b) yingshe's fast recipe")
    fast_epochs = args.fast_epochs
    if args.mode == "budget" and fast_epochs is None:
        fast_epochs = budget_epochs(args.data_dir, args.budget)
    fast_cpu, (fast_s, fast_acc, fast_done) = timed_cpu(
        fast_run, args.data_dir, target, args.budget, fast_epochs
    )

    reached = "reached" if target is not None else "best"
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes slow both approaches)")
    print(f"seed: {seed_s:.1f} s, {seed_epochs} epochs, {reached} {100 * seed_acc:.2f}%")
    print(f"fast: {fast_s:.1f} s, {fast_done} epochs, {reached} {100 * fast_acc:.2f}%")
    if target is not None and (seed_acc < target or fast_acc < target):
        print(f"note: an approach that never reached {100 * target:.1f}% is timed at its budget or its end")
    ratio = seed_s / fast_s if fast_s else float("nan")
    cpu_ratio = seed_cpu / fast_cpu if fast_cpu else float("nan")
    print(
        f"seed_s={seed_s:.1f} fast_s={fast_s:.1f} time_ratio={ratio:.2f} seed_cpu_s={seed_cpu:.1f} "
        f"fast_cpu_s={fast_cpu:.1f} cpu_ratio={cpu_ratio:.2f} seed_acc={seed_acc:.4f} fast_acc={fast_acc:.4f}"
    )


def budget_epochs(data_dir: str, budget: float) -> int:
    """How many epochs of the fast recipe fit the budget, from a timed 20-step probe."""
    cfg = recipe_config("fast", data="fashion-mnist", overrides=[f"data.data_dir={data_dir}"])
    steps, batch = 20, cfg.train.batch_size
    model = create_model(cfg.model.name, 10, 1, 28, **cfg.model.kwargs).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    started = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    per_epoch = (time.perf_counter() - started) / steps * 60_000 / batch * 1.15  # + evaluation
    return max(1, int(budget / per_epoch))


if __name__ == "__main__":
    main()
