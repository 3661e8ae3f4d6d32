"""How much of this machine's matrix-multiply peak a training step achieves, per model and setting.

Measured in one run: (1) the peak, as the best GFLOP/s of large fp32 (and bf16) matmuls on the
threads torch uses; (2) for each default model, images/s of the real `Trainer.train_step`
(forward, loss, backward, optimiser step) on random uint8 batches put through the batch
augmentation, with and without channels-last and bf16 autocast; (3) the FLOPs of one step,
counted by torch's FlopCounterMode (convolutions and matmuls only, forward + backward), so
step GFLOP/s = FLOPs × steps/s. The last line is for the `fast` recipe's model and settings.

    nice -n 15 .venv/bin/python bench/step_efficiency.py [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from yingshe.config import RunConfig
from yingshe.data.augment import BatchAugment, Normalize
from yingshe.models import create_model
from yingshe.recipes import apply_recipe
from yingshe.runs import RunDir
from yingshe.runtime import resolve_device
from yingshe.schema import CheckpointMeta, ModelRecord
from yingshe.train.trainer import Trainer, autocast_dtype


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 5.0) -> float:
    """Best GFLOP/s of (size × size) @ (size × size) over repeated timed bursts (fp32 and bf16;
    this CPU has AVX-512 BF16 but no AMX, and oneDNN's bf16 GEMM measured slower than fp32)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_trainer(cfg: RunConfig, channels: int, size: int, device: torch.device, channels_last: bool):
    model = create_model(cfg.model.name, 10, channels, size, **cfg.model.kwargs)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    if cfg.train.compile:
        model = torch.compile(model)
    run = RunDir(Path(tempfile.mkdtemp(prefix="yingshe-bench-")))
    meta = CheckpointMeta(
        ModelRecord(cfg.model.name, 10, channels, size),
        [str(i) for i in range(10)],
        channels,
        size,
        [0.5] * channels,
        [0.25] * channels,
    )
    return Trainer(
        model,
        cfg,
        RandomBatches(channels, size, device),
        RandomBatches(channels, size, device),
        device,
        run,
        meta,
    )


class RandomBatches(list):
    """One random batch, with the `split.labels` the Trainer reads for its loss (class weights)."""

    def __init__(self, channels: int, size: int, device: torch.device) -> None:
        super().__init__([(torch.randn(64, channels, size, size, device=device), None, None)])
        self.split = SimpleNamespace(labels=np.arange(64) % 10)


def step_rate(cfg: RunConfig, channels: int, size: int, device: torch.device, channels_last: bool, seconds):
    """(images/s, FLOPs per step) of the real training step at cfg's batch size and precision."""
    trainer = make_trainer(cfg, channels, size, device, channels_last)
    batch = cfg.train.batch_size
    images = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    normalize = Normalize([0.5] * channels, [0.25] * channels).to(device)
    augment = BatchAugment(cfg.augment, size, True, 10)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step():
        inputs, targets = augment(images, labels, normalize)
        return trainer.train_step(inputs.contiguous(memory_format=fmt), targets)

    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches, compile
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    # the best of ~1 s windows: other processes on a shared machine only ever slow a window down
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        sync(device)
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.0 or steps < 2:
            step()
            steps += 1
        sync(device)
        best = max(best, steps / (time.perf_counter() - started))
    return best * batch, flops * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per configuration")
    parser.add_argument("--quick", action="store_true", help="only the fast recipe's model")
    args = parser.parse_args()
    device = resolve_device(args.device)
    load = os.getloadavg()[0]  # other processes on the machine skew every figure below
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, load {load:.1f}")
    peak32 = matmul_peak(device, torch.float32)
    peak16 = matmul_peak(device, torch.bfloat16)
    print(f"matmul peak: fp32 {peak32:.1f} GFLOP/s, bf16 {peak16:.1f} GFLOP/s")

    fast = RunConfig()
    fast.data.spec = "fashion-mnist"
    apply_recipe(fast, "fast", "grey-28")
    fast.train.device = str(device)
    rows = [("fast (grey-28)", fast, 1, 28)]
    if not args.quick:
        cifar = RunConfig()
        apply_recipe(cifar, "fast", "colour-32")
        rows.append(("fast (colour-32)", cifar, 3, 32))
        for name, channels, size in [("seed-cnn", 1, 28), ("resnet20", 3, 32), ("resnet18", 3, 32)]:
            cfg = RunConfig()
            cfg.model.name = name
            cfg.augment.crop_padding = 0
            rows.append((f"{name} ({channels}×{size}²)", cfg, channels, size))

    header = f"{'model':<22} {'layout':<14} {'amp':<5} {'img/s':>8} {'GFLOP/step':>11}"
    print(f"{header} {'GFLOP/s':>8} {'of peak':>8}")
    results = {}
    for label, cfg, channels, size in rows:
        for channels_last in (False, True):
            for amp in ("off", "bf16"):
                cfg.train.amp = amp
                dtype = autocast_dtype(amp, device)
                rate, flops_s = step_rate(cfg, channels, size, device, channels_last, args.seconds)
                peak = peak16 if dtype == torch.bfloat16 else peak32
                gflop_step = flops_s / rate * cfg.train.batch_size / 1e9
                layout = "channels_last" if channels_last else "contiguous"
                print(
                    f"{label:<22} {layout:<14} {amp:<5} {rate:>8.0f} {gflop_step:>11.2f} "
                    f"{flops_s / 1e9:>8.1f} {100 * flops_s / 1e9 / peak:>7.1f}%",
                    flush=True,
                )
                results[(label, channels_last, amp)] = (rate, flops_s / 1e9)
    # the fast recipe as it runs on this device: its own layout and precision settings
    cl = fast.train.channels_last if fast.train.channels_last is not None else device.type == "cuda"
    fast.train.amp = "auto"
    rate, step_gflops = step_rate(fast, 1, 28, device, cl, args.seconds)
    peak32 = max(peak32, matmul_peak(device, torch.float32))  # again: the best window of both runs
    print(f"fast recipe as configured on {device}: {rate:.0f} img/s, channels_last={cl}, amp=auto")
    print(
        f"peak_gflops={peak32:.1f} step_gflops={step_gflops / 1e9:.1f} "
        f"peak_fraction={step_gflops / 1e9 / peak32:.3f} images_per_s={rate:.0f}"
    )


if __name__ == "__main__":
    main()
