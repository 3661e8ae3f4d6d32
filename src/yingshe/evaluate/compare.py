"""`yingshe report RUN_DIR...`: runs side by side, from the files each run folder already holds.

A run is read from its `report.json` (the numbers) and `metrics.csv` (the curves); nothing is
recomputed, so comparing is instant and works on runs trained anywhere. The best value of each
column is marked, and a note says when the runs were not evaluated on the same images.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yingshe.errors import YingsheError
from yingshe.evaluate import plots
from yingshe.evaluate.metrics import METRICS, format_value
from yingshe.outputs import check_report_folder, claim_report_folder, releases_claims
from yingshe.runs import atomic_write_json, atomic_write_text, read_metrics_csv
from yingshe.schema import check_report

CURVES = "curves.png"
COMPARISON_FILES = ("report.json", "report.md", CURVES)

COLUMNS = [spec for spec in METRICS if spec.compact]  # the metric table's narrow selection


@dataclass
class RunSummary:
    """What one run contributes to a comparison."""

    name: str
    folder: Path
    report: dict[str, Any]
    history: list[dict[str, float]]


def read_run(path: str | Path) -> RunSummary:
    """A run folder (or an evaluate folder, or a report.json) as a comparison entry."""
    path = Path(path)
    report_path = path if path.suffix == ".json" else path / "report.json"
    if not report_path.is_file():
        raise YingsheError(
            f"{path} holds no report.json",
            f"pass a finished run folder, or write its report with `yingshe evaluate {path}`",
        )
    try:
        report = check_report(json.loads(report_path.read_text()), str(report_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise YingsheError(
            f"{report_path} is not valid JSON: {err}", "re-run `yingshe evaluate` on it"
        ) from err
    folder = report_path.parent
    return RunSummary(folder.name, folder, report, history_of(folder, report))


def history_of(folder: Path, report: dict[str, Any]) -> list[dict[str, float]]:
    """The run's metrics.csv; for an evaluate folder, that of the run whose checkpoint it scored."""
    rows = read_metrics_csv(folder / "metrics.csv")
    checkpoint = (report.get("model") or {}).get("checkpoint")
    if not rows and checkpoint:
        source = Path(checkpoint)
        rows = read_metrics_csv((source if source.is_dir() else source.parent) / "metrics.csv")
    return rows


def unique_names(runs: list[RunSummary]) -> None:
    """Name runs by folder; where two folders share a name, prefix their parents."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.folder.parent.name}/{run.folder.name}"
    for i, run in enumerate(runs):  # the same folder given twice
        if [r.name for r in runs].count(run.name) > 1:
            run.name = f"{run.name} ({i + 1})"


def best_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    best = {}
    for spec in COLUMNS:
        values = [row[spec.key] for row in rows if row.get(spec.key) is not None]
        if values:
            best[spec.key] = max(values) if spec.higher_is_better else min(values)
    return best


def run_row(run: RunSummary) -> dict[str, Any]:
    report = run.report
    training = report.get("training") or {}
    return {
        "name": run.name,
        "folder": str(run.folder),
        "model": (report.get("model") or {}).get("name"),
        "parameters": (report.get("model") or {}).get("parameters"),
        "data": (report.get("data") or {}).get("spec"),
        "split": report.get("split"),
        "images": report.get("num_test"),
        "epochs": training.get("epochs_run"),
        "seconds": training.get("seconds"),
        **{spec.key: report.get(spec.key) for spec in COLUMNS},
    }


@releases_claims
def compare_runs(run_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Write report.json, report.md and curves.png comparing the runs into `out`.

    `out` may be new, or hold anything but a run and files of those names; an earlier
    comparison there is replaced."""
    if not run_dirs:
        raise YingsheError("no runs to compare", "pass one or more run folders")
    folder = Path(out)
    check_report_folder(folder, COMPARISON_FILES, is_comparison, "comparison")
    runs = [read_run(path) for path in run_dirs]
    unique_names(runs)
    claim_report_folder(folder, COMPARISON_FILES, is_comparison, "comparison")
    rows = [run_row(run) for run in runs]
    notes = []
    if len({(row["data"], row["split"], row["images"]) for row in rows}) > 1:
        notes.append(
            "the runs were evaluated on different data, splits or numbers of images: compare with care"
        )
    histories = {run.name: run.history for run in runs if run.history}
    report: dict[str, Any] = {
        "title": f"Comparison of {len(runs)} runs",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": rows,
        "best": best_values(rows),
        "notes": notes,
        "plots": [],
    }
    if histories:
        plots.compare_curves(histories, folder / CURVES)
        report["plots"].append(CURVES)
    atomic_write_json(folder / "report.json", report)
    atomic_write_text(folder / "report.md", comparison_markdown(report))
    report["report_dir"] = str(folder)
    return report


def is_comparison(report: dict[str, Any]) -> bool:
    """A report.json this module wrote (which a new comparison into the same folder replaces)."""
    return isinstance(report.get("runs"), list) and "best" in report and "accuracy" not in report


def _cell(key: str, value: Any, best: dict[str, float]) -> str:
    if value is None:
        return "–"
    text = format_value(key, value)
    return f"**{text}**" if best.get(key) == value else text


def comparison_markdown(report: dict[str, Any]) -> str:
    shown = [
        (spec.key, spec.title)
        for spec in COLUMNS
        if any(row.get(spec.key) is not None for row in report["runs"])
    ]
    head = ["run", "model", "data", "images", "epochs", *[title for _, title in shown]]
    lines = [
        f"# {report['title']}",
        "",
        f"Best value of each column in **bold**. Written {report['created']}.",
        "",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["runs"]:
        cells = [
            f"`{row['name']}`",
            str(row["model"] or "?"),
            f"{row['data'] or '?'} ({row['split'] or '?'})",
            str(row["images"] or "?"),
            str(row["epochs"] if row["epochs"] is not None else "–"),
            *[_cell(key, row.get(key), report["best"]) for key, _ in shown],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Runs", ""] + [f"- `{row['name']}`: {row['folder']}" for row in report["runs"]]
    if report["plots"]:
        lines += ["", "## Curves", "", "Validation solid, training dashed.", ""]
        lines += [f"![{name}]({name})" for name in report["plots"]]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
