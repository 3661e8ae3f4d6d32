"""Input-pipeline throughput on photo-sized JPEGs: images per second delivered as normalised,
random-resized-cropped (224×224) and flipped training batches, in one run:

  (a) seed        torchvision ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize,
                  DataLoader(num_workers=2), the whole photo decoded per image
  (b) jpeg        yingshe on the JPEG folder as `yingshe train` reads it (data/photo.py,
                  PhotoCrops through crop.PhotoTrainBatches): 2 DataLoader workers decode a
                  batch and random-resized-crop each photo as it is decoded (box drawn from the
                  JPEG header; libjpeg-turbo's fast IDCT and chroma upsampling through
                  simplejpeg, at 1/2-1/8 scale when the box is >= 2x the crop; OpenCV's
                  bilinear resize for boxes shrunk little, else torch's antialiased one),
                  uint8 224 px to the main process, which only normalises
  (c) packed      yingshe on prepared uint8 shards at 256 px (data/packed_crops.py, in the
                  order `yingshe train` draws): each box resized straight from the memory-mapped
                  shard (OpenCV's bilinear kernel where cv2 is installed, else torch's) and
                  normalised into a recycled float batch, the batch's images taken four at a
                  time by 2 threads; packed_ips. For comparison
                  (c0) the same shards gathered a batch at a time and cropped as a batch
                  (augment.random_resized_crop) in the main process
  (d) jpeg-shards yingshe on WebDataset shards re-encoded as 256 px JPEGs at --quality (FFCV's
                  trade-off), read as (b) reads the folder

Each runs in its own process; yingshe's set glibc's allocator to keep freed memory for reuse
(`runtime.reuse_cpu_memory`), as `yingshe train` does on a CPU, and the seeds' keep the default.
yingshe's batches are channels-last (NHWC in memory, NCHW in shape), the layout `yingshe train`
hands its model on the CPU and on CUDA; the seeds' are contiguous NCHW, the layout their model
took. Both are normalised float32 (B, 3, 224, 224), value for value what the model trains on.

  (e) parts       one core: the decoders on 200 corpus photos, and Normalize on 224-px batches
                  (NCHW; NHWC with the per-channel operand; NHWC by rows, as yingshe does it);
                  a worker's decode + crop per photo (PhotoCrops, OpenCV's resize where it may
                  and torch's alone) and one thread's cut + normalise per shard image
                  (PackedCrops, when the prepared cache is there)

plus the time and disk of each prepared form, as GB per 100,000 images.

    python bench/make_photo_corpus.py            # once: bench/.photo-corpus (git-ignored)
    python bench/photo_throughput.py [--corpus bench/.photo-corpus] [--short-side 256] [--quality 90]
                                     [--rounds 5]

(a), (b) and (c) are measured in turn, --rounds times (5): the line gives their median ips and
jpeg_ratio, packed_ratio as the median of the rounds' own ratios (neighbours in time).

The last line is key=value pairs: seed_ips jpeg_ips packed_ips jpeg_ratio packed_ratio
shard_gb_per_100k packed_gather_ips jpeg_shards_ips jpeg_shards_ratio
jpeg_shard_gb_per_100k, then (e)'s decode_pil_ms decode_tv_ms decode_fast_ms norm_nchw_ms
norm_nhwc_channel_ms norm_nhwc_ms store_cold_ms store_hot_ms crop_jpeg_opencv_ms crop_jpeg_torch_ms
cut_packed_ms
fast_decode_ratio (`--parts`: (e) alone, with that line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP = 224


def timed(epochs, count, min_images: int, min_seconds: float) -> float:
    """Images per second after the first batch (start-up is not throughput), until both minimums."""
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


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- the pipelines, each in its own process ---------------------------------------------------


def run_seed(args) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose(
        [T.RandomResizedCrop(CROP), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    train = datasets.ImageFolder(str(args.corpus), transform=transform)
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, num_workers=2, persistent_workers=True
    )
    ips = timed(lambda: loader, lambda b: len(b[1]), args.images, args.seconds)
    inputs = next(iter(loader))[0]
    assert inputs.shape[1:] == (3, CROP, CROP) and inputs.dtype == torch.float32
    return {"ips": ips}


def run_yingshe(args, spec: str, prepared: str, path: str = "crops") -> dict:
    import torch

    from yingshe.config import DataConfig
    from yingshe.data.augment import Normalize, ResizedCropAugment
    from yingshe.data.crop import PhotoTrainBatches
    from yingshe.data.dataset import build_dataset
    from yingshe.data.loader import DeviceBatches, EpochBatches, EpochShuffle, make_batches
    from yingshe.data.packed_crops import PackedCrops
    from yingshe.runtime import reuse_cpu_memory

    reuse_cpu_memory()  # as `yingshe train` does on a CPU (train.reuse_cpu_memory); workers inherit it
    cfg = DataConfig(
        spec=spec,
        prepared=prepared,
        cache_dir=str(args.work / "cache"),
        image_size=args.short_side,
        val_fraction=0,
        workers=2,
    )
    data = build_dataset(cfg, stats=(list(MEAN), list(STD)))
    kind = "packed" if data.train.packed is not None else "files"
    normalize = Normalize(list(MEAN), list(STD))
    cpu = torch.device("cpu")
    order = EpochBatches(EpochShuffle(len(data.train), 0), args.batch_size, merge_tail=True)
    crop = None
    if path == "gather":  # gather the batch, then crop it (augment.random_resized_crop)
        batches = make_batches(data.train, args.short_side, 3, args.batch_size, train=True, workers=2)
        crop = ResizedCropAugment(CROP)
    elif kind == "files":  # decode + crop in 2 workers (data/photo.py), as `yingshe train` does
        batches = PhotoTrainBatches(data.train, CROP, 3, order, 2, (0.08, 1.0), True, channels_last=True)
    else:  # crop + normalise straight from the memory map, 2 threads, as `yingshe train` does
        options = dict(normalize=normalize, threads=2, channels_last=True)
        batches = PackedCrops(data.train, CROP, args.batch_size, batches=order, **options)
    device_batches = DeviceBatches(batches, data.train, cpu, normalize, crop, channels_last=True)
    epoch = [0]

    def epochs():
        epoch[0] += 1
        device_batches.set_epoch(epoch[0])
        return iter(device_batches)

    ips = timed(epochs, lambda b: len(b[2]), args.images, args.seconds)
    inputs = next(iter(device_batches))[0]
    assert inputs.shape[1:] == (3, CROP, CROP) and inputs.dtype == torch.float32
    resizer = getattr(batches, "resizer", None)
    resize = "opencv" if resizer is not None and resizer.cv2 is not None else "torch"
    return {"ips": ips, "kind": kind, "images": len(data.train), "resize": resize}


def run_prepare(args, fmt: str) -> dict:
    from yingshe.api import prepare_data

    started = time.perf_counter()
    if fmt == "packed":
        summary = prepare_data(
            str(args.corpus), image_size=args.short_side, cache_dir=str(args.work / "cache")
        )
        out, count = Path(summary["out"]), sum(s["images"] for s in summary["splits"].values())
    else:
        out = args.work / f"jpeg-shards-q{args.quality}"
        shutil.rmtree(out, ignore_errors=True)
        summary = prepare_data(
            str(args.corpus), str(out), args.short_side, fmt="webdataset", jpeg_quality=args.quality
        )
        count = sum(s["samples"] for s in summary["splits"].values())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "out": str(out), "gb_per_100k": folder_bytes(out) / count * 1e5 / 1e9}


def best_ms(fn, items, rounds: int = 3) -> float:
    """Best of `rounds` passes over `items`, milliseconds per item."""
    fn(items[0])
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1000


def run_parts(args) -> dict:
    """Per-image costs on one core: the decoders on corpus photos, and `Normalize` on a batch of
    224-px crops stored NCHW, NHWC with a per-channel operand, and NHWC as yingshe does it."""
    import io
    import warnings

    import numpy as np
    import torch
    from PIL import Image

    from yingshe.data.augment import Normalize
    from yingshe.data.decode import decode_jpeg, decode_jpeg_fast

    photos = [p.read_bytes() for p in sorted(args.corpus.rglob("*.jpg"))[:200]]
    warnings.simplefilter("ignore")  # torchvision's codec deprecation, read-only buffers
    out = {
        "decode_pil_ms": best_ms(lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")), photos),
        "decode_tv_ms": best_ms(lambda d: decode_jpeg(torch.frombuffer(d, dtype=torch.uint8)), photos),
        "decode_fast_ms": best_ms(lambda d: decode_jpeg_fast(d, 3, 1), photos),
    }
    norm = Normalize(list(MEAN), list(STD))
    nchw = torch.randint(0, 256, (64, 3, CROP, CROP), dtype=torch.uint8)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)

    def per_channel(x):  # Normalize's NCHW arithmetic applied to NHWC memory as it is
        y = x.to(torch.float32, copy=True)
        return torch.addcmul(norm.neg_shift, y, norm.scale, out=y)

    for key, fn, x in (("norm_nchw_ms", norm, nchw), ("norm_nhwc_channel_ms", per_channel, nhwc)):
        out[key] = best_ms(fn, [x] * 3) / len(x)
    out["norm_nhwc_ms"] = best_ms(norm, [nhwc] * 3) / len(nhwc)
    return {**out, **store_parts(norm), **crop_parts(args, norm)}


def store_parts(norm) -> dict:
    """One core, ms an image: `CropThreads.store` (a 224-px uint8 crop normalised into its float
    slot, as the shard path does) into each slot of three 64-image batches in turn, which the
    cache cannot hold (115 MB), against into one slot over and over, which it does: what the
    write to memory costs."""
    import torch

    from yingshe.data.crop_threads import CropThreads

    cutter = CropThreads(CROP, 3, 1, norm, channels_last=True)
    batches = [torch.zeros(64, 3, CROP, CROP).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    slots = [slot for batch in batches for slot in cutter.slots(batch)]
    crop = torch.randint(0, 256, (CROP, CROP, 3), dtype=torch.uint8)
    return {
        "store_cold_ms": best_ms(lambda slot: cutter.store(crop, slot), slots),
        "store_hot_ms": best_ms(lambda slot: cutter.store(crop, slot), [slots[0]] * len(slots)),
    }


def crop_parts(args, norm) -> dict:
    """One core, ms an image: a worker's decode + crop of 64 corpus photos (`PhotoCrops`, with
    OpenCV's resize where it may and with torch's alone), and one thread cutting and normalising
    the prepared shards (`PackedCrops`), where the cache holds them."""
    from yingshe.config import DataConfig
    from yingshe.data.box_resize import opencv
    from yingshe.data.dataset import build_dataset
    from yingshe.data.loader import EpochBatches, EpochShuffle
    from yingshe.data.packed_crops import PackedCrops
    from yingshe.data.photo import PhotoCrops

    def split(prepared: str):
        cfg = DataConfig(
            spec=str(args.corpus),
            prepared=prepared,
            cache_dir=str(args.work / "cache"),
            image_size=args.short_side,
            val_fraction=0,
            workers=0,
        )
        return build_dataset(cfg, stats=(list(MEAN), list(STD))).train

    files, out = split("off"), {}
    batches = [list(range(start, start + 64)) for start in range(0, min(len(files), 640) - 63, 64)]
    for resize in ("opencv", "torch") if opencv() is not None else ("torch",):
        crops = PhotoCrops(files, CROP, 3, channels_last=True, resize=resize)
        out[f"crop_jpeg_{resize}_ms"] = best_ms(crops.__getitems__, batches) / 64
    packed = split("auto")
    if packed.packed is not None:
        order = EpochBatches(EpochShuffle(len(packed), 0), args.batch_size, merge_tail=True)
        cutter = PackedCrops(
            packed, CROP, args.batch_size, normalize=norm, threads=1, batches=order, channels_last=True
        )

        def epoch(number: int) -> None:
            cutter.set_epoch(number)
            for _ in cutter:
                pass

        out["cut_packed_ms"] = best_ms(epoch, [1, 2, 3]) / len(packed)
    return out


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    jobs = {
        "seed": lambda: run_seed(args),
        "jpeg": lambda: run_yingshe(args, str(args.corpus), "off"),
        "packed": lambda: run_yingshe(args, str(args.corpus), "auto"),
        "packed-gather": lambda: run_yingshe(args, str(args.corpus), "auto", "gather"),
        "jpeg-shards": lambda: run_yingshe(args, args.prepared, "off"),
        "prepare-packed": lambda: run_prepare(args, "packed"),
        "prepare-jpeg": lambda: run_prepare(args, "jpeg"),
        "parts": lambda: run_parts(args),
    }
    print("RESULT " + json.dumps(jobs[args.only]()), flush=True)


def spawn(args, only: str, *extra: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--only",
        only,
        "--corpus",
        str(args.corpus),
        "--work",
        str(args.work),
    ]
    for flag in ("batch_size", "images", "seconds", "threads", "short_side", "quality"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run([*command, *extra], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{only} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "bench" / ".photo-corpus")
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "bench-photo", help="git-ignored scratch"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1000, help="images measured per pipeline (at least)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds measured per pipeline (at least)"
    )
    parser.add_argument("--short-side", type=int, default=256, help="side the prepared images are stored at")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the JPEG shards")
    parser.add_argument(
        "--rounds", type=int, default=5, help="(a), (b), (c) measured in turn this many times"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per pipeline process")
    parser.add_argument("--parts", action="store_true", help="only the per-image costs (e), one core")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work, args.corpus = args.work.resolve(), args.corpus.resolve()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.only:
        child(args)
        return
    if not args.corpus.is_dir():
        sys.exit(f"{args.corpus} is missing: run bench/make_photo_corpus.py first")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.parts:
        parts = spawn(args, "parts")
        print_parts(parts)
        print(" ".join(f"{k}={v}" for k, v in parts_line(parts).items()))
        return
    shutil.rmtree(args.work / "cache", ignore_errors=True)  # a fresh prepare each run
    photos = sum(1 for _ in args.corpus.rglob("*.jpg"))
    corpus_gb = folder_bytes(args.corpus) / photos * 1e5 / 1e9
    print(
        f"{photos} photo JPEGs in {args.corpus} ({corpus_gb:.2f} GB per 100k); crop {CROP}, prepared at "
        f"{args.short_side} px; batch {args.batch_size}; {os.cpu_count()} CPU cores; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    prep = spawn(args, "prepare-packed")
    print(f"    prepare packed: {prep['seconds']:.1f} s, {prep['gb_per_100k']:.1f} GB per 100k images")
    seed, jpeg, packed = measure_in_rounds(args)
    gather = spawn(args, "packed-gather")
    print(f"(c0) packed     yingshe, uint8 shards, gather + batch crop:   {gather['ips']:>8,.0f} img/s")
    prep_j = spawn(args, "prepare-jpeg")
    print(
        f"    prepare JPEG shards q{args.quality}: {prep_j['seconds']:.1f} s, "
        f"{prep_j['gb_per_100k']:.2f} GB per 100k images"
    )
    shards = spawn(args, "jpeg-shards", "--prepared", prep_j["out"])
    print(f"(d) jpeg-shards yingshe, JPEG shards, 2 workers:         {shards['ips']:>8,.0f} img/s")
    parts = spawn(args, "parts")
    print_parts(parts)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    line = {
        "seed_ips": f"{seed['ips']:.0f}",
        "jpeg_ips": f"{jpeg['ips']:.0f}",
        "packed_ips": f"{packed['ips']:.0f}",
        "jpeg_ratio": f"{jpeg['ratio']:.2f}",
        "packed_ratio": f"{packed['ratio']:.1f}",
        "packed_gather_ips": f"{gather['ips']:.0f}",
        "shard_gb_per_100k": f"{prep['gb_per_100k']:.1f}",
        "jpeg_shards_ips": f"{shards['ips']:.0f}",
        "jpeg_shards_ratio": f"{shards['ips'] / seed['ips']:.2f}",
        "jpeg_shard_gb_per_100k": f"{prep_j['gb_per_100k']:.2f}",
        **parts_line(parts),
    }
    print(" ".join(f"{k}={v}" for k, v in line.items()))


def measure_in_rounds(args) -> tuple[dict, dict, dict]:
    """(a), (b) and (c) measured in turn, `--rounds` times. This machine's speed swings within
    seconds (the same loop 0.44-0.80 ms an image minutes apart), so a ratio of two pipelines
    measured at different moments is partly noise; each round's ratios compare neighbours in
    time, and the line reports the median ips and the median of the rounds' ratios."""
    rounds: list[dict[str, float]] = []
    resize = "?"
    for number in range(1, args.rounds + 1):
        results = {name: spawn(args, name) for name in ("seed", "jpeg", "packed")}
        ips = {name: result["ips"] for name, result in results.items()}
        resize = results["packed"]["resize"]
        rounds.append(ips)
        print(
            f"round {number}: (a) seed {ips['seed']:,.0f}  (b) jpeg {ips['jpeg']:,.0f}  "
            f"(c) packed {ips['packed']:,.0f} img/s  (b)/(a) {ips['jpeg'] / ips['seed']:.2f}  "
            f"(c)/(a) {ips['packed'] / ips['seed']:.1f}"
        )
    summary = {}
    for name in ("seed", "jpeg", "packed"):
        summary[name] = {"ips": statistics.median(r[name] for r in rounds)}
        summary[name]["ratio"] = statistics.median(r[name] / r["seed"] for r in rounds)
    seed, jpeg, packed = summary["seed"], summary["jpeg"], summary["packed"]
    print(f"(a) seed        ImageFolder + PIL transforms, 2 workers: {seed['ips']:>8,.0f} img/s (median)")
    print(f"(b) jpeg        yingshe, JPEG folder, 2 workers:         {jpeg['ips']:>8,.0f} img/s (median)")
    print(
        f"(c) packed      yingshe, uint8 shards, cut from the map ({resize} resize), 2 threads: "
        f"{packed['ips']:>8,.0f} img/s (median)"
    )
    return seed, jpeg, packed


def parts_line(parts: dict) -> dict:
    return {
        **{k: f"{v:.3f}" for k, v in parts.items()},
        "fast_decode_ratio": f"{parts['decode_tv_ms'] / parts['decode_fast_ms']:.2f}",
    }


def print_parts(parts: dict) -> None:
    print(
        f"(e) one core, ms an image: decode Pillow {parts['decode_pil_ms']:.2f}, torchvision "
        f"{parts['decode_tv_ms']:.2f}, fast (simplejpeg) {parts['decode_fast_ms']:.2f}; Normalize "
        f"NCHW {parts['norm_nchw_ms']:.3f}, NHWC per channel {parts['norm_nhwc_channel_ms']:.3f}, "
        f"NHWC by rows {parts['norm_nhwc_ms']:.3f}; a crop normalised into its batch slot "
        f"{parts['store_cold_ms']:.3f} out of cache, {parts['store_hot_ms']:.3f} in it"
    )
    crops = ", ".join(
        f"{k.removesuffix('_ms')} {v:.3f}" for k, v in parts.items() if k.startswith(("crop_", "cut_"))
    )
    print(f"    crops (decode + crop in a worker; cut + normalise from the shards): {crops}")


if __name__ == "__main__":
    main()
