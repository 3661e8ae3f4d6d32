"""`yingshe data check`: one pass over a dataset, one report of what is wrong with it.

Writes into the output folder: check.json (every finding), check.md (the summary with what to
do), exclude.txt (images `--exclude` should leave out: unreadable files, repeated exact copies,
training copies of test images), label-suspects.csv (when labels were checked; the fold runs in
folds/, which leave out the unreadable training files listed in folds/unreadable.txt), and PNG
grids of every kind of finding plus distributions.png.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from yingshe.config import DataConfig, RunConfig
from yingshe.data.dataset import read_spec
from yingshe.health import figures
from yingshe.health.duplicates import PIXEL_TOLERANCE, RADIUS, Pair, exact_groups, near_pairs
from yingshe.health.hashing import phash_bits
from yingshe.health.report import check_markdown
from yingshe.health.scan import UNREADABLE, Scan, scan_source
from yingshe.outputs import claim_report_folder, releases_claims
from yingshe.runs import atomic_write_json, atomic_write_text

CHECK_FILES = ("check.json", "check.md", "exclude.txt", "label-suspects.csv", "distributions.png", "folds")
GRID_ROWS = 24  # findings drawn per grid
Progress = Callable[[str, int, int], None]


def leak_pairs(groups: list[list[int]], scan: Scan) -> list[tuple[int, int]]:
    """(train row, evaluation row) for exact groups that span train and another split."""
    pairs = []
    for rows in groups:
        train = [r for r in rows if scan.splits[r] == "train"]
        for r in rows:
            if scan.splits[r] != "train" and train:
                pairs.append((train[0], r))
    return pairs


def search_near(scan: Scan, radius: int, tolerance: float, embeddings, similarity: float):
    """Near pairs within every split, and from each evaluation split to train."""
    usable = scan.readable
    split_of = np.array(scan.splits)
    bits = phash_bits(scan.thumbs) if embeddings is None else None
    options = dict(radius=radius, pixel_tolerance=tolerance, embeddings=embeddings, similarity=similarity)
    within, across = {}, {}
    for split in dict.fromkeys(scan.splits):
        rows = np.flatnonzero((split_of == split) & usable)
        within[split] = near_pairs(scan.thumbs, scan.hashes, rows, rows, True, bits=bits, **options)
        if split != "train":
            train = np.flatnonzero((split_of == "train") & usable)
            across[split] = near_pairs(scan.thumbs, scan.hashes, rows, train, False, bits=bits, **options)
    return within, across


def pair_row(scan: Scan, pair: Pair, classes: list[str]) -> dict[str, Any]:
    return {
        "a": scan.keys[pair.a],
        "b": scan.keys[pair.b],
        "a_label": classes[scan.labels[pair.a]],
        "b_label": classes[scan.labels[pair.b]],
        "distance": round(pair.distance, 4),
        "pixel_difference": round(pair.pixel_difference, 2),
    }


def class_counts(scan: Scan, classes: list[str]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for split in dict.fromkeys(scan.splits):
        labels = [lab for s, lab in zip(scan.splits, scan.labels, strict=True) if s == split]
        counts[split] = np.bincount(labels, minlength=len(classes)).tolist()
    return counts


def imbalance_ratio(counts: list[int]) -> float | None:
    present = [c for c in counts if c > 0]
    return round(max(present) / min(present), 3) if present else None


def check_labels(spec: str, data_dir: str | None, model_run: str | None, options: dict, out: Path):
    """Out-of-fold probabilities (`tune/oof.py`) then confident learning (`health/labels.py`)."""
    from yingshe.health.labels import label_suspects
    from yingshe.runs import load_checkpoint
    from yingshe.tune.oof import out_of_fold_probabilities

    cfg = RunConfig()
    if model_run:  # the run's model and settings, on this data
        cfg = RunConfig.from_dict(load_checkpoint(model_run).config)
        cfg.data = DataConfig()
    cfg.data.spec, cfg.data.data_dir = spec, data_dir
    cfg.data.limit_train, cfg.data.limit_test = options.get("limit_train"), None
    cfg.data.exclude = options.get("exclude")
    cfg.train.epochs = options.get("epochs", 3)
    cfg.train.device = options.get("device", "auto")
    cfg.train.exist_ok, cfg.train.tensorboard = True, False
    oof = out_of_fold_probabilities(cfg, options["folds"], out / "folds", options.get("on_fold"))
    return label_suspects(oof), oof


def write_fold_exclude(folds_dir: Path, keys: list[str]) -> Path:
    """The unreadable training files as a data.exclude list for the fold runs: written beside
    them, so each fold's config.yaml names a file that reproduces its data."""
    folds_dir.mkdir(parents=True, exist_ok=True)
    path = folds_dir / "unreadable.txt"
    atomic_write_text(path, "".join(f"{k}\n" for k in keys))
    return path


def claim_check_folder(out: Path) -> Path:
    """Create and lock `out` as `report --out` does: never a run folder, nor one a run holds;
    an earlier check's folder (its check.json) is reused, any other file it writes is refused."""
    writes = () if (out / "check.json").is_file() else CHECK_FILES
    return claim_report_folder(out, writes, lambda report: False, "data check")


