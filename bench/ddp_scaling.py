"""Images per second of `yingshe train` on 1 process and on 2 DDP processes (torchrun, Gloo, CPU).

Both runs train the same config (the global batch is the same, so each of the 2 ranks takes half)
for a fixed number of steps; the figure is the training epoch's images/s from metrics.csv (steps
only, no start-up or evaluation). One intra-op thread per process, so 2 processes use 2 cores
where 1 process uses one. On a 2-core machine shared with other work the ratio is bounded by
what the cores give, and by Gloo's all-reduce over loopback TCP.

    PYTHONPATH=src python bench/ddp_scaling.py [--steps 40] [--batch 128]

Data: 28×28 Fashion-MNIST from $YINGSHE_TEST_DATA (default ../shared/datasets), the default seed-cnn.

Last line: one_proc_ips=... two_proc_ips=... scaling_ratio=...
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("YINGSHE_TEST_DATA", str(REPO.parent / "shared" / "datasets"))


def train(out: Path, procs: int, steps: int, batch: int) -> float:
    overrides = [
        "data.spec=fashion-mnist",
        f"data.data_dir={DATA}",
        f"data.limit_train={steps * batch + batch}",
        "data.limit_test=200",
        "train.device=cpu",
        "train.plots=false",
        "data.val_fraction=0.05",
        f"train.batch_size={batch}",
        "train.epochs=1",
        f"train.max_steps={steps}",
        f"train.out={out}",
    ]
    if procs == 1:
        command = [sys.executable, "-m", "yingshe", "train", *overrides]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", str(procs)]
        command += ["-m", "yingshe", "train", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    return float(row["train_images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = train(Path(tmp) / "one", 1, args.steps, args.batch)
        two = train(Path(tmp) / "two", 2, args.steps, args.batch)
    print(f"cores={os.cpu_count()} steps={args.steps} global_batch={args.batch}")
    print(f"one_proc_ips={one:.1f} two_proc_ips={two:.1f} scaling_ratio={two / one:.3f}")


if __name__ == "__main__":
    main()
