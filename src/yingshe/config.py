"""Every setting of a run, as typed dataclasses with defaults; YAML load/save; `key=value` overrides.

A run's `config.yaml` is `asdict(RunConfig)`, so it reproduces the run. Overrides are checked: an
unknown key or a value of the wrong type is an error naming the key and its close matches.
A key may be dotted (`optim.lr=0.01`) or a bare field name when that name is unique (`lr=0.01`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yingshe.errors import YingsheError, close_matches


@dataclass
class DataConfig:
    """Where the images come from and how they are shaped before the model sees them."""

    spec: str = "digits"  # a dataset name (digits, fashion-mnist, mnist, cifar10, cifar100) or a path
    data_dir: str | None = None  # where names are looked up; None: $YINGSHE_DATA, else ~/.cache/yingshe
    download: bool = True  # fetch a named dataset (checked by SHA-256) when no local copy exists
    image_size: int | None = None  # side of the square input; None: native for fixed-size sets, 128 else
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: follow the data
    limit_train: int | None = None  # train on a stratified, seeded subset of this many images
    limit_test: int | None = None  # evaluate on a stratified, seeded subset of this many images
    val_fraction: float = 0.1  # held out of train for model selection; 0 selects on the test split
    test_fraction: float = 0.2  # held out when the source has no test split of its own
    cv_folds: int | None = None  # k-fold CV: k stratified folds of the train pool (replaces val_fraction)
    cv_fold: int = 1  # with cv_folds: which fold (1..k) is held out as the validation split
    strict: bool = False  # an unreadable image is an error instead of being skipped and counted
    workers: int | None = None  # decoding processes for file datasets; None: min(4, cores)
    prepared: str = "auto"  # decoded shards of a file dataset: auto (use if cached), always (prepare), off
    cache_dir: str | None = None  # where prepared shards are cached; None: $YINGSHE_CACHE, else ~/.cache
    stream: bool = False  # read shards front to back through a shuffle buffer (data larger than the cache)
    max_file_mb: float = 256.0  # bigger image files are skipped unread (and counted)
    max_pixels: int = 89_478_485  # bigger images are skipped undecoded (Pillow's own limit, ~9459²)
    manifest_duplicates: str = "error"  # a CSV manifest listing a file twice: error, or collapse


@dataclass
class AugmentConfig:
    """Training-time augmentation. Batch-level ops run on uint8/float tensors on the device."""

    crop_padding: int | None = None  # random crop after zero padding; None: image_size // 8
    hflip: bool | None = None  # random horizontal flip; None: on unless the dataset is digit-like
    rotate: float = 0.0  # max rotation in degrees (random affine, as in the seeds)
    translate: float = 0.0  # max translation as a fraction of the side
    scale: float = 0.0  # max relative zoom in or out
    policy: str = "none"  # per-image policy: none, randaugment or trivialaugment
    erasing: float = 0.0  # probability of random erasing (cutout) per image
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 is off
    cutmix: float = 0.0  # cutmix Beta(alpha, alpha); 0 is off


@dataclass
class ModelConfig:
    """Which network, by registry name (`yingshe models` lists them)."""

    name: str = "seed-cnn"  # a built-in name, `timm:<name>` or `torchvision:<name>`
    pretrained: bool = False  # load the zoo's pretrained weights (timm/torchvision names only)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments (width, depth…)


@dataclass
class OptimConfig:
    """Optimiser, schedule and loss settings."""

    name: str = "adamw"  # sgd (Nesterov), adam, adamw, rmsprop or adagrad
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 5e-4  # decoupled for adamw, L2 for the others
    momentum: float = 0.9  # sgd and rmsprop
    schedule: str = "onecycle"  # onecycle, cosine, step or constant
    warmup_epochs: float = 0.0  # linear warm-up for cosine and step
    step_epochs: int = 30  # step schedule: decay every this many epochs
    gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    grad_clip: float | None = None  # clip the gradient norm to this value


@dataclass
class TrainConfig:
    """How the loop runs: length, batch, device, reproducibility, outputs."""

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps in all
    batch_size: int = 64  # the seeds' choice; more steps per epoch settle batch norm sooner
    eval_batch_size: int | None = None  # None: 2 × batch_size
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    seed: int = 0
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    amp: str = "auto"  # mixed precision: auto (bf16 on a GPU that has it), bf16, fp16 or off
    channels_last: bool | None = None  # None: on for CUDA, where convolutions gain from it
    patience: int | None = None  # early stopping: epochs without improvement of `monitor`
    monitor: str = "val_accuracy"  # metric that picks best.pt and drives early stopping
    tensorboard: bool = False  # also write TensorBoard events to <run>/events
    out: str | None = None  # the run folder; None: runs/<data>-<model>-<time>
    exist_ok: bool = False  # allow training into a folder that already holds a run (overwrites it)
    plots: bool = True  # draw the report's PNG figures (a few seconds a run on a CPU; off for tuning trials)
    recipe: str | None = None  # the recipe the config started from (`--recipe`); recorded, not re-applied
    compile: bool = False  # torch.compile the training model (pays off on GPU; compiling takes a while)
    ema: float | None = None  # decay of an exponential moving average of the weights; evaluated and saved
    tta_flip: bool = False  # evaluate on the mean logits of an image and its mirror (skipped for digits)
    sync_bn: bool = False  # under torchrun on GPUs: batch norm statistics over the global batch
    dist_timeout: float = 300.0  # under torchrun: seconds a collective waits for a dead or hung rank


@dataclass
class RunConfig:
    """Everything a run needs; `config.yaml` in the run folder is this, serialised."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        config = cls()
        apply_mapping(config, raw, source)
        return config


