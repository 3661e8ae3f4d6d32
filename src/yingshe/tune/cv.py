"""k-fold cross-validation: k ordinary training runs, each holding out one stratified fold.

A fold is not special machinery: it is a run whose config says `data.cv_folds=k data.cv_fold=i`,
so `data/dataset.py` cuts the (limited) training pool into k stratified, seeded folds and holds
out fold i as the validation split. Every fold run is therefore reproducible and resumable from
its own `config.yaml`, like any run. The score of a fold is its last epoch's model on the
held-out fold (`report["validation"]`; folds train with `train.monitor=epoch`, so best.pt is the
last epoch and the held-out fold never chooses the epoch it scores); the test-split figures
are reported beside it, never mixed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yingshe.api import train
from yingshe.config import RunConfig, save_yaml
from yingshe.errors import YingsheError
from yingshe.evaluate import plots
from yingshe.evaluate.metrics import METRICS, format_value, headline
from yingshe.outputs import claim_run_folder, releases_claims
from yingshe.runs import atomic_write_json, atomic_write_text, default_run_dir, read_metrics_csv
from yingshe.train.callbacks import Callback

# (key, title) of the figures aggregated over folds, in report order: the metric table's narrow ones
CV_METRICS = [(spec.key, spec.title) for spec in METRICS if spec.compact]
CURVES = "curves.png"


@dataclass
class FoldResult:
    """One fold's run: its folder, its held-out figures and its test figures."""

    fold: int  # 1..k
    run_dir: Path
    validation: dict[str, float]  # the last epoch's model on the held-out fold
    test: dict[str, float]  # the same checkpoint on the test split
    num_train: int
    num_val: int


@dataclass
class CVResult:
    """Per-fold results and their mean and sample standard deviation (ddof=1)."""

    cv_dir: Path
    folds: list[FoldResult]
    mean: dict[str, float]
    std: dict[str, float]
    test_mean: dict[str, float]
    test_std: dict[str, float]
    report: dict[str, Any]

    def score(self, metric: str = "accuracy") -> float:
        """The cross-validated figure a tuning objective optimises."""
        if metric not in self.mean:
            raise YingsheError(f"no cross-validated {metric!r}", "use one of " + ", ".join(self.mean))
        return self.mean[metric]


def fold_config(config: RunConfig, folds: int, fold: int, cv_dir: Path) -> RunConfig:
    """The run config of fold `fold`: the same settings, that fold held out, its own folder."""
    cfg = RunConfig.from_dict(config.to_dict())
    cfg.data.cv_folds, cfg.data.cv_fold = folds, fold
    cfg.train.out = str(cv_dir / f"fold-{fold}")
    # The held-out fold is the score: it must not also pick the epoch (best.pt), or the estimate
    # is optimistic. Monitoring the epoch number keeps the last epoch, a choice made in advance.
    cfg.train.monitor, cfg.train.patience = "epoch", None
    return cfg


def cv_folder(config: RunConfig, out: str | Path | None) -> Path:
    if out or config.train.out:
        return Path(out or config.train.out)
    default = default_run_dir(config.data.spec, config.model.name)
    return default.with_name(f"cv-{default.name}")


