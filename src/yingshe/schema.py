"""The checkpoint's and the report's fields, declared once.

Checkpoints are typed records with `to_dict`/`from_dict`; a report (report.json) is a
`Report` TypedDict, since it is JSON through and through and is written once.

On disk a checkpoint stays a flat dict of tensors and plain data (what
`torch.load(weights_only=True)` accepts): `format` and `version` first, then the metadata that
makes it usable on its own (`model`, `classes`, `channels`, `image_size`, `mean`, `std`,
`flip_invariant`, `data`), the weights, and what `--resume` needs. Code reads the typed records,
never the dict's keys, so a field is renamed or added here and nowhere else. `runs.save_checkpoint`
and `runs.load_checkpoint` are the only writer and reader; `from_dict` checks the version.

This is a leaf module: it imports nothing of yingshe but errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from yingshe.errors import YingsheError

CHECKPOINT_FORMAT = "yingshe-checkpoint"
CHECKPOINT_VERSION = 1  # raise when a field changes meaning; from_dict refuses newer versions
REPORT_FORMAT = "yingshe-report"
REPORT_VERSION = 1  # report.json files written before the field existed count as version 1


def _need(payload: dict[str, Any], key: str, source: str) -> Any:
    if key not in payload:
        raise YingsheError(
            f"{source} is a yingshe checkpoint without its {key!r} field (damaged or hand-edited)",
            "use the best.pt or last.pt a yingshe run wrote, unchanged",
        )
    return payload[key]


@dataclass
class ModelRecord:
    """What `models.create_model` needs to rebuild the network the weights belong to."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kwargs": dict(self.kwargs),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "image_size": self.image_size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> ModelRecord:
        return cls(
            _need(d, "name", source),
            int(_need(d, "num_classes", source)),
            int(_need(d, "in_chans", source)),
            int(_need(d, "image_size", source)),
            dict(d.get("kwargs") or {}),
        )


@dataclass
class DataRecord:
    """Which data the run was trained on, and a fingerprint of how it was split."""

    spec: str
    description: str = ""
    splits: str | None = None  # api.splits_fingerprint: resume/evaluate check the data still splits so

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "description": self.description, "splits": self.splits}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataRecord:
        return cls(d.get("spec", ""), d.get("description", ""), d.get("splits"))


@dataclass
class CheckpointMeta:
    """What a checkpoint needs besides weights to be used on its own (predict, evaluate, export)."""

    model: ModelRecord
    classes: list[str]
    channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    flip_invariant: bool = True  # a mirror image is the same class (not so for digits)
    data: DataRecord | None = None
    task: str = "multiclass"  # or "multilabel": sigmoid scores, every label above its threshold
    thresholds: list[float] | None = None  # multi-label: per-label thresholds tuned on validation
    resize: int | None = None  # short side before the centre `image_size` crop (data.crop_pct); None: none

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "flip_invariant": self.flip_invariant,
            "data": self.data.to_dict() if self.data is not None else None,
            "task": self.task,
            "thresholds": list(self.thresholds) if self.thresholds is not None else None,
            **({"resize": self.resize} if self.resize else {}),  # only where there is a centre crop
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        data = d.get("data")
        return cls(
            ModelRecord.from_dict(_need(d, "model", source), source),
            list(_need(d, "classes", source)),
            int(_need(d, "channels", source)),
            int(_need(d, "image_size", source)),
            [float(v) for v in _need(d, "mean", source)],
            [float(v) for v in _need(d, "std", source)],
            bool(d.get("flip_invariant", True)),
            DataRecord.from_dict(data) if data else None,
            str(d.get("task") or "multiclass"),  # checkpoints from before multi-label: single-label
            [float(t) for t in d["thresholds"]] if d.get("thresholds") is not None else None,
            int(d["resize"]) if d.get("resize") else None,  # checkpoints from before crop_pct: none
        )


