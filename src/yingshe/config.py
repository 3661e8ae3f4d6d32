"""Every setting of a run, as typed dataclasses with defaults; YAML load/save; `key=value` overrides.

A run's `config.yaml` is `asdict(RunConfig)`, so it reproduces the run. Overrides are checked: an
unknown key or a value of the wrong type is an error naming the key and its close matches.
A key may be dotted (`optim.lr=0.01`) or a bare field name when that name is unique (`lr=0.01`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from yingshe.errors import YingsheError, close_matches

# The choices of the string settings: `coerce` checks them, the CLI offers them, docs list them.
# tests/unit/test_cli_fast.py holds them equal to the optimiser and schedule registries and to
# evaluate.metrics.monitor_choices() (the per-epoch figures of the metric table).
Prepared = Literal["auto", "always", "off"]
Policy = Literal["none", "randaugment", "trivialaugment"]
CropResize = Literal["auto", "torch", "opencv"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "muon"]
Schedule = Literal["onecycle", "cosine", "linear", "step", "constant"]
Amp = Literal["auto", "bf16", "fp16", "off"]
ManifestDuplicates = Literal["error", "collapse"]
Balance = Literal["none", "weights", "sampler", "logit-adjust"]
FinetuneStrategy = Literal["linear-probe", "full", "gradual"]
Monitor = Literal[
    "val_loss", "val_accuracy", "val_ece", "val_map", "train_loss", "train_accuracy", "epoch"
]  # val_ece: single-label runs only; val_map: multi-label runs only
MultilabelLoss = Literal["bce", "asymmetric"]


@dataclass
class DataConfig:
    """Where the images come from and how they are shaped before the model sees them."""

    spec: str = "digits"  # a dataset name (digits, fashion-mnist, mnist, cifar10, cifar100) or a path
    data_dir: str | None = None  # where names are looked up; None: $YINGSHE_DATA, else ~/.cache/yingshe
    download: bool = True  # fetch a named dataset (checked by SHA-256) when no local copy exists
    image_size: int | None = None  # side of the square input; None: native for fixed-size sets, 128 else
    channels: Literal[1, 3] | None = None  # 1 (grey) or 3 (RGB); None: follow the data
    limit_train: int | None = None  # train on a stratified, seeded subset of this many images
    limit_test: int | None = None  # evaluate on a stratified, seeded subset of this many images
    val_fraction: float = 0.1  # held out of train for model selection; 0 selects on the test split
    test_fraction: float = 0.2  # held out when the source has no test split of its own
    cv_folds: int | None = None  # k-fold CV: k stratified folds of the train pool (replaces val_fraction)
    cv_fold: int = 1  # with cv_folds: which fold (1..k) is held out as the validation split
    strict: bool = False  # an unreadable image is an error instead of being skipped and counted
    workers: int | None = None  # decoding processes for file datasets; None: min(4, cores)
    prepared: Prepared = "auto"  # decoded shards of file data: auto uses cached, always makes, off not
    cache_dir: str | None = None  # where prepared shards are cached; None: $YINGSHE_CACHE, else ~/.cache
    stream: bool = False  # read shards front to back through a shuffle buffer (data larger than the cache)
    max_file_mb: float = 256.0  # bigger image files are skipped unread (and counted)
    max_pixels: int = 89_478_485  # bigger images are skipped undecoded (Pillow's own limit, ~9459²)
    manifest_duplicates: ManifestDuplicates = "error"  # a CSV file listed twice: an error, or collapsed
    exclude: str | None = None  # file of image keys to leave out (exclude.txt of `yingshe data check`)
    dedupe: bool = False  # keep one of each set of exact copies; drop training copies of test images
    imbalance: float | None = None  # long-tailed train split: class c keeps n_max·ratio^(−c/(K−1)) images
    crop_pct: float | None = None  # eval: short side image_size/crop_pct, centre crop; None: RRC 0.875 else 1


@dataclass
class AugmentConfig:
    """Training-time augmentation. Batch-level ops run on uint8/float tensors on the device."""

    crop_padding: int | None = None  # random crop after zero padding; None: image_size // 8
    hflip: bool | None = None  # random horizontal flip; None: on unless the dataset is digit-like
    alternate_flip: bool = False  # with hflip: each image mirrored every other epoch (airbench's flip)
    rotate: float = 0.0  # max rotation in degrees (random affine, as in the seeds)
    translate: float = 0.0  # max translation as a fraction of the side
    scale: float = 0.0  # max relative zoom in or out
    policy: Policy = "none"  # per-image torchvision policy applied before the batch ops
    erasing: float = 0.0  # probability of random erasing (cutout) per image
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 is off
    cutmix: float = 0.0  # cutmix Beta(alpha, alpha); 0 is off
    random_resized_crop: bool = False  # photos: Inception-style random-resized-crop + flip, no padded crop
    rrc_scale: float = 0.08  # random_resized_crop: smallest crop, as a fraction of the image's area (max 1)
    crop_resize: CropResize = "auto"  # file/shard RRC: opencv unless shrunk < 0.75x; auto: if installed
    progressive_min: int | None = None  # progressive resizing: the training side at the start; None: off
    progressive_until: float = 0.5  # progressive resizing: the fraction of the run where the ramp ends


@dataclass
class ModelConfig:
    """Which network, by registry name (`yingshe models` lists them)."""

    name: str = "seed-cnn"  # a built-in name, `timm:<name>` or `torchvision:<name>`
    pretrained: bool = False  # load the zoo's pretrained weights (timm/torchvision names only)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra builder arguments (width, depth…)


@dataclass
class OptimConfig:
    """Optimiser, schedule and loss settings."""

    name: OptimizerName = "adamw"  # the optimiser (sgd is Nesterov SGD; muon: Muon filters, SGD for the rest)
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 5e-4  # weight decay: decoupled for adamw, L2 for the others
    momentum: float = 0.9  # momentum of sgd and rmsprop (and muon's SGD part)
    muon_lr: float = 0.24  # muon: filters' rate (a bank of norm √out moves ≈ muon_lr·√min(out, in·k²) a step)
    muon_momentum: float = 0.6  # muon: the filters' Nesterov momentum (airbench94_muon's 0.6)
    schedule: Schedule = "onecycle"  # learning-rate schedule over the run
    warmup_epochs: float = 0.0  # linear warm-up for cosine, linear and step
    step_epochs: int = 30  # step schedule: decay every this many epochs
    gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    bias_lr_scale: float = 1.0  # learning-rate multiplier for biases and norm weights (airbench94: 64)
    grad_clip: float | None = None  # clip the gradient norm to this value


@dataclass
class TrainConfig:
    """How the loop runs: length, batch, device, reproducibility, outputs."""

    epochs: int | float = 10  # passes over the training split; a fraction (2.5) ends the last one early
    max_steps: int | None = None  # stop after this many optimiser steps in all
    batch_size: int = 64  # images per step (the seeds' 64: more steps per epoch settle batch norm sooner)
    eval_batch_size: int | None = None  # batch size for evaluation; None: 2 × batch_size
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    seed: int = 0  # seeds the splits, the subsets, the initial weights and the augmentation
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    amp: Amp = "auto"  # mixed precision; auto: bf16 on a GPU that has it, else off
    channels_last: bool | None = None  # NHWC memory layout; None: on for CUDA and the CPU (convolutions gain)
    patience: int | None = None  # early stopping: epochs without improvement of `monitor`
    monitor: Monitor = "val_accuracy"  # metric that picks best.pt and drives early stopping
    tensorboard: bool = False  # also write TensorBoard events to <run>/events
    out: str | None = None  # the run folder; None: runs/<data>-<model>-<time>
    exist_ok: bool = False  # allow training into a folder that already holds a run (overwrites it)
    plots: bool = True  # draw the report's PNG figures (a few seconds a run on a CPU; off for tuning trials)
    recipe: str | None = None  # the recipe the config started from (`--recipe`); recorded, not re-applied
    compile: bool = False  # torch.compile the training model (pays off on GPU; compiling takes a while)
    ema: float | None = None  # decay of an exponential moving average of the weights; evaluated and saved
    tta_flip: bool = False  # evaluate on the mean logits of an image and its mirror (skipped for digits)
    tta_translate: int = 0  # also on copies shifted ±N px diagonally (airbench's TTA level 2); 0: off
    sync_bn: bool = False  # under torchrun on GPUs: batch norm statistics over the global batch
    dist_timeout: float = 300.0  # under torchrun: seconds a collective waits for a dead or hung rank
    find_unused_parameters: bool = False  # under torchrun: for models whose forward skips some parameters
    balance: Balance = "none"  # class imbalance: none, weights (loss), sampler (class-balanced), logit-adjust
    time_budget: float | str | None = None  # wall time for the whole run (90s, 30m, 1h): steps fitted to it
    multilabel_loss: MultilabelLoss = "bce"  # multi-label data: bce or asymmetric (ASL) sigmoid loss
    checkpoint_every: int | None = None  # also write last.pt every this many steps (None: per epoch)
    val_every: int = 1  # validate every N epochs and always after the last; 0: after the last only
    reuse_cpu_memory: bool = True  # CPU, glibc: keep freed memory for the next step (mallopt; process-wide)


@dataclass
class FinetuneConfig:
    """Transfer learning (`yingshe finetune`): start from a pretrained source instead of random weights."""

    source: str | None = None  # a yingshe run or checkpoint, `timm:<name>` or `torchvision:<name>`
    weights: str | None = None  # a .pth/.pt/.safetensors file; None: the run's, or the zoo's cached weights
    strategy: FinetuneStrategy = "full"  # linear-probe (head only), full, or gradual (unfreeze from the top)
    freeze_until: str | None = None  # keep the body frozen up to and including this stage
    head_lr_mult: float = 10.0  # the new head's learning rate is optim.lr times this
    lr_decay: float = 0.5  # gradual: each stage further down trains at this factor of the one above
    period: int = 1  # gradual: epochs between unfreezing one more stage


@dataclass
class RunConfig:
    """Everything a run needs; `config.yaml` in the run folder is this, serialised."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

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
    """Set one leaf `section.name` to `value`, coercing strings and checking the type and range."""
    dotted = resolve_key(config, key)
    section_name, name = dotted.split(".", 1)
    section = getattr(config, section_name)
    hint = typing.get_type_hints(type(section))[name]
    where = f"{source}: {dotted}"
    value = coerce(value, hint, where)
    check_range(dotted, value, where)
    setattr(section, name, value)


