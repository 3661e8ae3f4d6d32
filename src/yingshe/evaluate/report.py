"""`report.json` (for machines) and `report.md` (for people) from a metrics dict.

A report is self-describing: it carries the data description, model, training summary, config
and library versions next to the numbers.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from yingshe.evaluate.metrics import METRICS
from yingshe.runs import atomic_write_json, atomic_write_text
from yingshe.schema import REPORT_FORMAT, REPORT_VERSION, Report


def versions() -> dict[str, str]:
    import torch
    import torchvision

    from yingshe._version import __version__

    return {
        "yingshe": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def confused_pairs(matrix: list[list[int]], classes: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count, share of true)."""
    cells = []
    for t, row in enumerate(matrix):
        total = sum(row)
        for p, count in enumerate(row):
            if t != p and count:
                cells.append(
                    {
                        "true": classes[t],
                        "predicted": classes[p],
                        "count": count,
                        "share": count / total if total else 0.0,
                    }
                )
    return sorted(cells, key=lambda c: -c["count"])[:top]


def write_report(folder: Path, report: Report, stem: str = "report") -> tuple[Path, Path]:
    report = {"format": REPORT_FORMAT, "version": REPORT_VERSION, **report, "versions": versions()}
    if "confusion_matrix" in report:
        report["confused_pairs"] = confused_pairs(report["confusion_matrix"], report["classes"])
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, markdown(report))
    return json_path, md_path


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def markdown(report: dict[str, Any]) -> str:
    title = report.get("title", "yingshe report")
    lines = [f"# {title}", ""]
    data = report.get("data", {})
    lines += [
        f"- data: {data.get('description', '?')} — split `{report.get('split', 'test')}`, "
        f"{report.get('num_test', '?')} images evaluated",
        f"- model: `{report.get('model', {}).get('name', '?')}` "
        f"({report.get('model', {}).get('parameters', 0):,} parameters)",
        f"- train/val/test sizes: {report.get('num_train', '?')} / {report.get('num_val', '?')} / "
        f"{report.get('num_test', '?')}; unreadable files skipped: {report.get('skipped_files', 0)}",
    ]
    training = report.get("training")
    if training:
        lines.append(
            f"- training: {training['epochs_run']} epochs, {training['steps']} steps in "
            f"{training['seconds']:.1f} s on {training['device']}; best epoch {training['best_epoch']} "
            f"by {training['monitor']}"
            + (f"; {training['stop_reason']}" if training.get("stop_reason") else "")
        )
        lines += [f"- note: {note}" for note in training.get("notes") or []]
    budget = report.get("time_budget")
    if budget:
        lines.append(
            f"- time budget: {budget['budget_seconds']:.1f} s, spent {budget['spent_seconds']:.1f} s "
            f"to the report ({'within' if budget['within_budget'] else 'OVER'} budget); "
            f"{budget['planned_steps']} steps planned at {budget['step_seconds']} s a step"
        )
    validation = report.get("validation")
    if validation:
        lines.append(
            f"- validation split, best checkpoint: accuracy {_pct(validation['accuracy'])}, "
            f"macro F1 {_pct(validation['f1_macro'])}, mean loss {validation['loss']:.4f}"
        )
    lines += ["", "## Summary", "", "| metric | value |", "|---|---|"]
    for spec in METRICS:
        if isinstance(report.get(spec.key), float):
            lines.append(f"| {spec.title} | {spec.show(report[spec.key])} |")
    if report.get("per_class"):
        lines += [
            "",
            "## Per class",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for row in report["per_class"]:
            lines.append(
                f"| {row['class']} | {_pct(row['precision'])} | {_pct(row['recall'])} | "
                f"{_pct(row['f1'])} | {row['support']} |"
            )
        if report.get("task") == "multilabel":  # per label: AP, the tuned threshold and the counts too
            lines[-len(report["per_class"]) - 2 :] = [
                "| label | precision | recall | F1 | AP | threshold | images | TP / FP / FN / TN |",
                "|---|---|---|---|---|---|---|---|",
            ] + [
                f"| {row['class']} | {_pct(row['precision'])} | {_pct(row['recall'])} | {_pct(row['f1'])} | "
                f"{_pct(row['average_precision'])} | {row['threshold']:.3f} | {row['support']} | "
                f"{row['tp']} / {row['fp']} / {row['fn']} / {row['tn']} |"
                for row in report["per_class"]
            ]
    if report.get("confused_pairs"):
        lines += [
            "",
            "## Most confused pairs",
            "",
            "| true | predicted as | images | share of true |",
            "|---|---|---|---|",
        ]
        for cell in report["confused_pairs"]:
            lines.append(
                f"| {cell['true']} | {cell['predicted']} | {cell['count']} | {_pct(cell['share'])} |"
            )
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in report["plots"]]
    notes = list(data.get("notes", []))
    if report.get("skipped"):
        notes += [f"skipped: {item}" for item in report["skipped"][:20]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
