"""Grid search against TPE + ASHA: how many training epochs each needs to find a good setting.

On one fixed, stratified slice of Fashion-MNIST and one small CNN (SGD with momentum, constant
learning rate), three searches run in this process, each trial capped at the same epochs:

1. the seeds' grid as they wrote it: lr {1e-4, 1e-5, 1e-6} x batch {32, 64, 128} x momentum {0.9, 0.99};
2. a grid over a sensible log range of the same keys, one point a decade: lr {1e-3, 1e-2, 1e-1, 1}
   x the same batches and momenta (24 points), so the range's optimum lies inside it;
3. TPE + ASHA (`yingshe.tune`, sampler tpe, pruner asha) over that range: lr loguniform 1e-3..1,
   batch categorical, momentum uniform 0.9..0.99, as many trials as the log grid has points.

Each search reports its best validation accuracy (1,200 held-out images of the slice, so 0.3 points
is 3.6 images; the 600 others train; the test split is not used), the epochs and wall time it
spent. A grid has to train every point in full before its best is known, so its cost is all its
epochs; TPE + ASHA's cost is every epoch it had spent (trials in order, pruned ones included) when
a completed trial first came within 0.3 points of the better grid's best. TPE + ASHA runs once per
sampler seed (same split and initialisations); tpe_epochs and tpe_best are medians over the seeds,
epochs_ratio = grid epochs / that median, wall_ratio the same ratio of trial wall times.

    nice -n 10 python bench/tuning_efficiency.py            # the recorded figure (docs/benchmarks.md)
    python bench/tuning_efficiency.py --limit-train 300 --epochs 2 --tpe-trials 4   # a smoke run

Ends with: grid_best=… grid_epochs=… tpe_best=… tpe_epochs=… epochs_ratio=…
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna
import torch

import yingshe
from yingshe.config import RunConfig, apply_overrides

MATCH = 0.003  # within 0.3 points of accuracy
SEEDS_GRID = {"lr": [1e-4, 1e-5, 1e-6], "batch_size": [32, 64, 128], "momentum": [0.9, 0.99]}
LOG_GRID = {"lr": [1e-3, 1e-2, 1e-1, 1.0], "batch_size": [32, 64, 128], "momentum": [0.9, 0.99]}
TPE_SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "momentum": {"type": "uniform", "low": 0.9, "high": 0.99},
}


def base_config(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            "data.spec=fashion-mnist",
            f"data.data_dir={args.data_dir}",
            f"data.limit_train={args.limit_train}",
            f"data.val_fraction={args.val_fraction}",
            "data.limit_test=100",  # the test split is not looked at; keep its evaluation cheap
            f"train.epochs={args.epochs}",
            "train.device=cpu",
            "train.seed=0",
            "model.kwargs={widths: [4, 8, 16]}",
            "optim.name=sgd",
            "optim.schedule=constant",
            "augment.crop_padding=0",
            "augment.hflip=false",
        ],
    )
    return cfg


def search(name: str, cfg: RunConfig, space, out: Path, **kwargs) -> tuple[optuna.Study, float]:
    started = time.perf_counter()
    result = yingshe.tune(cfg, space, out=out / name, plots=False, progress=False, **kwargs)
    seconds = time.perf_counter() - started
    study = result.study
    done = [t for t in study.trials if t.value is not None]
    best = max(t.value for t in done)
    epochs = sum(t.user_attrs.get("epochs", 0) for t in study.trials)
    states = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(
        f"{name:<10} trials {len(study.trials):>3} "
        f"({states['COMPLETE']} complete, {states['PRUNED']} pruned)  "
        f"best val accuracy {100 * best:6.2f}%  epochs {epochs:>4}  {seconds:6.1f} s",
        flush=True,
    )
    return study, seconds


def trial_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's wall time from start to end: data loading, training, validation and its report."""
    return trial.duration.total_seconds() if trial.duration is not None else 0.0


