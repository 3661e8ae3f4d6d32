"""Input-pipeline throughput on CIFAR-10: images per second delivered as normalised, augmented
training batches (random crop with padding 4, horizontal flip), three ways, in one run:

  (a) seed    torchvision ImageFolder + PIL transforms + DataLoader(num_workers=2)
  (b) jpeg    yingshe on the JPEG folder: DataLoader workers decode whole batches, the batch is
              augmented as one tensor (data.prepared=off)
  (c) packed  yingshe on prepared shards: memory-mapped uint8, one gather per batch, no workers

plus the single-core decode rate of Pillow and of torchvision's decode_jpeg (yingshe uses the
faster where it is exact), the time to prepare the shards, and peak RSS. Every pipeline runs in a
fresh process, so each peak RSS is that pipeline's own (for (c) there are no worker processes).

--scale N replicates the prepared training shards to N million images (a manifest that lists
the same shard files again and again: no extra disk, but every entry is mapped and unmapped on
its own) and measures (c) at 1 and at N million, to show that throughput and memory stay flat.

    python bench/data_throughput.py [--scale 5]

The last line is key=value pairs: seed_ips jpeg_ips packed_ips jpeg_ratio packed_ratio peak_rss_mb
(and with --scale: scale_m scaled_ips scaled_peak_rss_mb base_1m_ips base_1m_peak_rss_mb).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(epochs, count, min_images: int, min_seconds: float) -> float:
    """Images per second over batches from `epochs()` (a fresh iterator per epoch), after the
    first batch (worker start-up is not throughput), until both minimums are met."""
    seen, started = 0, None
    while True:
        for batch in epochs():
            if started is None:
                started = time.perf_counter()
                continue
            seen += count(batch)
            elapsed = time.perf_counter() - started
            if seen >= min_images and elapsed >= min_seconds:
                return seen / elapsed


# --- the pipelines, each run in its own process ---------------------------------------------


def run_seed(args) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    train = datasets.ImageFolder(str(args.folder / "train"), transform=transform)
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, num_workers=2, persistent_workers=True
    )
    ips = timed(lambda: loader, lambda b: len(b[1]), args.images, args.seconds)
    assert next(iter(loader))[0].dtype == torch.float32
    return {"ips": ips, "peak_rss_mb": peak_rss_mb()}


def training_batches(data, batch_size: int):
    """What the trainer iterates: batches to the device, augmented as whole tensors, normalised."""
    import torch

    from yingshe.config import AugmentConfig
    from yingshe.data.augment import BatchAugment, Normalize
    from yingshe.data.loader import DeviceBatches, make_batches

    augment = BatchAugment(AugmentConfig(crop_padding=4, hflip=True), 32, True, data.num_classes)
    batches = make_batches(data.train, 32, 3, batch_size, train=True, workers=2)
    return DeviceBatches(batches, data.train, torch.device("cpu"), Normalize(data.mean, data.std), augment)


def run_yingshe(args, spec: str, prepared: str) -> dict:
    from yingshe.config import DataConfig
    from yingshe.data.dataset import build_dataset

    cfg = DataConfig(
        spec=spec, prepared=prepared, cache_dir=str(args.work / "cache"), val_fraction=0, workers=2
    )
    data = build_dataset(cfg)
    kind = "packed" if data.train.packed is not None else "files"
    batches = training_batches(data, args.batch_size)
    epoch = [0]

    def epochs():
        epoch[0] += 1
        batches.set_epoch(epoch[0])
        return iter(batches)

    ips = timed(epochs, lambda b: len(b[2]), args.images, args.seconds)
    inputs = next(iter(batches))[0]
    assert inputs.shape[1:] == (3, 32, 32) and str(inputs.dtype) == "torch.float32"
    return {"ips": ips, "peak_rss_mb": peak_rss_mb(), "images": len(data.train), "kind": kind}


def run_decode(args) -> dict:
    """Single-core decode rate of Pillow (images.decode_image) and of decode_many (torchvision's
    decode_jpeg, batched) on the same 5,000 CIFAR JPEGs, and whether the pixels agree."""
    import numpy as np
    import torch

    from yingshe.data.decode import decode_many
    from yingshe.data.images import decode_image

    torch.set_num_threads(1)
    files = sorted((args.folder / "train").rglob("*.jpg"))[::10][:5000]
    blobs = [f.read_bytes() for f in files]
    started = time.perf_counter()
    pil = np.stack([decode_image(b, 32, 3) for b in blobs])
    pil_s = time.perf_counter() - started
    started = time.perf_counter()
    tv = np.concatenate([decode_many(blobs[i : i + 512], 32, 3)[0] for i in range(0, len(blobs), 512)])
    tv_s = time.perf_counter() - started
    return {
        "pil_ips": len(blobs) / pil_s,
        "tv_ips": len(blobs) / tv_s,
        "identical": bool(np.array_equal(pil, tv)),
    }


def run_prepare(args) -> dict:
    from yingshe.api import prepare_data

    started = time.perf_counter()
    summary = prepare_data(str(args.folder), cache_dir=str(args.work / "cache"))
    return {"seconds": time.perf_counter() - started, "out": summary["out"], "peak_rss_mb": peak_rss_mb()}


def run_scaled(args) -> dict:
    """(c) on a prepared folder replicated to args.millions million training images."""
    folder = scaled_folder(Path(args.prepared), args.work, args.millions)
    result = run_yingshe(args, str(folder), "auto")
    assert result["kind"] == "packed" and result["images"] >= args.millions * 1_000_000
    return result


def scaled_folder(prepared: Path, work: Path, millions: float) -> Path:
    """A prepared folder whose training split lists the real shards over and over."""
    import numpy as np

    from yingshe.data.pack import write_npy
    from yingshe.runs import atomic_write_json

    manifest = json.loads((prepared / "index.json").read_text())
    out = work / f"scaled-{millions:g}m"
    out.mkdir(parents=True, exist_ok=True)
    rel = Path("..") / prepared.relative_to(work) if prepared.is_relative_to(work) else prepared.resolve()
    train = manifest["splits"]["train"]
    repeats = math.ceil(millions * 1_000_000 / train["count"])

    def moved(entry: dict) -> dict:
        return {**entry, "path": (rel / entry["path"]).as_posix()}

    shards = [
        {**s, "images": moved(s["images"]), "labels": moved(s["labels"])} for s in train["shards"]
    ] * repeats
    labels = np.load(prepared / train["labels"]["path"])
    blocks = (labels for _ in range(repeats))
    count = len(labels) * repeats
    train_labels = write_npy(out / "train" / "labels.npy", out, np.int64, (count,), blocks)
    test = manifest["splits"]["test"]
    manifest["splits"] = {
        "train": {**train, "count": count, "shards": shards, "labels": train_labels, "skipped": []},
        "test": {
            **test,
            "labels": moved(test["labels"]),
            "shards": [
                {**s, "images": moved(s["images"]), "labels": moved(s["labels"])} for s in test["shards"]
            ],
        },
    }
    manifest["source"] = {
        **manifest["source"],
        "description": f"{manifest['source']['description']} ×{repeats}",
    }
    atomic_write_json(out / "index.json", manifest)
    return out


def child(args) -> None:
    import torch

    # One intra-op thread in every pipeline's main process. The seed's work runs in single-threaded
    # DataLoader workers anyway; yingshe's batch ops on 512 small images gain nothing from a
    # second thread, and on a shared 2-core machine two threads spin-wait against the other
    # processes: (c) measured 4× slower with 2 threads than with 1 there.
    torch.set_num_threads(args.threads)
    jobs = {
        "seed": lambda: run_seed(args),
        "jpeg": lambda: run_yingshe(args, str(args.folder), "off"),
        "packed": lambda: run_yingshe(args, str(args.folder), "auto"),
        "decode": lambda: run_decode(args),
        "prepare": lambda: run_prepare(args),
        "scaled": lambda: run_scaled(args),
    }
    print("RESULT " + json.dumps(jobs[args.only]()), flush=True)


def spawn(args, only: str, *extra: str) -> dict:
    command = [sys.executable, __file__, "--only", only, "--data", str(args.data), "--work", str(args.work)]
    for flag in ("batch_size", "images", "seconds", "threads"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run([*command, *extra], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{only} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def extract(data: Path, work: Path) -> Path:
    """The CIFAR-10 JPEG tree, extracted once under the (git-ignored) work folder."""
    folder = work / "cifar10-jpeg"
    if not (folder / "train").is_dir():
        archive = data / "cifar10-jpeg.tar.gz"
        if not archive.is_file():
            sys.exit(f"{archive} is missing: pass --data, the folder that holds cifar10-jpeg.tar.gz")
        shutil.rmtree(folder, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-data", help="git-ignored scratch")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--images", type=int, default=30_000, help="images measured per pipeline (at least)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds measured per pipeline (at least)")
    parser.add_argument(
        "--scale", type=float, default=0, help="also measure (c) replicated to N million images"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per pipeline process")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    parser.add_argument("--millions", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.folder = args.work / "cifar10-jpeg"
    if args.only:
        child(args)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    extract(args.data, args.work)
    shutil.rmtree(args.work / "cache", ignore_errors=True)  # (c) includes a fresh prepare
    print(
        f"CIFAR-10 train (50,000 JPEGs) from {args.data}; batch {args.batch_size}; "
        f"{os.cpu_count()} CPU cores; {args.threads} torch thread(s) per process; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    decode = spawn(args, "decode")
    print(
        f"decode, one core: Pillow {decode['pil_ips']:,.0f} img/s, torchvision.io.decode_jpeg "
        f"{decode['tv_ips']:,.0f} img/s ({decode['tv_ips'] / decode['pil_ips']:.1f}×), "
        f"identical pixels: {decode['identical']}"
    )
    seed = spawn(args, "seed")
    print(f"(a) seed   ImageFolder + PIL transforms, 2 workers: {seed['ips']:>9,.0f} img/s")
    jpeg = spawn(args, "jpeg")
    print(f"(b) jpeg   yingshe, JPEG folder, 2 workers:         {jpeg['ips']:>9,.0f} img/s")
    prep = spawn(args, "prepare")
    print(f"    prepare: 60,000 JPEGs decoded into shards in {prep['seconds']:.1f} s")
    packed = spawn(args, "packed")
    print(f"(c) packed yingshe, prepared shards, no workers:    {packed['ips']:>9,.0f} img/s")
    jpeg_ratio, packed_ratio = jpeg["ips"] / seed["ips"], packed["ips"] / seed["ips"]
    print(f"ratios: (b)/(a) = {jpeg_ratio:.2f}   (c)/(a) = {packed_ratio:.1f}")
    print(
        f"peak RSS: (a) {seed['peak_rss_mb']:.0f} MB main process   (b) {jpeg['peak_rss_mb']:.0f} MB   "
        f"(c) {packed['peak_rss_mb']:.0f} MB"
    )
    line = {
        "seed_ips": f"{seed['ips']:.0f}",
        "jpeg_ips": f"{jpeg['ips']:.0f}",
        "packed_ips": f"{packed['ips']:.0f}",
        "jpeg_ratio": f"{jpeg_ratio:.2f}",
        "packed_ratio": f"{packed_ratio:.1f}",
        "peak_rss_mb": f"{packed['peak_rss_mb']:.0f}",
    }
    if args.scale:
        measured = max(args.images, 1_000_000)  # long enough to pass through many windows of shards
        for millions in sorted({1.0, args.scale}):
            extra = ["--prepared", prep["out"], "--millions", str(millions)]
            result = spawn(argparse.Namespace(**{**vars(args), "images": measured}), "scaled", *extra)
            print(
                f"(c) at {result['images']:,} images: {result['ips']:,.0f} img/s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB"
            )
            key = "scaled" if millions == args.scale else "base_1m"
            line[f"{key}_ips"] = f"{result['ips']:.0f}"
            line[f"{key}_peak_rss_mb"] = f"{result['peak_rss_mb']:.0f}"
        line = {**line, "scale_m": f"{args.scale:g}"}
    print(" ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()
