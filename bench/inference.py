"""Batch-prediction throughput of one model, PyTorch eager vs its ONNX export under ONNX Runtime,
on the same decoded 32×32 CIFAR-10 test images, in one run.

The model is a yingshe run (`--run`), or by default a resnet20 trained for a few steps on the
CIFAR-10 JPEG archive (throughput does not depend on accuracy). It is exported with
`yingshe.export(..., dynamic_batch=True)` (parity checked as usual), then both backends classify
the same uint8 batches through `ImageClassifier.probabilities`, the call `predict` and `serve`
make, after one warm-up batch. Decoding is left out: it is the same function for both.

    python bench/inference.py [--run RUN] [--images 1024] [--batch 64] [--threads 2]

The last line is key=value pairs: eager_ips ort_ips ort_ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("YINGSHE_TEST_DATA", REPO.parent / "shared" / "datasets"))


def tiny_run(out: Path) -> Path:
    """A resnet20 run on CIFAR-10 JPEGs, trained for 4 steps (seconds): weights, not accuracy."""
    flags = "--model resnet20 --limit-train 512 --limit-test 1024 --epochs 1 --max-steps 4 --device cpu"
    argv = [
        sys.executable,
        "-m",
        "yingshe",
        "train",
        "--data",
        str(DATA / "cifar10-jpeg.tar.gz"),
        *flags.split(),
    ]
    subprocess.run([*argv, "--out", str(out), "train.plots=false"], check=True, capture_output=True)
    return out


def rate(fn, batches) -> float:
    fn(batches[0])  # warm-up: allocations, ORT's first-run graph work
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a yingshe run folder (default: train a tiny resnet20)")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for both backends")
    args = parser.parse_args()

    import torch

    import yingshe
    from yingshe.export.onnx import OnnxClassifier
    from yingshe.export.parity import split_images
    from yingshe.inference import Classifier

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else tiny_run(Path(tmp) / "run")
        onnx_path = Path(tmp) / "model.onnx"
        result = yingshe.export(run, "onnx", out=onnx_path, dynamic_batch=True)
        eager = Classifier.load(run, device="cpu")
        ort = OnnxClassifier(onnx_path, threads=args.threads)
        images = split_images(eager, args.images)
        batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
        eager_ips = rate(eager.probabilities, batches)
        ort_ips = rate(ort.probabilities, batches)
    name, parity = eager.checkpoint.meta.model.name, result.parity
    print(f"model {name}, {len(images)} images of {eager.image_size}px, batch {args.batch}")
    print(f"parity {parity['max_abs_logit_diff']:.1e}, top-1 agreement {parity['top1_agreement']:.3f}")
    print(f"eager_ips={eager_ips:.0f} ort_ips={ort_ips:.0f} ort_ratio={ort_ips / eager_ips:.2f}")


if __name__ == "__main__":
    main()
