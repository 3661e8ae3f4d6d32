"""Grid search against TPE + ASHA: how many training epochs each needs to find a good setting.

On one fixed, stratified slice of Fashion-MNIST and one small CNN (SGD with momentum, constant
learning rate), three searches run in this process, each trial capped at the same epochs:

1. the seeds' grid as they wrote it: lr {1e-4, 1e-5, 1e-6} x batch {32, 64, 128} x momentum {0.9, 0.99};
2. a grid over a sensible log range of the same keys, one point a decade: lr {1e-3, 1e-2, 1e-1, 1}
   x the same batches and momenta (24 points), so the range's optimum lies inside it;
3. TPE + ASHA (`yingshe.tune`, sampler tpe, pruner asha) over that range: lr loguniform 1e-3..1,
   batch categorical, momentum uniform 0.9..0.99, as many trials as the log grid has points,
   repeated over several sampler seeds (same split and initialisations).

Each search reports its best validation accuracy (a fixed stratified validation slice, 1,200
images by default, so 0.3 points is 3.6 images; the training images are separate; the test
split is not used), the epochs and wall time it spent. A grid has to train every point in full
before its best is known, so its cost is all its epochs; a TPE + ASHA study's cost is every
epoch it had spent (trials in order, pruned ones included) when a completed trial first came
within 0.3 points of the better grid's best. A study that never comes that close is censored:
it counts all its epochs (so the figure is then a lower bound on its cost). tpe_epochs is the
median over the sampler seeds (min and max beside it), epochs_ratio = grid epochs / that median,
study_ratio = grid epochs / the median whole study's epochs, wall_ratio the first ratio in trial
wall time.

The bench also prints how well ASHA's rungs can rank at all: over the log grid's trials (which
train in full), the Spearman rank correlation between validation accuracy at each rung epoch and
at the last epoch. A rung near zero would make pruning there arbitrary.

    nice -n 5 python bench/tuning_efficiency.py            # the recorded figure (docs/benchmarks.md)
    python bench/tuning_efficiency.py --train-images 600 --epochs 2 --tpe-trials 4 --tpe-seeds 2  # smoke

Ends with: grid_best=… grid_epochs=… tpe_best=… tpe_epochs=… epochs_ratio=… (and more keys)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # no per-epoch bars from the trials

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
    """`train_images + val_images` stratified images of Fashion-MNIST's train split; the
    validation share is held out per class (10 balanced classes, so exactly `val_images`)."""
    total = args.train_images + args.val_images
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            "data.spec=fashion-mnist",
            f"data.data_dir={args.data_dir}",
            f"data.limit_train={total}",
            f"data.val_fraction={args.val_images / total!r}",
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


def study_epochs(study: optuna.Study) -> int:
    return sum(t.user_attrs.get("epochs", 0) for t in study.trials)


def trial_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's wall time from start to end: data loading, training, validation and its report."""
    return trial.duration.total_seconds() if trial.duration is not None else 0.0


def search(name: str, cfg: RunConfig, space, out: Path, **kwargs) -> optuna.Study:
    started = time.perf_counter()
    result = yingshe.tune(cfg, space, out=out / name, plots=False, progress=False, **kwargs)
    seconds = time.perf_counter() - started
    study = result.study
    best = max(t.value for t in study.trials if t.value is not None)
    states = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(
        f"{name:<12} trials {len(study.trials):>3} "
        f"({states['COMPLETE']} complete, {states['PRUNED']} pruned, {states['FAIL']} failed)  "
        f"best val accuracy {100 * best:6.2f}%  epochs {study_epochs(study):>4}  {seconds:6.1f} s",
        flush=True,
    )
    return study


@dataclass
class Match:
    """Where one TPE + ASHA study first came within MATCH of the grid's best (or did not)."""

    epochs: int  # spent up to and including the matching trial; all of the study's if censored
    seconds: float
    trial: int | None  # the matching trial's number, None if censored
    value: float | None