def apply_overrides(config: RunConfig, overrides: list[str]) -> None:
    """Apply `key=value` strings. Values are parsed as YAML scalars (`1e-3`, `true`, `null`), except
    that a text setting keeps the word as written: YAML 1.1 would read `data.prepared=off` as false
    and `data.spec=0123` as 83."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise YingsheError(f"override {item!r} is not key=value", "write e.g. optim.lr=0.01")
        dotted = resolve_key(config, key.strip())
        set_value(config, dotted, parse_value(text, leaf_hint(config, dotted)))


def leaf_hint(config: RunConfig, dotted: str) -> Any:
    section_name, name = dotted.split(".", 1)
    return typing.get_type_hints(type(getattr(config, section_name)))[name]


def parse_value(text: str, hint: Any) -> Any:
    """An override's text as the value its key's type expects."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if text.strip() in ("null", "~", "None") and type(None) in args:
        return None
    if any(arg is str or is_text_literal(arg) for arg in args):
        return unquote(text)
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def is_text_literal(hint: Any) -> bool:
    return typing.get_origin(hint) is Literal and all(isinstance(a, str) for a in typing.get_args(hint))


def choices(hint: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal setting (also inside `X | None`), else ()."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((choices(a) for a in typing.get_args(hint) if choices(a)), ())
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def key_choices(key: str) -> tuple[Any, ...]:
    """`key_choices("optim.name")` → the optimiser names; what the CLI offers as `choices`."""
    return choices(leaf_hint(RunConfig(), key))


def unquote(text: str) -> str:
    """`"off"` or `'off'` (quoted the way YAML forces a string) is the word off; other text is kept."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


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
    if origin is Literal:
        allowed = typing.get_args(hint)
        for option in allowed:  # a bool is never an int choice; "3" from a file is 3 for an int choice
            same = (type(option) is type(value) and option == value) or str(option) == str(value) != ""
            if same and not isinstance(value, bool):
                return option
        key = where.rsplit(": ", 1)[-1]
        near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
        raise YingsheError(
            f"{where} must be one of {', '.join(map(str, allowed))}; got {value!r}",
            f"write e.g. {key}={near[0] if near else allowed[0]}",
        )
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise YingsheError(f"{where} must be a mapping, got {value!r}", "write e.g. {width: 32}")
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
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise YingsheError(
        f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}",
        "write a value of that type",
    )


@dataclass(frozen=True)
class Range:
    """The allowed interval of a number setting; `open_low`/`open_high` exclude the end itself."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            return False
        return self.high is None or not (x > self.high or (self.open_high and x == self.high))

    def text(self) -> str:
        low = None if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        return " and ".join(part for part in (low, high) if part) or "finite"


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)
FRACTION = Range(0, 1, open_high=True)
PROBABILITY = Range(0, 1)