def save_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def load_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a YAML config file onto `base` (the defaults when None); missing keys keep their values,
    unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise YingsheError(f"config file {path} does not exist", "give the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise YingsheError(f"{path} is not valid YAML: {err}", "fix the syntax at that line") from err
    if not isinstance(raw, dict):
        raise YingsheError(f"{path} must hold a mapping of sections", "see `yingshe train --help`")
    if base is None:
        return RunConfig.from_dict(raw, source=str(path))
    apply_mapping(base, raw, str(path))
    return base


def apply_mapping(config: RunConfig, raw: dict[str, Any], source: str) -> None:
    """Set the sections of `config` from a nested mapping, checking every key and type."""
    sections = {f.name for f in dataclasses.fields(config)}
    for section, values in raw.items():
        if section not in sections:
            raise YingsheError(
                f"{source}: unknown section {section!r}", close_matches(str(section), sections)
            )
        if not isinstance(values, dict):
            raise YingsheError(f"{source}: section {section!r} must be a mapping")
        for key, value in values.items():
            set_value(config, f"{section}.{key}", value, source)


def leaf_keys(config: RunConfig) -> list[str]:
    return [
        f"{section.name}.{leaf.name}"
        for section in dataclasses.fields(config)
        for leaf in dataclasses.fields(getattr(config, section.name))
    ]


def resolve_key(config: RunConfig, key: str) -> str:
    """`lr` → `optim.lr` when unique; dotted keys are checked as they are."""
    keys = leaf_keys(config)
    if key in keys:
        return key
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise YingsheError(f"key {key!r} is ambiguous", "write one of " + ", ".join(matches))
    raise YingsheError(f"unknown config key {key!r}", close_matches(key, keys))


def set_value(config: RunConfig, key: str, value: Any, source: str = "override") -> None:
    """Set one leaf `section.name` to `value`, coercing strings and checking the type."""
    dotted = resolve_key(config, key)
    section_name, name = dotted.split(".", 1)
    section = getattr(config, section_name)
    hint = typing.get_type_hints(type(section))[name]
    setattr(section, name, coerce(value, hint, f"{source}: {dotted}"))


def apply_overrides(config: RunConfig, overrides: list[str]) -> None:
    """Apply `key=value` strings; values are parsed as YAML scalars (`1e-3`, `true`, `null`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise YingsheError(f"override {item!r} is not key=value", "write e.g. optim.lr=0.01")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        set_value(config, key.strip(), value)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type hint, converting the lossless cases (int → float, str → str)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except YingsheError as err:
                errors.append(err)
        raise errors[0]
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise YingsheError(f"{where} must be a mapping, got {value!r}")
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise YingsheError(
        f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}",
        "write a value of that type",
    )