@releases_claims
def run_check(
    spec: str,
    out: str | Path,
    data_dir: str | None = None,
    model: str | None = None,
    folds: int = 0,
    epochs: int = 3,
    limit_train: int | None = None,
    radius: int = RADIUS,
    pixel_tolerance: float = PIXEL_TOLERANCE,
    similarity: float = 0.95,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Check the dataset `spec`; write the report into `out`; return check.json's content.

    `model`: a run whose embeddings find near duplicates (instead of pHash) and whose model and
    settings the label check trains. `folds` ≥ 2 checks labels by confident learning on
    `folds`-fold out-of-fold probabilities (`epochs` a fold, on `limit_train` images)."""
    started = time.perf_counter()
    out = claim_check_folder(Path(out))
    data = read_spec(DataConfig(spec=spec, data_dir=data_dir))
    scan = scan_source(data, None if progress is None else lambda d, t: progress("scanning images", d, t))
    classes = data.classes
    embeddings = None
    if model:
        from yingshe.health.embed import embed_source

        readable = np.flatnonzero(scan.readable)
        order = [(scan.splits[r], scan.positions[r]) for r in range(len(scan.keys))]
        embeddings = embed_source(data, model, order)
        embeddings[~np.isin(np.arange(len(order)), readable)] = 0
    groups = exact_groups(scan.hashes, scan.readable)
    within, across = search_near(scan, radius, pixel_tolerance, embeddings, similarity)
    leaks = leak_pairs(groups, scan)
    counts = class_counts(scan, classes)

    files = [{"key": scan.keys[r], "split": scan.splits[r], "problems": p} for r, p in scan.problems.items()]
    unreadable = [f for f in files if any(p.startswith(UNREADABLE) for p in f["problems"])]
    repeats = within_split_repeats(groups, scan)
    leaked_train = {r for rows in groups if len({scan.splits[x] for x in rows}) > 1 for r in rows}
    leaked_train = {r for r in leaked_train if scan.splits[r] == "train"}
    excluded = sorted(
        {f["key"] for f in unreadable}
        | {scan.keys[r] for r in repeats}
        | {scan.keys[r] for r in leaked_train}
        | {scan.keys[p.b] for pairs in across.values() for p in pairs}
    )
    report: dict[str, Any] = {
        "title": f"data check of {spec}",
        "description": data.description,
        "classes": classes,
        "images": {split: len(s) for split, s in data.splits.items()},
        "files": files,
        "unreadable": len(unreadable),
        "exact_duplicates": {
            "groups": [[scan.keys[r] for r in rows] for rows in groups],
            "repeats_within_split": {
                split: sum(1 for r in repeats if scan.splits[r] == split) for split in data.splits
            },
            "test_images_with_train_copy": len({e for _, e in leaks}),
        },
        "near_duplicates": {
            "method": "model embeddings" if model else "pHash",
            "radius_bits": radius,
            "similarity": similarity if model else None,
            "pixel_tolerance": pixel_tolerance,
            "within": {split: [pair_row(scan, p, classes) for p in pairs] for split, pairs in within.items()},
            "across": {split: [pair_row(scan, p, classes) for p in pairs] for split, pairs in across.items()},
            "images_within": {
                split: len({r for p in pairs for r in (p.a, p.b)}) for split, pairs in within.items()
            },
            "test_images_with_near_train": {
                split: len({p.a for p in pairs}) for split, pairs in across.items()
            },
        },
        "class_counts": counts,
        "imbalance_ratio": imbalance_ratio(counts.get("train", [])),
        "sizes": _size_summary(scan),
        "modes": dict(Counter(m for m in scan.modes if m)),
        "exclude_file": "exclude.txt",
        "excluded": len(excluded),
    }
    report["leakage"] = report["exact_duplicates"]["test_images_with_train_copy"] + sum(
        report["near_duplicates"]["test_images_with_near_train"].values()
    )
    # written before the label check, so a failure in its training loses nothing found so far
    atomic_write_text(out / "exclude.txt", "".join(f"{k}\n" for k in excluded))
    if folds >= 2:
        on_fold = None if progress is None else lambda f, k: progress("label check: training fold", f - 1, k)
        options = dict(folds=folds, epochs=epochs, limit_train=limit_train, device=device, on_fold=on_fold)
        left_out = [f["key"] for f in unreadable if f["split"] == "train"]
        if left_out:  # the fold runs could not decode them: the pool is the readable files
            options["exclude"] = str(write_fold_exclude(out / "folds", left_out))
        suspects, oof = check_labels(spec, data_dir, model, options, out)
        report["labels"] = {
            "method": f"confident learning (cleanlab) on {folds}-fold out-of-fold probabilities",
            "checked": len(oof.keys),
            "left_out_unreadable": len(left_out),
            "out_of_fold_accuracy": float((oof.probabilities.argmax(1) == oof.labels).mean()),
            "suspects": [asdict(s) for s in suspects],
        }
        rows = ["rank,key,given,suggested,given_probability"]
        rows += [f"{s.rank},{s.key},{s.given},{s.suggested},{s.given_probability:.4f}" for s in suspects]
        atomic_write_text(out / "label-suspects.csv", "\n".join(rows) + "\n")
    report["actions"] = actions(report)
    report["figures"] = draw(data, scan, report, groups, within, across, out)
    report["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out / "check.json", report)
    atomic_write_text(out / "check.md", check_markdown(report))
    return report


def within_split_repeats(groups: list[list[int]], scan: Scan) -> list[int]:
    """Every copy after the first of an exact group, per split."""
    repeats = []
    for rows in groups:
        by_split: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            by_split[scan.splits[r]].append(r)
        repeats += [r for members in by_split.values() for r in members[1:]]
    return repeats


def _size_summary(scan: Scan) -> dict[str, Any]:
    w = np.array([x for x in scan.widths if x > 0])
    h = np.array([x for x in scan.heights if x > 0])
    if len(w) == 0:
        return {}
    return {
        "width": {"min": int(w.min()), "median": float(np.median(w)), "max": int(w.max())},
        "height": {"min": int(h.min()), "median": float(np.median(h)), "max": int(h.max())},
    }


def actions(report: dict[str, Any]) -> list[str]:
    """What to do about each finding, in the order they matter."""
    todo = []
    if report["unreadable"]:
        todo.append(
            f"{report['unreadable']} unreadable files: train with --exclude exclude.txt (or fix them)"
        )
    if report["leakage"]:
        todo.append(
            f"{report['leakage']} test images have an exact or near copy in train (leakage inflates "
            "test accuracy): train with --exclude exclude.txt, which drops the training copies"
        )
    if any(report["exact_duplicates"]["repeats_within_split"].values()):
        todo.append("exact copies inside a split: train with --dedupe (keeps one of each)")
    if any(report["near_duplicates"]["within"].values()):
        todo.append("near duplicates inside a split: look at near-within-*.png; usually harmless in train")
    ratio = report["imbalance_ratio"]
    if ratio and ratio >= 3:
        todo.append(f"imbalance ratio {ratio:g}: train with --balance logit-adjust (or weights, sampler)")
    if report.get("labels", {}).get("suspects"):
        todo.append("likely label errors: review label-suspects.csv (top of label-suspects.png) and relabel")
    return todo or ["nothing to fix"]


def draw(data, scan: Scan, report, groups, within, across, out: Path) -> list[str]:
    """The grids and distributions; returns the file names written."""
    written = []

    def pic(row: int):
        return figures.picture(data, scan.splits[row], scan.positions[row])

    def pairs_grid(name: str, pairs: list[Pair], title: str) -> None:
        if pairs:
            shown = sorted(pairs, key=lambda p: p.pixel_difference)[:GRID_ROWS]
            captions = [
                f"{_tail(scan.keys[p.a])} ~ {_tail(scan.keys[p.b])} (Δ{p.pixel_difference:.1f})"
                for p in shown
            ]
            figures.rows_grid([[pic(p.a), pic(p.b)] for p in shown], captions, out / name, title)
            written.append(name)

    if scan.problems:
        rows = list(scan.problems)[:GRID_ROWS]
        captions = [f"{_tail(scan.keys[r])}: {scan.problems[r][0][:40]}" for r in rows]
        figures.rows_grid(
            [[pic(r)] for r in rows], captions, out / "files.png", "unreadable or suspicious files"
        )
        written.append("files.png")
    if groups:
        shown = groups[:GRID_ROWS]
        figures.rows_grid(
            [[pic(r) for r in rows[:2]] for rows in shown],
            [f"{_tail(scan.keys[rows[0]])} = {_tail(scan.keys[rows[1]])}" for rows in shown],
            out / "exact-duplicates.png",
            "exact duplicates",
        )
        written.append("exact-duplicates.png")
    for split, pairs in within.items():
        pairs_grid(f"near-within-{split}.png", pairs, f"near duplicates inside {split}")
    for split, pairs in across.items():
        pairs_grid(f"near-{split}-train.png", pairs, f"{split} images with a near duplicate in train")
    suspects = report.get("labels", {}).get("suspects", [])[:GRID_ROWS]
    if suspects:
        where = {k: r for r, k in enumerate(scan.keys)}
        figures.rows_grid(
            [[pic(where[s["key"]])] for s in suspects],
            [f"#{s['rank']} given {s['given']} → {s['suggested']}?" for s in suspects],
            out / "label-suspects.png",
            "likely label errors (given → suggested)",
        )
        written.append("label-suspects.png")
    sizes = figures.distributions(
        report["classes"],
        report["class_counts"],
        scan.widths,
        scan.heights,
        Counter(report["modes"]),
        out / "distributions.png",
    )
    written.append(sizes.name)
    return written


def _tail(key: str, limit: int = 28) -> str:
    return key if len(key) <= limit else "…" + key[-(limit - 1) :]