def first_match(study: optuna.Study, target: float) -> Match:
    """Epochs and wall seconds spent by all trials (in order, pruned ones included) up to and
    including the first completed trial within MATCH of target; a study that never matches counts
    everything it spent (censored)."""
    spent, seconds = 0, 0.0
    for trial in sorted(study.trials, key=lambda t: t.number):
        spent += trial.user_attrs.get("epochs", 0)
        seconds += trial_seconds(trial)
        if trial.value is not None and trial.value >= target - MATCH:
            return Match(spent, seconds, trial.number, trial.value)
    return Match(spent, seconds, None, None)


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (scipy's, which scikit-learn, a dependency, brings along)."""
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def rung_epochs(min_resource: int, reduction: int, cap: int) -> list[int]:
    """The epochs at which Optuna's SuccessiveHalvingPruner decides, below the cap."""
    rungs, epoch = [], min_resource
    while epoch < cap:
        rungs.append(epoch)
        epoch *= reduction
    return rungs


def rung_check(grid: optuna.Study, rungs: list[int], cap: int) -> str:
    """How well validation accuracy at each rung ranks the grid's trials by their last epoch."""
    full = [t for t in grid.trials if cap in t.intermediate_values]
    last = [t.intermediate_values[cap] for t in full]
    parts = []
    for rung in rungs:
        at = [t.intermediate_values[rung] for t in full]
        chance = sum(v <= 0.12 for v in at)
        parts.append(f"epoch {rung}: rho {spearman(at, last):.2f}, {chance}/{len(full)} trials at <=12%")
    return "; ".join(parts) or "no rung below the cap"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("YINGSHE_TEST_DATA", "/work/shared/datasets"))
    parser.add_argument("--train-images", type=int, default=3000, help="training images of the slice")
    parser.add_argument("--val-images", type=int, default=1200, help="validation images (a multiple of 10)")
    parser.add_argument("--epochs", type=int, default=6, help="per-trial epoch cap (all three searches)")
    parser.add_argument("--tpe-trials", type=int, default=24, help="as many as the log grid's points")
    parser.add_argument("--tpe-seeds", type=int, default=5, help="TPE + ASHA studies, one a sampler seed")
    parser.add_argument("--tpe-startup", type=int, default=8, help="TPE's random trials before modelling")
    parser.add_argument("--asha-min-resource", type=int, default=1, help="epoch of ASHA's first rung")
    parser.add_argument("--asha-reduction", type=int, default=3, help="ASHA's reduction factor")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = base_config(args)
    rungs = rung_epochs(args.asha_min_resource, args.asha_reduction, args.epochs)
    asha = {"min_resource": args.asha_min_resource, "reduction_factor": args.asha_reduction}
    print(
        f"Fashion-MNIST slice: {args.train_images} training + {args.val_images} validation images, "
        f"seed-cnn widths 4-8-16, SGD, {args.epochs} epochs per trial at most; "
        f"TPE ({args.tpe_startup} random start-up trials) + ASHA {asha} (rungs at epochs "
        f"{', '.join(map(str, rungs)) or 'none'}), {args.tpe_trials} trials, "
        f"sampler seeds 0..{args.tpe_seeds - 1}",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuning-bench-") as tmp:
        out = Path(tmp)
        seeds = search("seeds-grid", cfg, SEEDS_GRID, out, sampler="grid", pruner="none")
        logs = search("log-grid", cfg, LOG_GRID, out, sampler="grid", pruner="none")
        print(f"rungs on the log grid: {rung_check(logs, rungs, args.epochs)}", flush=True)
        tpes = [
            search(
                f"tpe+asha-{seed}",
                cfg,
                TPE_SPACE,
                out,
                sampler="tpe",
                pruner="asha",
                pruner_options=asha,
                trials=args.tpe_trials,
                tpe_startup=args.tpe_startup,
                sampler_seed=seed,
            )
            for seed in range(args.tpe_seeds)
        ]
    better = max((seeds, logs), key=lambda s: s.best_value)
    grid_best = better.best_value
    grid_epochs = study_epochs(better)
    grid_seconds = sum(trial_seconds(t) for t in better.trials)
    name = "seeds" if better is seeds else "log"
    best_params = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in better.best_params.items())
    print(f"better grid: {name} grid, best {100 * grid_best:.2f}% ({best_params}), {grid_epochs} epochs")
    matches = [first_match(tpe, grid_best) for tpe in tpes]
    for seed, (tpe, m) in enumerate(zip(tpes, matches, strict=True)):
        found = (
            f"matched by trial {m.trial}"
            + (" (a random start-up trial)" if m.trial < args.tpe_startup else "")
            + f" ({100 * m.value:.2f}%) after {m.epochs} epochs, {m.seconds:.0f} s"
            if m.trial is not None
            else f"no match (censored at its {m.epochs} epochs)"
        )
        print(
            f"TPE + ASHA, sampler seed {seed}: best {100 * tpe.best_value:.2f}%, "
            f"study {study_epochs(tpe)} epochs; {found}"
        )
    tpe_epochs = statistics.median(m.epochs for m in matches)
    tpe_seconds = statistics.median(m.seconds for m in matches)
    whole = statistics.median(study_epochs(t) for t in tpes)
    tpe_best = statistics.median(t.best_value for t in tpes)
    n_matched = sum(m.trial is not None for m in matches)
    # with half or more of the studies unmatched the median is a censored count: tpe_epochs is
    # then only a lower bound and epochs_ratio an upper one
    censored = int(n_matched <= len(matches) / 2)
    print(f"bench wall time {time.perf_counter() - started:.0f} s")
    print(
        f"grid_best={grid_best:.4f} grid_epochs={grid_epochs} tpe_best={tpe_best:.4f} "
        f"tpe_epochs={tpe_epochs:g} tpe_epochs_min={min(m.epochs for m in matches)} "
        f"tpe_epochs_max={max(m.epochs for m in matches)} tpe_matched={n_matched}/{len(tpes)} "
        f"median_censored={censored} "
        f"tpe_study_epochs={whole:g} study_ratio={grid_epochs / whole:.2f} "
        f"epochs_ratio={grid_epochs / tpe_epochs:.2f} wall_ratio={grid_seconds / max(tpe_seconds, 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
