"""From a `DataConfig` to the train/val/test splits a run uses, with their shape and statistics.

This is where limits, hold-outs, the channel count, the image size and the normalisation are
decided, once, so that training, evaluation and prediction all agree on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from yingshe.config import DataConfig
from yingshe.data.crop import resize_side
from yingshe.data.curate import curate, long_tail
from yingshe.data.download import ProgressFn
from yingshe.data.images import UnreadableImage, decode_image, image_header, set_limits
from yingshe.data.pack import resolve_prepared
from yingshe.data.registry import is_named, load_named
from yingshe.data.remote import is_shard_list
from yingshe.data.sources import ReadOptions, read_source
from yingshe.data.splits import SourceData, Split, stratified_folds, stratified_split, stratified_subset
from yingshe.data.webdataset import read_shard_list
from yingshe.errors import YingsheError

log = logging.getLogger(__name__)

DEFAULT_FILE_SIZE = 128  # side for folders of mixed sizes; large enough for photos, CPU-friendly
MAX_AUTO_SIZE = 224
HEADER_SAMPLE = 64  # files whose headers decide the channel count and size of a file dataset
STATS_SAMPLE_FILES = 256
STATS_SAMPLE_ARRAY = 10_000


@dataclass
class DatasetSpec:
    """The resolved dataset of a run. `val` is None when model selection uses the test split."""

    description: str
    classes: list[str]
    channels: int
    image_size: int
    train: Split
    val: Split | None
    test: Split
    mean: list[float]
    std: list[float]
    flip_invariant: bool = True
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # refused while reading the source
    task: str = "multiclass"  # or "multilabel" (labels are (N, K) multi-hot rows)
    resize: int | None = None  # side the splits are decoded/stored at before the centre crop (crop_pct)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_spec(cfg: DataConfig, progress: ProgressFn | None = None) -> SourceData:
    """Read the source named or pointed to by `cfg.spec`. Applies the config's per-image limits
    (data.max_file_mb, data.max_pixels) to every later read and decode in this process."""
    set_limits(cfg.max_pixels, cfg.max_file_mb)
    options = ReadOptions(strict=cfg.strict, manifest_duplicates=cfg.manifest_duplicates)
    if is_named(cfg.spec):
        return load_named(cfg.spec, cfg.data_dir, cfg.download, progress, options)
    if is_shard_list(cfg.spec):  # brace range, glob or URL of WebDataset shards (data/remote.py)
        return read_shard_list(cfg.spec)
    path = Path(cfg.spec).expanduser()
    if not path.exists() and "/" not in cfg.spec and "." not in cfg.spec:
        from yingshe.data.registry import DATASETS

        DATASETS.get(cfg.spec)  # raises "unknown dataset ... did you mean"
    return read_source(path, options=options)


def build_dataset(
    cfg: DataConfig,
    seed: int = 0,
    progress: ProgressFn | None = None,
    stats: tuple[list[float], list[float]] | None = None,
) -> DatasetSpec:
    """`stats`: the normalisation a checkpoint already carries (resume, evaluate), so the training
    pixels are not sampled and decoded again to measure it."""
    source = read_spec(cfg, progress)
    size = cfg.image_size
    if size is None and (cfg.crop_pct or 1) < 1 and "train" in source.splits:
        size = native_size(source.splits["train"])  # the source's: shards hold the larger side
    if cfg.exclude or cfg.dedupe:  # lists name source images, so curate the source itself
        data = curate(skip_prepared(source, cfg), cfg.exclude, cfg.dedupe)
    else:
        data = use_prepared(source, cfg)
    train, val, test, notes = choose_splits(data, cfg, seed)
    notes += missing_test_classes(test, data.classes)
    channels = cfg.channels or data.channels or detect_channels(train)
    if channels not in (1, 3):
        raise YingsheError(f"data.channels must be 1 or 3, got {channels}", "set channels=1 or 3")
    size = size or native_size(train)
    side = resize_side(size, cfg.crop_pct)  # data.crop_pct < 1: decoded larger, centre-cropped in batches
    train, val, test = (fit_split(s, side, channels) if s is not None else None for s in (train, val, test))
    mean, std = stats or channel_stats(train, side, channels)
    return DatasetSpec(
        description=data.description,
        classes=data.classes,
        channels=channels,
        image_size=size,
        train=train,
        val=val,
        test=test,
        mean=mean,
        std=std,
        flip_invariant=data.flip_invariant,
        notes=data.notes + notes,
        skipped=dict(data.skipped),
        task=data.task,
        resize=side if side != size else None,
    )


def skip_prepared(data: SourceData, cfg: DataConfig) -> SourceData:
    """data.exclude / data.dedupe name source images, so the source is read instead of prepared
    shards: an error with data.prepared=always, a warning with auto (for file datasets)."""
    if cfg.prepared == "off" or all(s.files is None for s in data.splits.values()):
        return data
    option = "data.exclude" if cfg.exclude else "data.dedupe"
    if cfg.prepared == "always":
        raise YingsheError(
            f"data.prepared=always cannot be combined with {option}: prepared shards hold every "
            "source image, and the curated list needs the images themselves",
            f"drop data.prepared=always (auto or off read the source images), or drop {option}",
        )
    log.warning("%s is set, so prepared shards are not used: the source images are decoded instead", option)
    return data


def use_prepared(data: SourceData, cfg: DataConfig) -> SourceData:
    """A file dataset's prepared shards in its place (data.prepared: `auto` uses shards the cache
    holds, `always` prepares them on first use, `off` never). Size and channels are decided here,
    on the whole train split, because they are part of the cache key."""
    if cfg.prepared == "off" or data.task != "multiclass":  # shards hold one class per image
        return data
    if all(s.files is None for s in data.splits.values()):
        return data
    train = data.splits["train"]
    channels = cfg.channels or data.channels or detect_channels(train)
    size = resize_side(cfg.image_size or native_size(train), cfg.crop_pct)  # shards at the stored side
    if channels not in (1, 3):
        return data  # build_dataset names the error
    return resolve_prepared(data, size, channels, cfg.prepared, cfg.cache_dir, cfg.workers)


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """One generator per choice (test hold-out, each limit, val hold-out, folds): a limit on the
    test split then cannot reshuffle the validation cut, so `evaluate --limit` never moves
    training images into the split it scores."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *stage.encode()])


