"""Class imbalance: plain training vs the balancing options on long-tailed CIFAR-10 (ratio 100).

The training split is the first 500 images per class of CIFAR-10's train set (the JPEG copy), cut to the
CIFAR-10-LT profile (`data.imbalance=100`: 500, 299, 179, …, 5 images per class; 1,236 in all); the test
split is the first 200 test images of every class (balanced, 2,000). Every run has the same model, seed,
epochs and steps (the last epoch is kept: `train.monitor=epoch`), so the only difference is
`train.balance`. The balancing option reported as `balanced_bacc` is the one with the best
balanced accuracy on the (long-tailed) validation split, chosen without looking at the test set;
every option's test figure is printed too. The model is the seed-cnn at half width (a quarter
of the default's work), so the four runs fit in about 12 minutes of one busy CPU core.

    nice -n 10 .venv/bin/python bench/imbalance.py [--epochs 8] [--data-dir ../shared/datasets]
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from yingshe.api import train
from yingshe.config import RunConfig, apply_overrides

OPTIONS = ("weights", "sampler", "logit-adjust")


def slice_cifar(archive: Path, root: Path, train: int = 500, test: int = 200) -> Path:
    """The first `train` and `test` JPEGs of every class as a folder tree: read from the archive
    once here instead of once per run (gzip cannot seek)."""
    wanted = {"train": train, "test": test}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < wanted[parts[1]]:
                folder = root / parts[1] / parts[2]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / parts[3]).write_bytes(tar.extractfile(member).read())
                taken[key] = taken.get(key, 0) + 1
    return root


def run(balance: str, args: argparse.Namespace, out: Path, data: Path) -> dict:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={data}",
            "data.imbalance=100",
            "data.val_fraction=0.2",
            "model.kwargs={widths: [16, 32, 64, 128]}",
            "data.prepared='off'",
            "data.workers=0",
            f"train.epochs={args.epochs}",
            "train.batch_size=64",
            "train.device=cpu",
            "train.monitor=epoch",
            "train.plots=false",
            f"train.balance={balance}",
            f"train.out={out / balance}",
        ],
    )
    started = time.perf_counter()
    report = train(cfg).report
    return {
        "test_bacc": report["balanced_accuracy"],
        "test_acc": report["accuracy"],
        "val_bacc": report["validation"]["balanced_accuracy"],
        "tail_recall": report["per_class"][-1]["recall"],
        "num_train": report["num_train"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="yingshe-imbalance-"))
    data = slice_cifar(Path(args.data_dir) / "cifar10-jpeg.tar.gz", out / "cifar10-slice")
    results = {}
    for balance in ("none", *OPTIONS):
        results[balance] = r = run(balance, args, out, data)
        print(
            f"{balance:>12}: test balanced acc {100 * r['test_bacc']:.2f}%  acc {100 * r['test_acc']:.2f}%  "
            f"rarest-class recall {100 * r['tail_recall']:.1f}%  "
            f"val balanced acc {100 * r['val_bacc']:.2f}%  "
            f"({r['num_train']} train images, {r['seconds']:.0f} s)",
            flush=True,
        )
    best = max(OPTIONS, key=lambda name: results[name]["val_bacc"])
    plain, balanced = results["none"]["test_bacc"], results[best]["test_bacc"]
    print(f"best option on validation: {best}")
    print(
        f"plain_bacc={100 * plain:.2f} balanced_bacc={100 * balanced:.2f} "
        f"gain_points={100 * (balanced - plain):.2f} best={best} epochs={args.epochs}"
    )


if __name__ == "__main__":
    main()