def first_match(study: optuna.Study, target: float) -> tuple[int, float, float | None]:
    """Epochs and wall seconds spent by all trials (in order, pruned ones included) up to and
    including the first completed trial within MATCH of target, and that trial's value."""
    spent, seconds = 0, 0.0
    for trial in sorted(study.trials, key=lambda t: t.number):
        spent += trial.user_attrs.get("epochs", 0)
        seconds += trial_seconds(trial)
        if trial.value is not None and trial.value >= target - MATCH:
            return spent, seconds, trial.value
    return spent, seconds, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("YINGSHE_TEST_DATA", "/work/shared/datasets"))
    parser.add_argument("--limit-train", type=int, default=1800, help="the slice, train and validation")
    parser.add_argument("--val-fraction", type=float, default=0.667, help="of the slice held out (1,200)")
    parser.add_argument("--epochs", type=int, default=6, help="per-trial epoch cap (all three searches)")
    parser.add_argument("--tpe-trials", type=int, default=24, help="as many as the log grid's points")
    parser.add_argument("--tpe-seeds", type=int, default=3, help="TPE + ASHA studies, one a sampler seed")
    parser.add_argument("--tpe-startup", type=int, default=8, help="TPE's random trials before modelling")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = base_config(args)
    print(
        f"Fashion-MNIST slice of {args.limit_train} images ({args.val_fraction:.0%} held out), "
        "seed-cnn widths 4-8-16, "
        f"SGD, {args.epochs} epochs per trial at most"
    )
    with tempfile.TemporaryDirectory(prefix="tuning-bench-") as tmp:
        out = Path(tmp)
        seeds, _ = search("seeds-grid", cfg, SEEDS_GRID, out, sampler="grid", pruner="none")
        logs, _ = search("log-grid", cfg, LOG_GRID, out, sampler="grid", pruner="none")
        tpes = [
            search(
                f"tpe+asha-{seed}",
                cfg,
                TPE_SPACE,
                out,
                sampler="tpe",
                pruner="asha",
                trials=args.tpe_trials,
                tpe_startup=args.tpe_startup,
                sampler_seed=seed,
            )[0]
            for seed in range(args.tpe_seeds)
        ]
    better = max((seeds, logs), key=lambda s: s.best_value)
    grid_best = better.best_value
    grid_epochs = sum(t.user_attrs.get("epochs", 0) for t in better.trials)
    grid_seconds = sum(trial_seconds(t) for t in better.trials)
    name = "seeds" if better is seeds else "log"
    print(f"better grid: {name} grid, {grid_epochs} epochs, {grid_seconds:.0f} s")
    matches = []
    for seed, tpe in enumerate(tpes):
        epochs, seconds, matched = first_match(tpe, grid_best)
        matches.append((epochs, seconds, matched))
        print(
            f"TPE + ASHA, sampler seed {seed}: "
            + (
                f"within {100 * MATCH:.1f} points after {epochs} epochs, {seconds:.0f} s "
                f"({100 * matched:.2f}%)"
                if matched is not None
                else f"no match within {100 * MATCH:.1f} points in {epochs} epochs"
            )
        )
    # the median over sampler seeds; an unmatched seed counts its whole spend (a lower bound)
    tpe_epochs = statistics.median(m[0] for m in matches)
    tpe_seconds = statistics.median(m[1] for m in matches)
    n_matched = sum(m[2] is not None for m in matches)
    tpe_best = statistics.median(t.best_value for t in tpes)
    print(
        f"grid_best={grid_best:.4f} grid_epochs={grid_epochs} tpe_best={tpe_best:.4f} "
        f"tpe_epochs={tpe_epochs:g} tpe_matched={n_matched}/{len(tpes)} "
        f"epochs_ratio={grid_epochs / tpe_epochs:.2f} wall_ratio={grid_seconds / max(tpe_seconds, 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
