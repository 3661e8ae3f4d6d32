"""Out-of-fold predicted probabilities: every training image scored by a model that never saw it.

The k-fold machinery of `tune/cv.py` trains one run per fold (`fold_config`); here each fold's
model then predicts its held-out fold, and the folds' rows are put back in pool order. Confident
learning (`health/labels.py`) needs exactly this: probabilities not fitted to the labels they
judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yingshe.config import RunConfig
from yingshe.data.augment import Normalize
from yingshe.data.curate import item_key, listed, read_exclude
from yingshe.data.dataset import build_dataset, read_spec, stage_rng
from yingshe.data.splits import Split, stratified_folds, stratified_split, stratified_subset
from yingshe.errors import YingsheError
from yingshe.evaluate.metrics import predict_batches
from yingshe.inference import model_from_checkpoint
from yingshe.models.tta import flip_tta_applies
from yingshe.runs import load_checkpoint
from yingshe.runtime import resolve_device
from yingshe.train.trainer import autocast_dtype
from yingshe.tune.cv import cv_folder, fold_config


@dataclass
class OutOfFold:
    """Rows in the order of the pool (the run's training images before the fold cut)."""

    probabilities: np.ndarray  # (N, K) float32, softmax of each image's held-out model
    labels: np.ndarray  # (N,) the given labels
    keys: list[str]  # each image's key, as exclude lists name it
    classes: list[str]


def pool_positions(config: RunConfig) -> tuple[np.ndarray, list[str], list[str]]:
    """Positions in the source's train split of the pool `choose_splits` cuts folds from (after
    data.exclude, then the same seeded test hold-out and limit), with their keys and the class
    names. Positions index the source itself, so keys name source images even after exclusion."""
    cfg, seed = config.data, config.train.seed
    if cfg.imbalance or cfg.dedupe:
        raise YingsheError(
            "out-of-fold label checks run on the source as it is (less an exclude list)",
            "leave data.imbalance and data.dedupe unset for `data check`",
        )
    source = read_spec(cfg)
    train = source.splits["train"]
    positions = np.arange(len(train))
    if cfg.exclude:  # as build_dataset's curate: left out before the hold-out and the limit
        positions = positions[~listed("train", train, read_exclude(cfg.exclude))]
    if "test" not in source.splits and "val" not in source.splits:
        kept, _ = stratified_split(train.labels[positions], cfg.test_fraction, stage_rng(seed, "test"))
        positions = positions[kept]
    if cfg.limit_train:
        chosen = stratified_subset(train.labels[positions], cfg.limit_train, stage_rng(seed, "limit_train"))
        positions = positions[chosen]
    return positions, [item_key("train", train, int(p)) for p in positions], source.classes


def oof_fold_config(config: RunConfig, folds: int, fold: int, cv_dir: Path) -> RunConfig:
    """`fold_config` reading the source as `pool_positions` does: without prepared shards (which
    leave out what they could not decode), so the fold's held-out images are the pool's."""
    cfg = fold_config(config, folds, fold, cv_dir)
    cfg.data.prepared = "off"
    cfg.train.plots = False
    return cfg


def held_out_matches(val: Split, labels: np.ndarray, keys: list[str]) -> bool:
    """The fold run's held-out split is the pool's fold: same labels and, for files (whose names
    survive subsetting, unlike arrays' positions), the same images, so no key names another's row."""
    if not np.array_equal(val.labels, labels):
        return False
    return val.files is None or [val.name(i) for i in range(len(val))] == keys


def out_of_fold_probabilities(
    config: RunConfig,
    folds: int = 3,
    out: str | Path | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> OutOfFold:
    """Train `folds` fold runs (into `out`) and gather each held-out fold's probabilities."""
    positions, keys, classes = pool_positions(config)
    source_labels = read_spec(config.data).splits["train"].labels[positions]
    cv_dir = cv_folder(config, out)
    held_parts = stratified_folds(source_labels, folds, stage_rng(config.train.seed, "folds"))
    probabilities = np.zeros((len(positions), len(classes)), dtype=np.float32)
    device = resolve_device(config.train.device)
    from yingshe.api import eval_batches, train  # api imports tune lazily; keep the cycle out

    for fold in range(1, folds + 1):
        if on_fold is not None:
            on_fold(fold, folds)
        cfg = oof_fold_config(config, folds, fold, cv_dir)
        run = train(cfg)
        checkpoint = load_checkpoint(run.run_dir / "last.pt")
        meta = checkpoint.meta
        data = build_dataset(cfg.data, cfg.train.seed, stats=(meta.mean, meta.std))
        held = held_parts[fold - 1]
        if not held_out_matches(data.val, source_labels[held], [keys[i] for i in held]):
            raise YingsheError("the fold's held-out images are not the pool's", "report this as a bug")
        model = model_from_checkpoint(checkpoint).to(device)
        batches = eval_batches(data.val, data, cfg, device, Normalize(meta.mean, meta.std), False)
        # as the fold's own report evaluated it: the run's TTA and precision
        tta = flip_tta_applies(cfg.train.tta_flip, meta.flip_invariant), cfg.train.tta_translate
        pred = predict_batches(model, batches, autocast_dtype(cfg.train.amp, device), *tta)
        if len(pred.labels) != len(held):
            raise YingsheError(
                f"fold {fold}: {len(held) - len(pred.labels)} held-out images could not be decoded",
                "leave them out with data.exclude (`data check` does so for those its scan finds unreadable)",
            )
        probabilities[held] = torch.softmax(pred.logits, 1).numpy()
    return OutOfFold(probabilities, source_labels, keys, classes)