# every number setting's allowed range (None is always allowed where the type says `| None`)
RANGES: dict[str, Range] = {
    "data.image_size": AT_LEAST_1,
    "data.limit_train": AT_LEAST_1,
    "data.limit_test": AT_LEAST_1,
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.cv_folds": Range(2),
    "data.cv_fold": AT_LEAST_1,
    "data.workers": NOT_NEGATIVE,
    "data.max_file_mb": POSITIVE,
    "data.max_pixels": AT_LEAST_1,
    "data.crop_pct": Range(0, 1, open_low=True),
    "augment.crop_padding": NOT_NEGATIVE,
    "augment.rotate": Range(0, 180),
    "augment.translate": PROBABILITY,
    "augment.scale": FRACTION,
    "augment.erasing": PROBABILITY,
    "augment.mixup": NOT_NEGATIVE,
    "augment.cutmix": NOT_NEGATIVE,
    "augment.rrc_scale": Range(0, 1, open_low=True),
    "augment.progressive_min": Range(4),
    "augment.progressive_until": Range(0, 1, open_low=True, open_high=True),
    "optim.lr": POSITIVE,
    "optim.weight_decay": NOT_NEGATIVE,
    "optim.momentum": Range(0, 1, open_high=True),
    "optim.muon_lr": POSITIVE,
    "optim.muon_momentum": Range(0, 1, open_high=True),
    "optim.warmup_epochs": NOT_NEGATIVE,
    "optim.step_epochs": AT_LEAST_1,
    "optim.gamma": POSITIVE,
    "optim.label_smoothing": FRACTION,
    "optim.bias_lr_scale": POSITIVE,
    "train.tta_translate": Range(0, 4),
    "optim.grad_clip": POSITIVE,
    "train.epochs": POSITIVE,
    "train.max_steps": AT_LEAST_1,
    "train.checkpoint_every": AT_LEAST_1,
    "train.val_every": NOT_NEGATIVE,
    "train.batch_size": AT_LEAST_1,
    "train.eval_batch_size": AT_LEAST_1,
    "train.patience": AT_LEAST_1,
    "train.ema": Range(0, 1, open_low=True, open_high=True),
}