def choose_splits(
    data: SourceData, cfg: DataConfig, seed: int
) -> tuple[Split, Split | None, Split, list[str]]:
    """Train, validation and test splits after limits; hold-outs are stratified and seeded."""
    notes = []
    if "train" not in data.splits:
        raise YingsheError(
            f"{data.description} has no training split (found: {', '.join(data.splits)})",
            "add a train/ folder beside test/ (or val/), or pass the folder of classes itself",
        )
    train = data.splits["train"]
    test = data.splits.get("test", data.splits.get("val"))
    val = data.splits.get("val") if "test" in data.splits else None
    if test is None:
        kept, held = stratified_split(train.labels, cfg.test_fraction, stage_rng(seed, "test"))
        train, test = train.subset(kept), train.subset(held)
        notes.append(f"no test split in the source: held out {cfg.test_fraction:.0%} of train")
    if cfg.limit_train:
        train = train.subset(stratified_subset(train.labels, cfg.limit_train, stage_rng(seed, "limit_train")))
    if cfg.imbalance and data.task != "multiclass":
        raise YingsheError(
            "data.imbalance builds a long-tailed split by class, which multi-label data does not have",
            "leave data.imbalance unset for a multi-label manifest",
        )
    if cfg.imbalance:
        train = long_tail(train, len(data.classes), cfg.imbalance, stage_rng(seed, "imbalance"))
        notes.append(f"data.imbalance={cfg.imbalance:g}: a long-tailed train split of {len(train)} images")
    if cfg.limit_test:
        test = test.subset(stratified_subset(test.labels, cfg.limit_test, stage_rng(seed, "limit_test")))
    if cfg.cv_folds:
        train, val = cv_fold_split(train, cfg.cv_folds, cfg.cv_fold, stage_rng(seed, "folds"))
        notes.append(f"cross-validation: fold {cfg.cv_fold} of {cfg.cv_folds} of the train pool is val")
    elif val is None and cfg.val_fraction > 0:
        kept, held = stratified_split(train.labels, cfg.val_fraction, stage_rng(seed, "val"))
        train, val = train.subset(kept), train.subset(held)
        if len(val) == 0:
            raise YingsheError(
                f"val_fraction={cfg.val_fraction} holds out no image of {len(train)}",
                "use more images, raise data.val_fraction, or set it to 0 to select on the test split",
            )
    elif val is None:
        notes.append("val_fraction=0: the best epoch is chosen on the test split")
    if len(train) == 0 or len(test) == 0:
        raise YingsheError(
            f"the splits are empty (train {len(train)}, test {len(test)})",
            "use more images or lower test_fraction/val_fraction",
        )
    return train, val, test, notes