@dataclass
class Checkpoint:
    """A whole checkpoint: the metadata, the (EMA, where on) weights, and the loop's state.

    `best.pt` has no optimiser state and no raw weights; `last.pt` has both, so `--resume`
    continues exactly.
    """

    meta: CheckpointMeta
    state_dict: dict[str, Any]  # name → tensor: the weights that are evaluated and served
    config: dict[str, Any]  # RunConfig.to_dict() of the run
    fit_state: dict[str, Any] = field(default_factory=dict)  # trainer.FitState.to_dict()
    metrics: dict[str, Any] = field(default_factory=dict)  # the epoch's metrics.csv row
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None  # {"cpu": tensor, "cuda": [tensor, ...]}
    raw_state_dict: dict[str, Any] | None = None  # the trained weights under an EMA
    version: int = CHECKPOINT_VERSION
    notes: list[str] = field(default_factory=list)  # what loading found (not stored): a fallback

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch rows up to this checkpoint's epoch."""
        return list(self.fit_state.get("history") or [])

    @property
    def train_config(self) -> dict[str, Any]:
        return dict(self.config.get("train") or {})

    def to_dict(self) -> dict[str, Any]:
        """The flat on-disk form: tensors and plain data only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": self.version,
            **self.meta.to_dict(),
            "state_dict": self.state_dict,
            "raw_state_dict": self.raw_state_dict,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "fit_state": self.fit_state,
            "rng": self.rng,
            "metrics": self.metrics,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, payload: Any, source: str = "checkpoint") -> Checkpoint:
        """Check the format and version, then read every field; anything else is refused."""
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise YingsheError(
                f"{source} is a PyTorch file but not a yingshe checkpoint",
                "train with `yingshe train` or pass a checkpoint it wrote",
            )
        version = payload.get("version")
        if not isinstance(version, int) or version < 1:
            raise YingsheError(
                f"{source} has no valid checkpoint version ({version!r})",
                "use the best.pt or last.pt a yingshe run wrote, unchanged",
            )
        if version > CHECKPOINT_VERSION:
            raise YingsheError(
                f"{source} was written by a newer yingshe (checkpoint version {version}; "
                f"this one reads up to {CHECKPOINT_VERSION})",
                "upgrade yingshe (pip install -U yingshe) to read it",
            )
        return cls(
            CheckpointMeta.from_dict(payload, source),
            _need(payload, "state_dict", source),
            dict(_need(payload, "config", source)),
            dict(payload.get("fit_state") or {}),
            dict(payload.get("metrics") or {}),
            payload.get("optimizer"),
            payload.get("scaler"),
            payload.get("rng"),
            payload.get("raw_state_dict"),
            version,
        )


class TrainingSummary(TypedDict):
    """report["training"]: how the run that produced the evaluated checkpoint went."""

    epochs_run: int
    steps: int
    best_epoch: int | None
    monitor: str
    best: float | None
    stop_reason: str
    seconds: float
    device: str
    notes: list[str]  # what the run met on the way, e.g. a damaged last.pt a resume did not use


class ModelSummary(TypedDict):
    name: str
    parameters: int
    checkpoint: str


class DataSummary(TypedDict, total=False):
    spec: str
    description: str
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    notes: list[str]


class Report(TypedDict, total=False):
    """report.json of one evaluated split (`train` and `evaluate` write it). Beside these fields
    it holds one float per row of the metric table (`evaluate.metrics.METRICS`: accuracy, loss,
    ...) that the split has, at the top level."""

    format: str  # REPORT_FORMAT
    version: int  # REPORT_VERSION
    title: str
    split: str
    classes: list[str]
    num_train: int
    num_val: int
    num_test: int  # images evaluated
    skipped_files: int
    skipped: list[str]
    data: DataSummary
    model: ModelSummary
    training: TrainingSummary  # train only
    validation: dict[str, float]  # train with a validation split: the metric table's figures on it
    time_budget: dict[str, Any]  # train with train.time_budget: budget, spent, plan (train/budget.py)
    tuning: dict[str, Any]  # a tuning trial's run: {trial, state: complete|pruned, value|pruned_after_epoch}
    config: dict[str, Any]
    per_class: list[dict[str, Any]]
    confusion_matrix: list[list[int]]  # single-label only
    task: str  # "multilabel" where the split is multi-label (absent: single-label)
    thresholds: list[float]  # multi-label: the per-label thresholds the figures were measured at
    calibration: dict[str, list[float]]
    confused_pairs: list[dict[str, Any]]
    plots: list[str]
    versions: dict[str, str]


def check_report(report: Any, source: str = "report") -> Report:
    """`report` as a `Report`, after checking it is one this yingshe reads."""
    if not isinstance(report, dict) or report.get("format", REPORT_FORMAT) != REPORT_FORMAT:
        raise YingsheError(f"{source} is not a yingshe evaluation report", "pass a run folder")
    if "accuracy" not in report:
        raise YingsheError(f"{source} is not a yingshe evaluation report", "pass a run folder")
    version = report.get("version", 1)
    if not isinstance(version, int) or version > REPORT_VERSION:
        raise YingsheError(
            f"{source} was written by a newer yingshe (report version {version!r}; "
            f"this one reads up to {REPORT_VERSION})",
            "upgrade yingshe (pip install -U yingshe) to read it",
        )
    return report  # type: ignore[return-value]
