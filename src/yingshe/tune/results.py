"""What a study leaves in its folder: best.yaml, trials.csv, study.md and Optuna's plots.

Written from the storage, so any worker (or a later `yingshe tune --trials 0`) writes the same
files for the whole study, whichever workers ran its trials.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from yingshe.config import RunConfig
from yingshe.runs import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PLOTS = {
    "history.png": "plot_optimization_history",
    "importances.png": "plot_param_importances",
    "parallel_coordinates.png": "plot_parallel_coordinate",
    "intermediate_values.png": "plot_intermediate_values",
}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                # a later trial that drew a grid point another worker held (tuner.GridGuard)
                "state": "duplicate" if "duplicate_of" in t.user_attrs else t.state.name.lower(),
                "duplicate_of": t.user_attrs.get("duplicate_of"),
                "value": t.value,
                **{f"param:{k}": v for k, v in t.params.items()},
                "epochs": t.user_attrs.get("epochs"),
                "seconds": t.user_attrs.get("seconds"),
                "last_epoch_reported": t.last_step,
                "retried_from": t.system_attrs.get("failed_trial"),
                "run_dir": t.user_attrs.get("run_dir"),
            }
        )
    return rows


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["number"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return study.best_trial if done else None


def best_config(trial: FrozenTrial, base: RunConfig) -> RunConfig:
    """The best trial's full config, with a fresh run folder and the base's figure setting, so
    `yingshe train --config best.yaml` trains the same model again."""
    cfg = RunConfig.from_dict(trial.user_attrs["config"], source=f"trial {trial.number}")
    cfg.train.out = None
    cfg.train.plots = base.train.plots
    return cfg


def draw_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Optuna's matplotlib figures; a figure that needs more trials than there are is skipped
    with the reason (returned as name → note)."""
    # Optuna draws through pyplot; the backend is left as the caller has it (a Jupyter inline
    # backend stays), and every figure is closed so none is shown
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    notes = {}
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(ovm, function)(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            plt.close(figure)
            atomic_write_bytes(folder / name, buffer.getvalue())
        except Exception as err:  # too few trials, a single parameter, no intermediate values
            notes[name] = f"{type(err).__name__}: {err}"[:200]
            log.info("skipped %s: %s", name, notes[name])
            plt.close("all")
    return notes


def write_results(study: optuna.Study, folder: Path, base: RunConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Write every result file of the study into `folder`; return the summary."""
    rows = trial_rows(study)
    write_trials_csv(folder / "trials.csv", rows)
    best = best_trial(study)
    if best is not None:
        atomic_write_text(
            folder / "best.yaml", yaml.safe_dump(best_config(best, base).to_dict(), sort_keys=False)
        )
    notes = draw_plots(study, folder) if info.get("plots", True) else dict.fromkeys(PLOTS, "plots off")
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    summary = {
        **info,
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "trials": len(rows),
        "states": states,
        "epochs": sum(row["epochs"] or 0 for row in rows),
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        },
        "plots": [name for name in PLOTS if name not in notes],
        "skipped_plots": notes,
    }
    atomic_write_text(folder / "study.md", study_markdown(summary, rows))
    return summary


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def study_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    best = summary["best"]
    lines = [
        f"# Tuning study {summary['study']}",
        "",
        f"- objective: {summary['direction']} validation {summary['metric']}"
        + (f" (mean over {summary['cv']} folds)" if summary.get("cv") else ""),
        f"- sampler {summary['sampler']}, pruner {summary['pruner']}"
        + (f" {summary['pruner_options']}" if summary.get("pruner_options") else "")
        + f", storage {summary['storage']}",
        f"- {summary['trials']} trials: "
        + ", ".join(f"{n} {state}" for state, n in sorted(summary["states"].items()))
        + f"; {summary['epochs']} epochs trained in all",
    ]
    if best is not None:
        lines += [
            f"- best: trial {best['number']}, {summary['metric']} {best['value']:.4f}, "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items()),
            "- retrain it: `yingshe train --config best.yaml`",
        ]
    params = sorted({k for row in rows for k in row if k.startswith("param:")})
    ranked = sorted(
        rows,
        key=lambda r: (
            r["value"] is None,
            (r["value"] or 0) * (-1 if summary["direction"] == "maximize" else 1),
        ),
    )
    lines += [
        "",
        "## Trials (best first)",
        "",
        "| trial | state | value | " + " | ".join(p.removeprefix("param:") for p in params) + " | epochs |",
        "|" + "---|" * (len(params) + 4),
    ]
    for row in ranked:
        link = str(row["number"])  # a duplicate grid trial has no run folder
        if row["run_dir"]:
            link = f"[{row['number']}](trial-{row['number']:04d}/report.md)"
        cells = [_fmt(row.get(p)) for p in params]
        lines.append(
            f"| {link} | {row['state']} | {_fmt(row['value'])} | "
            + " | ".join(cells)
            + f" | {_fmt(row['epochs'])} |"
        )
    if summary["plots"]:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in summary["plots"]]
    for name, note in summary["skipped_plots"].items():
        lines.append(f"- {name} not drawn: {note}")
    return "\n".join(lines) + "\n"
