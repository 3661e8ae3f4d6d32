"""check.md: the data check's findings for a person, each with what to do about it."""

from __future__ import annotations

from typing import Any

SHOWN = 20  # rows of a table before "… and N more"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows[:SHOWN]]
    if len(rows) > SHOWN:
        lines.append(f"\n… and {len(rows) - SHOWN} more in check.json")
    return lines


def _per_split(values: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in values.items()) or "0"


def check_markdown(report: dict[str, Any]) -> str:
    exact, near = report["exact_duplicates"], report["near_duplicates"]
    lines = [f"# {report['title']}", "", report["description"], ""]
    lines += ["## What to do", ""] + [f"- {a}" for a in report["actions"]] + [""]
    lines += [
        f"exclude.txt lists {report['excluded']} images (unreadable files, repeated exact copies, training "
        "copies of test images); `yingshe train --exclude exclude.txt` leaves them out.",
        "",
        "## Summary",
        "",
        "| finding | count |",
        "|---|---|",
        f"| images | {', '.join(f'{s} {n}' for s, n in report['images'].items())} |",
        f"| unreadable files | {report['unreadable']} |",
        f"| suspicious files (all kinds) | {len(report['files'])} |",
        f"| exact repeats inside a split | {_per_split(exact['repeats_within_split'])} |",
        f"| test images with an exact copy in train | {exact['test_images_with_train_copy']} |",
        f"| test images with a near duplicate in train ({near['method']}) | "
        f"{', '.join(f'{s} {n}' for s, n in near['test_images_with_near_train'].items()) or '0'} |",
        f"| images in near-duplicate pairs inside a split | "
        f"{', '.join(f'{s} {n}' for s, n in near['images_within'].items())} |",
        f"| imbalance ratio (largest / smallest train class) | {report['imbalance_ratio']} |",
        "",
    ]
    if report["files"]:
        lines += ["## Unreadable or suspicious files", ""]
        lines += _table(
            ["file", "split", "problems"],
            [[f["key"], f["split"], "; ".join(f["problems"])] for f in report["files"]],
        )
        lines.append("")
    for title, pairs in [
        *[(f"Near duplicates: {s} vs train (leakage)", p) for s, p in near["across"].items()],
        *[(f"Near duplicates inside {s}", p) for s, p in near["within"].items()],
    ]:
        if pairs:
            lines += [f"## {title}", ""]
            lines += _table(
                ["image", "near duplicate", "labels", "pixel Δ"],
                [[p["a"], p["b"], f"{p['a_label']} / {p['b_label']}", p["pixel_difference"]] for p in pairs],
            )
            lines.append("")
    lines += ["## Classes", ""]
    splits = list(report["class_counts"])
    rows = [[c] + [report["class_counts"][s][i] for s in splits] for i, c in enumerate(report["classes"])]
    lines += [*_table(["class", *splits], rows), ""]
    labels = report.get("labels")
    if labels:
        lines += [
            "## Likely label errors",
            "",
            f"{labels['method']}: {len(labels['suspects'])} of {labels['checked']} images suspect "
            f"(out-of-fold accuracy {100 * labels['out_of_fold_accuracy']:.1f}%); all in label-suspects.csv.",
            "",
        ]
        if labels.get("left_out_unreadable"):
            lines += [
                f"{labels['left_out_unreadable']} unreadable training files were left out of the folds "
                "(listed in exclude.txt and folds/unreadable.txt): their labels were not checked.",
                "",
            ]
        lines += _table(
            ["rank", "image", "given", "suggested", "p(given)"],
            [
                [s["rank"], s["key"], s["given"], s["suggested"], f"{s['given_probability']:.3f}"]
                for s in labels["suspects"]
            ],
        )
        lines.append("")
    else:
        lines += [
            "Labels were not checked: add `--folds 3` to rank likely label errors by confident learning.",
            "",
        ]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in report["figures"]]
    return "\n".join(lines) + "\n"
