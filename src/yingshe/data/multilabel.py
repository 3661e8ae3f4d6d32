"""Multi-label manifests: images that carry any number of labels, read as multi-hot rows.

Two forms, both read through `data.sources.read_source`:
- a CSV whose header names its second column `labels`: `path,labels[,split]`, labels separated
  by `|` (`dog|outdoor`), an empty cell meaning the image carries none of the labels;
- a JSON list `[{"path": ..., "labels": [...], "split": ...}]` (`split` optional).

The single-label manifest's rules hold here too, because each would silently train on test
images or invent a label: an empty path, an unknown split, one file (by resolved path) in two
splits or with two label sets, an empty label between separators, a file listed twice unless
data.manifest_duplicates=collapse. A label holding `,` or `;` is refused as a separator mistake.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from yingshe.data.images import printable_path
from yingshe.data.splits import FileImages, SourceData, Split
from yingshe.errors import YingsheError

SEPARATOR = "|"
MISTAKEN_SEPARATORS = (",", ";")
TASK = "multilabel"

Row = tuple[str, str, list[str], str]  # (where: "file line n", path as written, labels, split)


def split_labels(cell: str, where: str) -> list[str]:
    """`a|b` → ["a", "b"]; an empty cell → []. Empty pieces and other separators are errors."""
    if not cell.strip():
        return []
    labels = [piece.strip() for piece in cell.split(SEPARATOR)]
    return [check_label(label, cell, where) for label in dict.fromkeys(labels)]


def check_label(label: str, cell: str, where: str) -> str:
    if not label:
        raise YingsheError(
            f"{where}: the labels {cell!r} hold an empty label (a leading, trailing or doubled '|')",
            "separate labels with a single '|', e.g. dog|outdoor; leave the cell empty for no labels",
        )
    bad = [s for s in MISTAKEN_SEPARATORS if s in label]
    if bad:
        raise YingsheError(
            f"{where}: the label {label!r} contains {bad[0]!r}",
            "separate labels with '|' (e.g. dog|outdoor), not ',' or ';'",
        )
    return label


def csv_rows(path: Path, rows: list[tuple[int, list[str]]], split_of) -> list[Row]:
    """Multi-label rows of a `path,labels[,split]` CSV (header already dropped)."""
    out = []
    for n, row in rows:
        where = f"{path} line {n}"
        out.append((where, row[0].strip(), split_labels(row[1], where), split_of(path, n, row)))
    return out


def read_json_manifest(path: Path, options) -> SourceData:
    """`[{"path": ..., "labels": [...], "split": ...}, ...]`; paths relative to the JSON file."""
    from yingshe.data.sources import SPLIT_ALIASES

    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise YingsheError(
            f"{path} is not a JSON manifest: {err}",
            'write a JSON list of {"path": "img.jpg", "labels": ["a", "b"]} objects',
        ) from err
    if not isinstance(items, list) or not items:
        raise YingsheError(
            f"{path}: expected a non-empty JSON list of images",
            'write a JSON list of {"path": "img.jpg", "labels": ["a", "b"]} objects',
        )
    rows: list[Row] = []
    for n, item in enumerate(items, 1):
        where = f"{path} item {n}"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise YingsheError(
                f"{where} has no string 'path'", 'give every item {"path": ..., "labels": [...]}'
            )
        labels = item.get("labels", [])
        if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
            raise YingsheError(f"{where}: 'labels' must be a list of strings", 'write "labels": ["a", "b"]')
        raw = str(item.get("split") or "").strip().lower()
        if raw and raw not in SPLIT_ALIASES:
            raise YingsheError(
                f"{where}: unknown split {item['split']!r}",
                f"use one of {', '.join(sorted(SPLIT_ALIASES))} (or leave it out for train)",
            )
        clean = [check_label(x.strip(), json.dumps(labels), where) for x in dict.fromkeys(labels)]
        rows.append((where, item["path"].strip(), clean, SPLIT_ALIASES.get(raw, "train")))
    return build_source(path, rows, options, "JSON manifest")


def build_source(path: Path, rows: list[Row], options, kind: str = "CSV manifest") -> SourceData:
    """Checked rows → a SourceData of multi-hot (N, K) labels, `task` multilabel."""
    first: dict[str, tuple[str, str, frozenset[str]]] = {}
    repeats: list[str] = []
    entries: dict[str, list[tuple[str, list[str]]]] = {}
    for where, written, labels, split in rows:
        if not written:
            raise YingsheError(f"{where} has an empty path", "give every row the image's file path")
        file = Path(written)
        file = str(file if file.is_absolute() else path.parent / file)
        key = os.path.realpath(file)
        if key in first:
            where0, split0, labels0 = first[key]
            if labels0 != frozenset(labels):
                raise YingsheError(
                    f"{where0} and {where}: {printable_path(written)} has two label sets",
                    "list each image once, with all its labels in one row",
                )
            if split0 != split:
                raise YingsheError(
                    f"{where}: {printable_path(written)} is listed in both {split0} and {split}",
                    "list each image in one split only, or test images leak into training",
                )
            repeats.append(f"{where0} and {where} ({printable_path(written)})")
            continue
        first[key] = (where, split, frozenset(labels))
        entries.setdefault(split, []).append((file, labels))
    notes = []
    if repeats:
        if options.manifest_duplicates != "collapse":
            raise YingsheError(
                f"{path} lists {len(repeats)} file(s) more than once: {'; '.join(repeats[:5])}",
                "remove the repeated rows, or set data.manifest_duplicates=collapse to keep each file's "
                "first row (a repeated file would land in train and test at once)",
            )
        notes.append(f"{len(repeats)} repeated manifest rows collapsed (first row kept)")
    classes = sorted({label for items in entries.values() for _, labels in items for label in labels})
    if len(classes) < 2:
        raise YingsheError(
            f"{path} names {len(classes)} label(s): {classes}",
            "a multi-label manifest needs at least two distinct labels",
        )
    index = {c: i for i, c in enumerate(classes)}
    splits = {
        split: Split(multi_hot(items, index), files=FileImages([f for f, _ in items]))
        for split, items in entries.items()
    }
    return SourceData(f"multi-label {kind} {printable_path(path)}", classes, splits, notes=notes, task=TASK)


def multi_hot(items: list[tuple[str, list[str]]], index: dict[str, int]) -> np.ndarray:
    rows = np.zeros((len(items), len(index)), dtype=np.int64)
    for i, (_, labels) in enumerate(items):
        rows[i, [index[label] for label in labels]] = 1
    return rows


def is_multilabel_header(header: list[str] | None) -> bool:
    return header is not None and len(header) >= 2 and header[1].strip().lower() == "labels"