def missing_test_classes(test: Split, classes: list[str]) -> list[str]:
    """A note (and a warning) naming the classes the test split has no image of: their accuracy
    cannot be measured, and the report says so instead of averaging over them silently."""
    multi = test.labels.ndim == 2  # multi-label: the images that carry each label
    counts = test.labels.sum(0) if multi else np.bincount(test.labels, minlength=len(classes))
    missing = [classes[i] for i in np.flatnonzero(counts == 0)]
    if not missing:
        return []
    note = (
        f"{len(missing)} class(es) have no test image after splitting: {', '.join(missing[:20])}"
        + (" …" if len(missing) > 20 else "")
        + " (add images or raise data.test_fraction)"
    )
    log.warning(note)
    return [note]


def cv_fold_split(pool: Split, folds: int, fold: int, rng: np.random.Generator) -> tuple[Split, Split]:
    """(train, val) for k-fold cross-validation: fold `fold` (1-based) of `folds` stratified folds of
    the pool is held out. The folds come from the run's seeded generator after the same limits, so
    the k runs of one cross-validation cut the pool identically and their val splits are disjoint."""
    if not 2 <= folds <= len(pool) or not 1 <= fold <= folds:
        raise YingsheError(
            f"cannot hold out fold {fold} of {folds} from a pool of {len(pool)} training images",
            "use 2 <= data.cv_folds <= the number of training images and 1 <= data.cv_fold <= cv_folds",
        )
    parts = stratified_folds(pool.labels, folds, rng)
    held = parts[fold - 1]
    kept = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold - 1]))
    return pool.subset(kept), pool.subset(held)


def sample_headers(split: Split) -> list[tuple[int, int, str]]:
    headers = []
    step = max(1, len(split) // HEADER_SAMPLE)
    for i in range(0, len(split), step)[:HEADER_SAMPLE]:
        try:
            headers.append(image_header(split.files.read(i)))
        except Exception:  # unreadable files are reported when they are decoded
            continue
    return headers


def detect_channels(split: Split) -> int:
    if split.images is not None:
        return split.images.shape[-1]
    if split.packed is not None:
        return split.packed.channels
    modes = {mode for _, _, mode in sample_headers(split)}
    return 1 if modes and modes <= {"L", "1", "I;16", "I", "F", "LA"} else 3


def native_size(split: Split) -> int:
    """Arrays keep their size; files of one common square size keep it; otherwise 128."""
    if split.images is not None:
        return int(split.images.shape[1])
    if split.packed is not None:
        return split.packed.image_size
    sizes = {(w, h) for w, h, _ in sample_headers(split)}
    if len(sizes) == 1:
        w, h = sizes.pop()
        if w == h and w <= MAX_AUTO_SIZE:
            return w
    return DEFAULT_FILE_SIZE


def fit_split(split: Split, size: int, channels: int) -> Split:
    """Bring an in-memory split to (size, size, channels); file splits are fitted when decoded."""
    if split.packed is not None and split.packed.image_shape != (size, size, channels):
        raise YingsheError(
            f"the data was prepared at {split.packed.image_shape}, not ({size}, {size}, {channels})",
            "train at the prepared size (with data.crop_pct < 1, shards hold image_size/crop_pct), "
            "or prepare again with `yingshe data prepare --image-size`",
        )
    if split.images is None:
        return split
    images = split.images
    if images.shape[-1] != channels:
        images = convert_channels(images, channels)
    if images.shape[1:3] != (size, size):
        images = resize_array(images, size)
    return Split(split.labels, images=images)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"
    return np.rint(images.astype(np.float32) @ weights)[..., None].astype(np.uint8)


def resize_array(images: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Antialiased bilinear resize of a (N, H, W, C) uint8 array, in chunks to bound memory."""
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True)
        out[start : start + chunk] = block.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


def channel_stats(split: Split, size: int, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels in [0, 1], from a sample."""
    if split.images is not None:
        step = max(1, len(split) // STATS_SAMPLE_ARRAY)
        pixels = split.images[::step].reshape(-1, channels).astype(np.float64) / 255.0
    elif split.packed is not None:  # the arrays' sample, counted block by block (no float copy)
        step = max(1, len(split) // STATS_SAMPLE_ARRAY)
        mean, std = split.packed.pixel_stats(np.arange(0, len(split), step))
        std = np.maximum(std, 1e-3)
        return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
    else:
        step = max(1, len(split) // STATS_SAMPLE_FILES)
        arrays = []
        for i in range(0, len(split), step):
            try:
                arrays.append(decode_image(split.files.read(i), size, channels))
            except (UnreadableImage, OSError):
                continue
        if not arrays:
            raise YingsheError(
                "none of the sampled training images could be decoded",
                "check the files with `yingshe data inspect`",
            )
        pixels = np.stack(arrays).reshape(-1, channels).astype(np.float64) / 255.0
    mean = pixels.mean(axis=0)
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