@releases_claims
def cross_validate(
    config: RunConfig,
    folds: int = 5,
    callbacks: list[Callback] | None = None,
    out: str | Path | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> CVResult:
    """Train `folds` runs on stratified folds of the training pool; report each and mean ± std.

    `out` (else `config.train.out`, else runs/cv-<data>-<model>-<time>) receives config.yaml,
    report.json, report.md, curves.png and the fold runs as fold-1 … fold-k. `on_fold(i, k)` is
    called before fold i starts, e.g. for a progress line.
    """
    if folds < 2:
        raise YingsheError(f"cross-validation needs at least 2 folds, got {folds}", "use --folds 2 or more")
    cv_dir = cv_folder(config, out)
    if (cv_dir / "fold-1" / "last.pt").exists() and not config.train.exist_ok:
        raise YingsheError(
            f"{cv_dir} already holds a cross-validation",
            "choose another --out, or set train.exist_ok=true to overwrite it",
        )
    claim_run_folder(cv_dir, exist_ok=config.train.exist_ok, purpose="cv")  # locked until the last fold
    base = RunConfig.from_dict(config.to_dict())
    base.data.cv_folds, base.train.out = folds, str(cv_dir)
    atomic_write_text(cv_dir / "config.yaml", save_yaml(base))
    started = time.perf_counter()
    results = []
    for fold in range(1, folds + 1):
        if on_fold is not None:
            on_fold(fold, folds)
        run = train(fold_config(config, folds, fold, cv_dir), callbacks=callbacks)
        results.append(
            FoldResult(
                fold,
                run.run_dir,
                dict(run.report["validation"]),
                headline(run.report),
                run.report["num_train"],
                run.report["num_val"],
            )
        )
    return summarise(cv_dir, base, results, time.perf_counter() - started)


def mean_std(rows: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) of every figure present in all rows."""
    keys = [key for key, _ in CV_METRICS if all(key in row for row in rows)]
    values = {key: np.array([row[key] for row in rows], dtype=np.float64) for key in keys}
    mean = {key: float(v.mean()) for key, v in values.items()}
    std = {key: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for key, v in values.items()}
    return mean, std


def summarise(cv_dir: Path, config: RunConfig, results: list[FoldResult], seconds: float) -> CVResult:
    """Write the cross-validation's report.json, report.md and curves; return the result."""
    mean, std = mean_std([r.validation for r in results])
    test_mean, test_std = mean_std([r.test for r in results])
    histories = {f"fold {r.fold}": read_metrics_csv(r.run_dir / "metrics.csv") for r in results}
    names = []
    if any(histories.values()):
        plots.compare_curves({k: v for k, v in histories.items() if v}, cv_dir / CURVES)
        names.append(CURVES)
    report = {
        "title": f"{len(results)}-fold cross-validation of {config.model.name} on {config.data.spec}",
        "folds": [
            {
                "fold": r.fold,
                "run_dir": str(r.run_dir),
                "num_train": r.num_train,
                "num_val": r.num_val,
                "validation": r.validation,
                "test": r.test,
            }
            for r in results
        ],
        "mean": mean,
        "std": std,
        "test_mean": test_mean,
        "test_std": test_std,
        "std_kind": "sample standard deviation over folds (ddof=1)",
        "seconds": round(seconds, 2),
        "plots": names,
        "config": config.to_dict(),
    }
    atomic_write_json(cv_dir / "report.json", report)
    atomic_write_text(cv_dir / "report.md", cv_markdown(report))
    return CVResult(cv_dir, results, mean, std, test_mean, test_std, report)


def _fmt(key: str, value: float) -> str:
    return format_value(key, value)


def _pm(key: str, mean: float, std: float) -> str:
    return f"{_fmt(key, mean)} ± {_fmt(key, std)}"


def cv_markdown(report: dict[str, Any]) -> str:
    shown = [(key, title) for key, title in CV_METRICS if key in report["mean"]]
    folds = report["folds"]
    lines = [
        f"# {report['title']}",
        "",
        f"- each fold's model is scored on its held-out fold (the validation split of its run); "
        f"the pool of {folds[0]['num_train'] + folds[0]['num_val']} training images was cut into "
        f"{len(folds)} stratified, seeded folds",
        f"- ± is the {report['std_kind']}",
        f"- {report['seconds']:.1f} s in all",
        "",
        "## Held-out folds",
        "",
        "| fold | train / held out | " + " | ".join(title for _, title in shown) + " |",
        "|" + "---|" * (len(shown) + 2),
    ]
    for fold in folds:
        cells = [_fmt(key, fold["validation"][key]) for key, _ in shown]
        lines.append(
            f"| [{fold['fold']}](fold-{fold['fold']}/report.md) | {fold['num_train']} / {fold['num_val']} | "
            + " | ".join(cells)
            + " |"
        )
    mean_cells = [_pm(key, report["mean"][key], report["std"][key]) for key, _ in shown]
    lines.append("| **mean ± std** | | " + " | ".join(f"**{c}**" for c in mean_cells) + " |")
    test_shown = [(key, title) for key, title in shown if key in report["test_mean"]]
    if test_shown:
        lines += [
            "",
            "## Test split (each fold's model, for reference; not used to choose anything)",
            "",
            "| " + " | ".join(title for _, title in test_shown) + " |",
            "|" + "---|" * len(test_shown),
            "| "
            + " | ".join(_pm(k, report["test_mean"][k], report["test_std"][k]) for k, _ in test_shown)
            + " |",
        ]
    if report["plots"]:
        lines += ["", "## Curves", "", "Validation (held-out fold) solid, training dashed.", ""]
        lines += [f"![{name}]({name})" for name in report["plots"]]
    return "\n".join(lines) + "\n"