def check_range(key: str, value: Any, where: str | None = None) -> None:
    """A number outside its key's range (or NaN/inf for any float) is an error naming the range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bound = RANGES.get(key, Range())
    if not math.isfinite(value) or not bound.allows(value):
        raise YingsheError(
            f"{where or key} must be {bound.text()}; got {value!r}",
            f"set {key} to a value {bound.text()}",
        )


def validate(config: RunConfig, source: str = "config") -> RunConfig:
    """Check every setting of a config built in code (`RunConfig(...)` skips `set_value`): types,
    choices, ranges and the rules between keys. Returns the config for chaining."""
    for key in leaf_keys(config):
        section_name, name = key.split(".", 1)
        value = getattr(getattr(config, section_name), name)
        where = f"{source}: {key}"
        coerce(value, leaf_hint(config, key), where)
        check_range(key, value, where)
    data = config.data
    if data.cv_folds is not None and data.cv_fold > data.cv_folds:
        raise YingsheError(
            f"{source}: data.cv_fold must be <= data.cv_folds ({data.cv_folds}); got {data.cv_fold}",
            f"choose a fold from 1 to {data.cv_folds}",
        )
    if data.val_fraction + data.test_fraction >= 1:
        raise YingsheError(
            f"{source}: data.val_fraction + data.test_fraction must be < 1; got "
            f"{data.val_fraction:g} + {data.test_fraction:g}",
            "leave some images to train on",
        )
    if config.augment.alternate_flip and config.augment.random_resized_crop:
        raise YingsheError(
            f"{source}: augment.alternate_flip applies to the padded crop, not to "
            "augment.random_resized_crop (whose boxes draw their own mirror)",
            "drop augment.alternate_flip, or set augment.random_resized_crop=false",
        )
    if config.augment.crop_resize == "opencv" and importlib.util.find_spec("cv2") is None:
        raise YingsheError(
            f"{source}: augment.crop_resize=opencv needs OpenCV, which is not installed",
            "pip install opencv-python-headless (or yingshe[opencv]), or set augment.crop_resize=auto",
        )
    if config.optim.name == "muon" and (config.finetune.source or config.model.pretrained):
        raise YingsheError(
            f"{source}: optim.name=muon does not train pretrained weights (it rescales every filter "
            "bank to a fixed norm before each step)",
            "fine-tune with optim.name=sgd or adamw, or train from scratch (model.pretrained=false)",
        )
    return config


def describe(config: RunConfig | None = None) -> list[dict[str, str]]:
    """Every key with its type, default and meaning: `yingshe config` prints it, docs/config.md is it.

    The meaning is the comment after the field in this file, so it is written once, beside the
    field, and cannot drift from it."""
    config = config or RunConfig()
    rows = []
    for section in dataclasses.fields(config):
        obj = getattr(config, section.name)
        comments = field_comments(type(obj))
        hints = typing.get_type_hints(type(obj))
        for leaf in dataclasses.fields(obj):
            key = f"{section.name}.{leaf.name}"
            bound = RANGES.get(key)
            rows.append(
                {
                    "key": key,
                    "type": type_text(hints[leaf.name]),
                    "default": yaml.safe_dump(getattr(obj, leaf.name), default_flow_style=True)
                    .strip()
                    .removesuffix("...")
                    .strip(),
                    "range": bound.text() if bound else "",
                    "meaning": comments.get(leaf.name, ""),
                }
            )
    return rows


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # meaning` lines of a dataclass's source → {name: meaning}."""
    import inspect
    import re

    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")
    found = {}
    for line in inspect.getsource(cls).splitlines():
        match = pattern.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def type_text(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return "{" + ", ".join(map(str, typing.get_args(hint))) + "}"
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def config_markdown() -> str:
    """docs/config.md: the `describe()` table as Markdown (`yingshe config --markdown` prints it)."""
    lines = [
        "# Configuration keys",
        "",
        "Generated by `yingshe config --markdown > docs/config.md` from `src/yingshe/config.py` (the",
        "comment beside each field is its meaning; a test fails when this file is stale). Set a key in",
        "a `--config` YAML file (`section:` then `key: value`) or as `section.key=value` after the flags;",
        "a bare key works where it is unique (`lr=0.01`). Text keys keep their words as written",
        "(`data.prepared=off`); `null` means None.",
        "",
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in describe():
        cells = [f"`{row['key']}`", row["type"], f"`{row['default']}`", row["range"], row["meaning"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# Classes shown per image by `predict` (API and CLI) and the HTTP service, unless asked otherwise.
DEFAULT_TOP_K = 3
