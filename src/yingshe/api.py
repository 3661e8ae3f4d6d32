"""The Python API the CLI is a thin shell over: train, evaluate, load, inspect.

A notebook user calls these directly; nothing here parses arguments or prints.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yingshe.config import DataConfig, RunConfig, load_config, save_yaml, set_value, validate
from yingshe.data import pack
from yingshe.data.augment import BatchAugment, Normalize, per_image_policy
from yingshe.data.crop import checkpoint_crop_pct, photo_training, resolve_crop_pct, stored_side
from yingshe.data.dataset import (
    DatasetSpec,
    build_dataset,
    fit_split,
    read_spec,
    stage_rng,
)
from yingshe.data.loader import DeviceBatches, SplitDataset, make_batches
from yingshe.data.prepare import prepare_source, slice_of
from yingshe.data.splits import Split, stratified_subset
from yingshe.errors import YingsheError
from yingshe.evaluate.explain import Explanation, explain_images
from yingshe.evaluate.figures import (
    CONFUSION,
    CONFUSION_NORMALISED,
    CURVES,
    ERRORS,
    LABEL_CONFUSION,
    LABEL_PR,
    RELIABILITY,
    report_figures,
    run_history,
)
from yingshe.evaluate.metrics import Predictions, full_metrics, headline, predict_batches
from yingshe.evaluate.multilabel import tune_thresholds
from yingshe.evaluate.report import write_report
from yingshe.inference import Classifier, ImageClassifier, model_from_checkpoint
from yingshe.models import count_parameters, create_model
from yingshe.models.probe import check_input_size, check_progressive_side
from yingshe.models.tta import flip_tta_applies
from yingshe.outputs import (
    check_report_folder,
    check_run_folder,
    claim_report_folder,
    claim_run_folder,
    releases_claims,
)
from yingshe.runs import (
    RunDir,
    atomic_write_text,
    default_run_dir,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
)
from yingshe.runtime import resolve_device, reuse_cpu_memory, seed_everything
from yingshe.schema import Checkpoint, CheckpointMeta, DataRecord, ModelRecord, Report, TrainingSummary
from yingshe.train import distributed
from yingshe.train.balance import check_balance, sample_weights
from yingshe.train.budget import attach_budget, find_budget, parse_duration
from yingshe.train.callbacks import Callback, EarlyStopping, TensorBoardLogger
from yingshe.train.progress import ProgressBar, log_header
from yingshe.train.trainer import FitState, Trainer, autocast_dtype, unwrap

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    report: Report

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]


def checkpoint_meta(cfg: RunConfig, data: DatasetSpec) -> CheckpointMeta:
    """What a checkpoint needs besides weights to be used on its own."""
    return CheckpointMeta(
        model=ModelRecord(
            cfg.model.name, data.num_classes, data.channels, data.image_size, dict(cfg.model.kwargs)
        ),
        classes=list(data.classes),
        channels=data.channels,
        image_size=data.image_size,
        mean=list(data.mean),
        std=list(data.std),
        flip_invariant=data.flip_invariant,
        data=DataRecord(cfg.data.spec, data.description, splits_fingerprint(data)),
        task=data.task,
        resize=data.resize,
    )


def splits_fingerprint(data: DatasetSpec) -> str:
    """A hash of the split sizes and label sequences. If the source changes under a run (files
    added or removed, or prepared shards that dropped unreadable images, which shifts the seeded
    hold-outs), resuming or evaluating it would silently cut other splits; this detects it."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        labels = np.zeros(0, dtype=np.int64) if split is None else split.labels
        digest.update(len(labels).to_bytes(8, "little") + np.ascontiguousarray(labels, np.int64).tobytes())
    return digest.hexdigest()[:16]


def check_same_splits(meta: CheckpointMeta, data: DatasetSpec, where: str) -> None:
    expected = meta.data.splits if meta.data is not None else None
    if expected and expected != splits_fingerprint(data):
        raise YingsheError(
            f"the data of {where} no longer splits as it did in training (files added or removed, "
            "prepared shards without the unreadable images, or multi-label data split by a yingshe from "
            "before iterative stratification): its test images could have been trained on",
            "evaluate on an explicit --data, or train a new run; data.prepared=off reads the original files",
        )


def eval_batches(
    split: Split,
    data: DatasetSpec | CheckpointMeta,
    cfg: RunConfig,
    device: torch.device,
    normalize: Normalize,
    channels_last: bool,
    rank: int = 0,
    world: int = 1,
) -> DeviceBatches:
    """Batches of a split in order; with (rank, world), this rank's share of it. Images are read
    at the stored side and centre-cropped to the image size (data.crop_pct; data/crop.py)."""
    batch_size = max(1, (cfg.train.eval_batch_size or 2 * cfg.train.batch_size) // world)
    batches = make_batches(
        split,
        stored_side(data),
        data.channels,
        batch_size,
        train=False,
        workers=cfg.data.workers,
        rank=rank,
        world=world,
    )
    crop = data.image_size
    return DeviceBatches(batches, split, device, normalize, None, channels_last, cfg.data.strict, crop)


@dataclass
class TrainingSession:
    """Everything one training run is built from: the `build` step's result, which `fit` and
    `final_report` use."""

    cfg: RunConfig
    run: RunDir
    data: DatasetSpec
    device: torch.device
    channels_last: bool
    model: nn.Module  # the plain model (the trainer may hold a compiled wrapper of it)
    normalize: Normalize
    train_batches: DeviceBatches
    val_batches: DeviceBatches
    trainer: Trainer


@releases_claims
def train(
    config: RunConfig | None = None,
    callbacks: list[Callback] | None = None,
    resume: str | Path | None = None,
    epochs: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a classifier and evaluate its best checkpoint on the test split.

    With `resume`, continue the run in that folder from its last.pt (optionally to a new number
    of `epochs`; see `train.optim.SchedulePlan` for what a longer run's schedule does); the run's
    own config is used, so the continuation matches the original. `progress` shows a tqdm bar per
    epoch (a widget in a notebook); what the run is doing is logged at INFO on the `yingshe`
    loggers (the header, each epoch, evaluating, drawing).


    Launched by `torchrun`, this is one rank of a DistributedDataParallel run
    (train/distributed.py); a group restarted by `torchrun --max-restarts` resumes its run.
    """
    started = time.perf_counter()
    cfg, resumed = resolve_training(config, resume, epochs)
    cfg.train.out = str(cfg.train.out or default_run_dir(cfg.data.spec, cfg.model.name))
    if distributed.env_context().is_main:  # under torchrun rank 0 alone creates the folder
        check_run_folder(cfg.train.out, resumed is not None, cfg.train.exist_ok)  # creates nothing
    budget = parse_duration(cfg.train.time_budget)  # a malformed budget fails before any work
    try:
        session = build_training(cfg, resumed, callbacks, progress)
        if budget is not None:  # steps and schedule fitted to the wall time left (train/budget.py)
            test_and_val = len(session.data.test) + (
                len(session.data.val) if session.data.val is not None else 0
            )
            attach_budget(session.trainer, budget, started, test_and_val)
        state = fit_training(session, resumed)
        return report_training(session, state, started)
    except RuntimeError as err:  # under torchrun: a collective failed, or DDP missed gradients
        if not distributed.active():
            raise
        if (unused := distributed.unused_parameters_error(err, cfg.train.find_unused_parameters)) is not None:
            raise unused from err
        if not distributed.collective_failure(err):
            raise
        raise distributed.lost_peer_error(err, cfg.train.dist_timeout) from err
    finally:
        distributed.shutdown()


def resolve_training(
    config: RunConfig | None, resume: str | Path | None, epochs: float | None
) -> tuple[RunConfig, Checkpoint | None]:
    """Step 1: the config to run and, when resuming, the last.pt it continues from."""
    resumed = None
    resume = resume if resume is not None else elastic_resume(config)
    if resume is not None:
        resume = Path(resume)
        folder = RunDir(resume.parent if resume.is_file() else resume)  # a run folder or its last.pt
        resumed, cfg = resume_point(folder)
        cfg.train.out = str(folder.root)
    else:
        cfg = config or RunConfig()
    if epochs is not None:
        set_value(cfg, "train.epochs", epochs, "epochs")
    validate(cfg)
    return cfg, resumed


def elastic_resume(config: RunConfig | None) -> Path | None:
    """The run folder a group restarted by `torchrun --max-restarts` continues: its `train.out`,
    once a last.pt is there (before the first epoch ends there is nothing to resume: it starts over)."""
    if distributed.env_context().world <= 1 or distributed.max_restarts() == 0:
        return None
    out = config.train.out if config is not None else None
    if out is None:
        raise YingsheError(
            "torchrun --max-restarts needs a fixed run folder to resume from",
            "give --out RUN_DIR (every restart of the group continues that run)",
        )
    last = RunDir(Path(out)).last
    if distributed.restart_count() > 0 and last.is_file():
        log.warning("torchrun restart %d: resuming %s", distributed.restart_count(), last)
        return Path(out)
    return None


def resume_point(folder: RunDir) -> tuple[Checkpoint | None, RunConfig]:
    """The checkpoint to continue from (last.pt, or last.prev.pt when last.pt is damaged; the
    reason becomes a note of the report) and its config. A run killed before its first
    checkpoint starts again from its config.yaml: the same run, from the beginning."""
    resumed, notes = load_resume_checkpoint(folder)
    if resumed is not None:
        resumed.notes = notes
        return resumed, RunConfig.from_dict(resumed.config, source=str(folder.last))
    if not folder.config.is_file():
        raise YingsheError(
            f"{folder.root} holds no last.pt or config.yaml to resume from",
            "pass the folder of a run `yingshe train` started",
        )
    cfg = load_config(folder.config)
    cfg.train.exist_ok = True  # its own folder, which holds its config.yaml (and maybe metrics.csv)
    return None, cfg


def uses_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """channels-last memory where it was measured faster (CUDA, and the CPU: 1.04-1.25x for the
    built-in conv nets' training step, the ViT unchanged; `bench/cpu_levers.py`), or as
    configured."""
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last
    return device.type in ("cuda", "cpu")


def build_model(cfg: RunConfig, data: DatasetSpec, device: torch.device, channels_last: bool) -> nn.Module:
    """The configured model for `data`, its input size checked, on `device` in its memory format."""
    model = create_model(
        cfg.model.name,
        data.num_classes,
        data.channels,
        data.image_size,
        cfg.model.pretrained,
        **cfg.model.kwargs,
    )
    check_input_size(model, cfg.model.name, data.channels, data.image_size)
    check_progressive_side(model, cfg.model.name, data.channels, data.image_size, cfg.augment.progressive_min)
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def build_training(
    cfg: RunConfig, resumed: Checkpoint | None, callbacks: list[Callback] | None, progress: bool = True
) -> TrainingSession:
    """Step 2: data, model, batches, run folder and trainer, in the order that fails cheapest
    first (the run folder is created only once the data, model and batches are built, so a run
    that cannot be built leaves nothing behind)."""
    world = distributed.env_context().world
    per_rank = distributed.per_rank_batch(cfg.train.batch_size, world)  # before any data is read
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    plan = None
    if cfg.finetune.source:  # transfer learning: the source shapes the data and brings weights
        from yingshe.transfer.finetune import FinetunePlan

        plan = FinetunePlan(cfg)
        if resumed is None:
            plan.shape_config(cfg.data.image_size)
    known_stats = (resumed.meta.mean, resumed.meta.std) if resumed is not None else None
    if plan is not None and known_stats is None:
        known_stats = plan.stats
    log.info("reading %s …", cfg.data.spec)
    resolve_crop_pct(cfg)  # before config.yaml is written: it records the crop it evaluates with
    data = build_dataset(cfg.data, cfg.train.seed, stats=known_stats)
    if resumed is not None:
        check_same_splits(resumed.meta, data, str(cfg.train.out))
    if data.multilabel and cfg.train.monitor == "val_accuracy":  # the default: subset accuracy at 0.5
        cfg.train.monitor = "val_map"  # is a coarse pick of the best epoch; mAP ranks, thresholds aside
        log.info("multi-label data: train.monitor=val_map chooses the best epoch")
    ctx, device = distributed.setup(cfg.train.device, cfg.train.dist_timeout)
    if ctx.enabled:
        distributed.check_sync_bn(cfg.train.sync_bn, device)
    if device.type == "cpu" and cfg.train.reuse_cpu_memory and reuse_cpu_memory():
        log.debug("CPU allocator: freed memory kept for reuse (train.reuse_cpu_memory)")
    channels_last = uses_channels_last(cfg, device)
    model = build_model(cfg, data, device, channels_last)
    normalize = Normalize(data.mean, data.std)
    train_batches = training_batches(cfg, data, device, normalize, channels_last, per_rank, ctx)
    val_split = data.val if data.val is not None else data.test
    val_batches = eval_batches(val_split, data, cfg, device, normalize, channels_last, ctx.rank, ctx.world)
    # fine-tuning: the source's body weights, and the never-trained stages frozen before DDP wraps
    schedule = plan.prepare(model, resumed=resumed is not None) if plan is not None else None
    # parameters without a gradient in some steps (a gradual fine-tune's stages until their epoch,
    # or a model that skips some): DDP must look for them instead of waiting
    find_unused = cfg.train.find_unused_parameters or (schedule is not None and schedule.plan.unfreezes_later)
    train_model = distributed.wrap(model, device, cfg.train.sync_bn, find_unused)  # DDP under torchrun
    model = unwrap(train_model)  # with sync_bn, the converted model
    run = open_ranked_run_folder(cfg, resumed is not None, ctx)
    if plan is not None and ctx.is_main and resumed is None:  # a resume keeps the record of its start
        plan.record(run.root)  # finetune.json
    if ctx.is_main:
        log_header(cfg, data, model, device, run.root)
    # the stage-wise optimiser and its (un)freezing run on every rank: the caller's callbacks run
    # on rank 0 only, and a rank without them would train every stage with another optimiser
    schedules = [schedule] if schedule is not None else []
    train_model = torch.compile(train_model) if cfg.train.compile else train_model  # shares parameters
    trainer = Trainer(
        train_model,
        cfg,
        train_batches,
        val_batches,
        device,
        run,
        checkpoint_meta(cfg, data),
        schedules + training_callbacks(cfg, run, callbacks, progress, ctx.is_main),
    )
    return TrainingSession(
        cfg, run, data, device, channels_last, model, normalize, train_batches, val_batches, trainer
    )


def open_run_folder(cfg: RunConfig, resuming: bool) -> RunDir:
    """The run folder, created and locked for the rest of `train` (`outputs.claim_run_folder`,
    which checks again under the lock that no other run or foreign file is there), with the
    run's config.yaml."""
    run = RunDir(Path(cfg.train.out or default_run_dir(cfg.data.spec, cfg.model.name)))
    claim_run_folder(run.root, resuming, cfg.train.exist_ok)
    cfg.train.out = str(run.root)
    atomic_write_text(run.config, save_yaml(cfg))
    return run


def open_ranked_run_folder(cfg: RunConfig, resuming: bool, ctx: distributed.DistContext) -> RunDir:
    """`open_run_folder` on rank 0; the other ranks take its folder name and wait until it exists."""
    if not ctx.enabled:
        return open_run_folder(cfg, resuming)
    chosen = cfg.train.out or str(default_run_dir(cfg.data.spec, cfg.model.name))
    cfg.train.out = distributed.broadcast_object(chosen)  # rank 0's clock names the folder
    run = open_run_folder(cfg, resuming) if ctx.is_main else RunDir(Path(cfg.train.out))
    distributed.barrier()
    return run


def training_batches(
    cfg: RunConfig,
    data: DatasetSpec,
    device: torch.device,
    normalize: Normalize,
    channels_last: bool,
    batch_size: int | None = None,
    ctx: distributed.DistContext | None = None,
) -> DeviceBatches:
    """Shuffled, augmented training batches on the device; under torchrun, this rank's share of
    the epoch in batches of `batch_size` (its share of the global batch)."""
    ctx = ctx or distributed.DistContext()
    if cfg.augment.random_resized_crop:  # photos: crops of the whole image, not of its centre
        batches, augment = photo_training(
            cfg,
            data.train,
            (data.image_size, stored_side(data), data.channels),
            batch_size or cfg.train.batch_size,
            data.flip_invariant,
            data.num_classes,
            transform=per_image_policy(cfg.augment.policy),
            weights=balanced_sampling(cfg, data),
            rank=ctx.rank,
            world=ctx.world,
            normalize=normalize if device.type == "cpu" else None,  # a GPU normalises the uint8 crops
            channels_last=channels_last,
        )
        return DeviceBatches(batches, data.train, device, normalize, augment, channels_last, cfg.data.strict)
    augment = BatchAugment(cfg.augment, data.image_size, data.flip_invariant, data.num_classes)
    batches = make_batches(
        data.train,
        stored_side(data),
        data.channels,
        batch_size or cfg.train.batch_size,
        train=True,
        seed=cfg.train.seed,
        workers=cfg.data.workers,
        transform=per_image_policy(cfg.augment.policy),
        stream=cfg.data.stream,
        weights=balanced_sampling(cfg, data),
        rank=ctx.rank,
        world=ctx.world,
    )
    strict, crop = cfg.data.strict, data.image_size  # data.crop_pct < 1: the padded crop of the centre
    return DeviceBatches(batches, data.train, device, normalize, augment, channels_last, strict, crop)


def training_callbacks(
    cfg: RunConfig,
    run: RunDir,
    callbacks: list[Callback] | None,
    progress: bool = True,
    main: bool = True,
) -> list[Callback]:
    """The library's progress bar (unless `progress` is off), the caller's callbacks, then those
    the config asks for. Under torchrun the progress bar, the caller's callbacks and TensorBoard
    run on rank 0 only; early stopping on every rank."""
    out = ([ProgressBar()] if progress else []) + list(callbacks or []) if main else []
    if cfg.train.patience:
        out.append(EarlyStopping(cfg.train.patience))
    if cfg.train.tensorboard and main:
        out.append(TensorBoardLogger(str(run.events)))
    return out


def fit_training(session: TrainingSession, resumed: Checkpoint | None) -> FitState:
    """Step 3: the loop, continued from `resumed` where given."""
    if resumed is not None:
        session.trainer.restore(resumed)
    return session.trainer.fit()


def report_training(session: TrainingSession, state: FitState, started: float) -> TrainResult:
    """Step 4: the best checkpoint on the test (and validation) split, written as the report.

    Under torchrun, once every rank is done training, rank 0 evaluates the whole split exactly as
    a single-process `evaluate` of the same weights does (so the report equals it); the other ranks
    return an empty report then rather than wait in a collective that a long evaluation could
    time out (torchrun waits for rank 0 before it exits)."""
    if not distributed.active():
        return write_training_report(session, state, started)
    distributed.part()  # every rank's training is over and rank 0's checkpoints are on disk
    if distributed.is_main():
        return write_training_report(session, state, started)
    return TrainResult(session.run.root, {})  # type: ignore[typeddict-item]


def best_validation(session: TrainingSession, state: FitState, best_path: Path) -> Predictions | None:
    """The loop's last validation predictions where they are best.pt's on the validation split
    (its epoch is the best one), so the report need not predict that split again: a pass over the
    test split saved when `data.val_fraction=0` validates on it. Not under torchrun, where they
    are gathered in rank order rather than in the split's, nor with `train.compile`, whose kernels
    may round differently from the eager model that `evaluate` runs."""
    trainer = session.trainer
    if distributed.active() or session.cfg.train.compile or best_path != session.run.best:
        return None
    return trainer.val_predictions if trainer.val_predictions_epoch == state.best_epoch else None


def write_training_report(session: TrainingSession, state: FitState, started: float) -> TrainResult:
    cfg, run, data, device, model = session.cfg, session.run, session.data, session.device, session.model
    best_path = run.best if run.best.is_file() else run.last
    best = load_checkpoint(best_path)
    model.load_state_dict(best.state_dict)
    amp = autocast_dtype(cfg.train.amp, device)
    tta = session.trainer.tta_flip, session.trainer.tta_translate
    known = best_validation(session, state, best_path)
    if known is not None and data.val is None:  # the loop validated best.pt on the test split
        log.info("%s: test predictions from its epoch's validation pass", run.best.name)
        test_batches, pred = session.val_batches, known
    else:
        log.info("evaluating %s on the test split (%d images) …", run.best.name, len(data.test))
        test_batches = eval_batches(data.test, data, cfg, device, session.normalize, session.channels_last)
        pred = predict_batches(model, test_batches, amp, *tta)
    thresholds, validation, val_pred = None, None, known
    if val_pred is None and (data.multilabel or data.val is not None):
        val_batches = session.val_batches  # under torchrun only this rank's share: take all of it
        if distributed.active():
            val_split = data.val if data.val is not None else data.test
            val_batches = eval_batches(val_split, data, cfg, device, session.normalize, session.channels_last)
        val_pred = predict_batches(model, val_batches, amp, *tta)
    notes = list(session.trainer.resume_notes)
    if data.multilabel:
        thresholds = store_thresholds(best, best_path, val_pred)
        if data.val is None:
            notes.append(THRESHOLDS_ON_TEST)
            log.warning(THRESHOLDS_ON_TEST)
    if data.val is not None:  # the held-out figures cross-validation and tuning read
        validation = headline(full_metrics(val_pred, data.classes, thresholds))
    skipped = {
        **data.skipped,
        **session.train_batches.skipped,
        **session.val_batches.skipped,
        **test_batches.skipped,
    }
    report = split_report(
        f"{cfg.model.name} on {cfg.data.spec}",
        "test",
        pred,
        data.classes,
        (len(data.train), len(data.val) if data.val is not None else 0, len(data.test)),
        skipped,
        data_summary(cfg.data, data),
        {"name": cfg.model.name, "parameters": count_parameters(model), "checkpoint": str(run.best)},
        thresholds,
    )
    report["training"] = TrainingSummary(
        epochs_run=state.epoch,
        steps=state.step,
        best_epoch=state.best_epoch,
        monitor=cfg.train.monitor,
        best=state.best,
        stop_reason=state.stop_reason,
        seconds=round(time.perf_counter() - started, 2),
        device=str(device),
        notes=notes,
    )
    report["config"] = cfg.to_dict()
    if validation is not None:
        report["validation"] = validation
    if (budget := find_budget(session.trainer)) is not None:
        report["time_budget"] = budget.summary()
    publish_report(
        run.root,
        report,
        cfg.train.plots,
        lambda: report_figures(
            run.root, report, pred, model, session.normalize, data.test, test_batches.skipped, state.history
        ),
    )
    return TrainResult(run.root, report)


THRESHOLDS_ON_TEST = (
    "the per-label thresholds were tuned on the test split (data.val_fraction=0), so the test "
    "figures at those thresholds are optimistic; hold out a validation split for unbiased ones"
)


def store_thresholds(best: Checkpoint, path: Path, val_pred: Predictions) -> list[float]:
    """Multi-label: per-label thresholds that maximise each label's F1 on the validation split
    (the split that chose the epoch: the test split where data.val_fraction=0), written into the
    best checkpoint so evaluate, predict and serve decide as tuned."""
    best.meta.thresholds = tune_thresholds(val_pred.logits.float().sigmoid(), val_pred.labels)
    save_checkpoint(path, best)
    return best.meta.thresholds


def balanced_sampling(cfg: RunConfig, data: DatasetSpec) -> np.ndarray | None:
    """Per-image draw probabilities for train.balance=sampler, else None (a plain shuffle)."""
    if check_balance(cfg.train.balance) != "sampler":
        return None
    if data.multilabel:
        raise YingsheError(
            "train.balance=sampler draws by one class per image; multi-label images have several",
            "use train.balance=weights (per-label positive weights) or none for multi-label data",
        )
    return sample_weights(data.train.labels, data.num_classes)


def data_summary(cfg: DataConfig, data: DatasetSpec) -> dict[str, Any]:
    return {
        "spec": cfg.spec,
        "description": data.description,
        "image_size": data.image_size,
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
        "notes": data.notes,
        **preprocessing_summary(cfg, data),
    }


def preprocessing_summary(cfg: DataConfig, data: DatasetSpec | CheckpointMeta) -> dict[str, Any]:
    """What a report says about the crop, where there is one: the side images were resized to
    before the centre crop (evaluation) and data.crop_pct."""
    if stored_side(data) == data.image_size:
        return {}
    return {"resize": stored_side(data), "crop_pct": cfg.crop_pct}


def split_report(
    title: str,
    split: str,
    pred: Predictions,
    classes: list[str],
    sizes: tuple[int, int, int],
    skipped: dict[str, str],
    data: dict[str, Any],
    model: dict[str, Any],
    thresholds: list[float] | None = None,
) -> Report:
    """The report body `train` and `evaluate` share: metrics of one split plus what it was
    (a multi-label split's at its per-label `thresholds`)."""
    return {
        "title": title,
        "split": split,
        **full_metrics(pred, classes, thresholds),
        "classes": classes,
        "num_train": sizes[0],
        "num_val": sizes[1],
        "num_test": sizes[2],
        "skipped_files": len(skipped),
        "skipped": sorted(skipped.values())[:1000],
        "data": data,
        "model": model,
    }


def publish_report(
    folder: Path, report: dict[str, Any], plots: bool, figures: Callable[[], dict[str, Any]]
) -> None:
    """Write the numbers first (safe on disk before any figure is drawn), then add the figures."""
    write_report(folder, report)
    if plots:
        log.info("drawing the report's figures …")
        report.update(figures())
        write_report(folder, report)


@releases_claims
def evaluate(
    checkpoint: str | Path,
    data: str | None = None,
    split: str = "test",
    out: str | Path | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run (its best.pt) or a checkpoint file on a split of its data or of `data`.

    Classes are matched by name, so a dataset may list them in another order; a class the
    model was not trained on is an error.
    """
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    cfg = RunConfig.from_dict(loaded.config)
    size, channels = meta.image_size, meta.channels
    cfg.data.image_size, cfg.data.channels = size, channels
    cfg.data.crop_pct = checkpoint_crop_pct(size, meta.resize)
    if data == cfg.data.spec:  # naming the training data is asking for its own splits
        data = None
    folder = evaluation_folder(Path(checkpoint), data, split, out)  # checked now, made once written
    if data is None:  # the run's own splits, cut exactly as in training
        dataset = build_dataset(cfg.data, cfg.train.seed, stats=(meta.mean, meta.std))
        check_same_splits(meta, dataset, str(checkpoint))
        chosen = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(split)
        sizes = (len(dataset.train), len(dataset.val) if dataset.val is not None else 0, len(dataset.test))
        description, notes = dataset.description, dataset.notes
        spec = cfg.data.spec
    else:
        chosen, classes, description, notes = other_data_split(
            data, split, cfg.data, stored_side(meta), channels
        )
        sizes, spec = (0, 0, len(chosen) if chosen is not None else 0), data
    if chosen is None:
        raise YingsheError(f"split {split!r} is not available", "use test, val or train")
    if data is None:
        classes = dataset.classes
    chosen = remap_labels(chosen, classes, meta.classes)
    if limit:
        chosen = chosen.subset(stratified_subset(chosen.labels, limit, stage_rng(cfg.train.seed, "evaluate")))
        sizes = (*sizes[:2], len(chosen))
    torch_device = resolve_device(device)
    model = model_from_checkpoint(loaded).to(torch_device)
    normalize = Normalize(meta.mean, meta.std)
    batches = eval_batches(chosen, meta, cfg, torch_device, normalize, False)
    tta = flip_tta_applies(cfg.train.tta_flip, meta.flip_invariant), cfg.train.tta_translate
    pred = predict_batches(model, batches, autocast_dtype(cfg.train.amp, torch_device), *tta)
    claim_report_folder(folder, EVALUATION_FILES, is_evaluation_report, "evaluation")
    summary = {
        "spec": spec,
        "description": description,
        "image_size": size,
        "channels": channels,
        "mean": meta.mean,
        "std": meta.std,
        "notes": notes,
        **preprocessing_summary(cfg.data, meta),
    }
    report = split_report(
        f"{meta.model.name} evaluated on {spec} ({split})",
        split,
        pred,
        meta.classes,
        sizes,
        batches.skipped,
        summary,
        {
            "name": meta.model.name,
            "parameters": count_parameters(model),
            "checkpoint": str(checkpoint),
        },
        meta.thresholds,
    )
    history = run_history(checkpoint, loaded)
    publish_report(
        folder,
        report,
        True,
        lambda: report_figures(folder, report, pred, model, normalize, chosen, batches.skipped, history),
    )
    report["report_dir"] = str(folder)
    return report


def other_data_split(
    spec: str, split: str, run_data: DataConfig, size: int, channels: int
) -> tuple[Split | None, list[str], str, list[str]]:
    """A split of a dataset the model was not trained on, whole: none of the training run's limits
    or hold-outs apply. A source without a test split is evaluated on all of its images."""
    source = read_spec(DataConfig(spec=spec, data_dir=run_data.data_dir, workers=run_data.workers))
    notes = list(source.notes)
    chosen = source.splits.get(split)
    if chosen is None and split == "test" and len(source.splits) == 1:
        ((only_name, chosen),) = source.splits.items()
        notes.append(f"the source has no test split: all {len(chosen)} images of {only_name!r} evaluated")
    if chosen is not None:
        chosen = fit_split(chosen, size, channels)
    return chosen, source.classes, source.description, notes


def evaluation_folder(checkpoint: Path, data: str | None, split: str, out: str | Path | None) -> Path:
    """Where an evaluation's report goes; never over a run's files or files of anything but an
    earlier evaluation. Checks only: the folder is made when the report is written."""
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if out is None:
        name = (
            f"evaluate-{split}"
            if data is None
            else f"evaluate-{Path(data.rstrip('/')).name.split('.')[0]}-{split}"
        )
        folder = run_dir / name
    else:
        folder = Path(out)
    check_report_folder(folder, EVALUATION_FILES, is_evaluation_report, "evaluation")
    return folder


EVALUATION_FILES = (
    "report.json",
    "report.md",
    CURVES,
    CONFUSION,
    CONFUSION_NORMALISED,
    RELIABILITY,
    ERRORS,
    LABEL_CONFUSION,
    LABEL_PR,
)


def is_evaluation_report(report: dict[str, Any]) -> bool:
    """An `evaluate` report.json (which a new evaluation into the same folder replaces)."""
    return "split" in report and "accuracy" in report and "training" not in report


def remap_labels(split: Split, data_classes: list[str], model_classes: list[str]) -> Split:
    if data_classes == model_classes:
        return split
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise YingsheError(
            f"the data has classes the model was not trained on: {unknown[:10]}",
            f"evaluate on data whose class folders are among {model_classes[:20]}",
        )
    mapping = np.array([index[c] for c in data_classes])
    if split.labels.ndim == 2:  # multi-hot columns move to the model's label order
        labels = np.zeros((len(split), len(model_classes)), dtype=np.int64)
        labels[:, mapping] = split.labels
        return Split(labels, images=split.images, files=split.files, packed=split.packed)
    return Split(mapping[split.labels], images=split.images, files=split.files, packed=split.packed)


def load(path: str | Path, device: str = "auto", serving: bool = False) -> ImageClassifier:
    """A trained classifier from a run folder, a checkpoint or an exported `.onnx` file (run by
    ONNX Runtime on the CPU), ready for `.predict(images)`; all share one preprocessing path.
    `serving`: tuned for a server sharing the cores with its event loop (ONNX Runtime's idle
    threads sleep rather than spin)."""
    if Path(path).suffix.lower() == ".onnx":
        from yingshe.export.onnx import OnnxClassifier

        return OnnxClassifier(path, spin=not serving)
    return Classifier.load(path, device)


def explain(
    run: str | Path,
    images: list[str | Path],
    out: str | Path,
    method: str = "auto",
    top_k: int = 3,
    target: str | None = None,
    device: str = "auto",
) -> list[Explanation]:
    """Heat maps of where a run's model looks (Grad-CAM, or saliency for models without a
    convolutional stage), written as overlays with the top-k classes into `out`."""
    return explain_images(Classifier.load(run, device), images, out, method, top_k, target)


def write_samples(
    spec: str,
    out: str | Path,
    count: int = 8,
    split: str = "test",
    data_dir: str | None = None,
    augmented: bool = False,
) -> list[Path]:
    """Write `count` images of a split as PNG files named `<n>_<class>.png`, as the model would see
    them (fitted to the dataset's image size): inputs for `predict`, or a look at the data. Also
    grid.png, a row of examples per class, and with `augmented`, augmented.png (see
    `write_sample_sheets`)."""
    from PIL import Image

    from yingshe.runs import atomic_write_bytes

    data = build_dataset(DataConfig(spec=spec, data_dir=data_dir, val_fraction=0))
    chosen = data.test if split == "test" else data.train
    items = SplitDataset(chosen, data.image_size, data.channels)
    folder, written = Path(out), []
    for i in range(len(chosen)):
        if len(written) == count:
            break
        image, label, _, ok = items[i]
        if not ok:
            continue
        array = image.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, format="PNG")
        name = data.classes[label].replace("/", "-").replace(" ", "_")
        path = folder / f"{len(written):03d}_{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    written.append(write_sample_sheets(data, chosen, folder, split, augmented))
    if augmented:
        written.append(folder / "augmented.png")
    return written


def write_sample_sheets(data: DatasetSpec, chosen: Split, folder: Path, split: str, augmented: bool) -> Path:
    """grid.png: up to 8 images of each class of the split, a row per class; with `augmented`,
    augmented.png: the same images as one training batch after the default augmentation."""
    from yingshe.config import AugmentConfig
    from yingshe.data.samples import contact_sheet, per_class_indices
    from yingshe.runs import atomic_write_bytes

    items = SplitDataset(chosen, data.image_size, data.channels)
    rows, batch, labels = [], [], []
    for c, indices in enumerate(per_class_indices(chosen.labels, len(data.classes), 8)):
        images = []
        for i in indices:
            image, label, _, ok = items[i]
            if ok:
                images.append(image.permute(1, 2, 0).numpy())
                batch.append(image), labels.append(label)
        rows.append((data.classes[c], images))
    paths = {"grid": folder / "grid.png"}
    sheets = {"grid": contact_sheet(rows, f"{split} split: up to 8 images per class")}
    if augmented and batch:
        torch.manual_seed(0)
        augment = BatchAugment(AugmentConfig(), data.image_size, data.flip_invariant, data.num_classes)
        identity = Normalize([0.0] * data.channels, [1 / 255] * data.channels)  # keeps 0–255
        x, _ = augment(torch.stack(batch), torch.tensor(labels), identity)
        out = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        counts = [len(images) for _, images in rows]
        starts = np.cumsum([0, *counts])
        aug_rows = [(name, list(out[a:b])) for (name, _), a, b in zip(rows, starts, starts[1:], strict=False)]
        sheets["augmented"] = contact_sheet(
            aug_rows, "the same images after training augmentation (defaults)"
        )
        paths["augmented"] = folder / "augmented.png"
    for key, sheet in sheets.items():
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        atomic_write_bytes(paths[key], buffer.getvalue())
    return paths["grid"]


def inspect_data(
    spec: str, data_dir: str | None = None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Classes, counts, image sizes and modes, every unreadable file, the split a run will make,
    class imbalance and exact duplicates of a dataset (see `yingshe.data.inspect`)."""
    from yingshe.data.inspect import inspect_source

    return inspect_source(read_spec(DataConfig(spec=spec, data_dir=data_dir)), progress)


def prepare_data(
    spec: str,
    out: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    *,
    fmt: str = "packed",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    workers: int | None = None,
    shard_mb: float = pack.DEFAULT_SHARD_MB,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    jpeg_quality: int | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Decode a dataset once into uint8 shards at the training size (`fmt="packed"`), or write it
    as WebDataset tar shards (`fmt="webdataset"`; with `jpeg_quality`, re-encoded as
    `image_size` square JPEGs at that quality).

    Packed shards go to the cache when `out` is None, where training on `spec` finds them; with
    `out`, the cache is pointed at `out`, so data.prepared=auto finds them there too. An
    interrupted prepare resumes when called again with the same arguments. `num_shards` and
    `shard_index` prepare one slice (N machines in parallel, into one folder); `merge` then
    makes the folder one prepared dataset, identical to a single prepare's.
    """
    started = time.perf_counter()
    cfg = DataConfig(spec=spec, data_dir=data_dir, image_size=image_size, channels=channels)
    options = dict(
        fmt=fmt,
        cache_dir=cache_dir,
        workers=workers,
        shard_mb=shard_mb,
        force=force,
        jpeg_quality=jpeg_quality,
    )
    merging_all = merge and shard_index is None  # --merge may repeat the slices' --num-shards
    options.update(part=None if merging_all else slice_of(num_shards, shard_index), merge=merge)
    summary = prepare_source(read_spec(cfg), out, image_size, channels, progress=progress, **options)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}


# --- what the CLI reaches besides train/evaluate (DESIGN.md: cli.py talks to the api only) -------


def recipe_base(recipe: str, data: DataConfig) -> RunConfig:
    """The defaults with recipe `NAME` (or `NAME:FAMILY`) applied for the family of `data`."""
    from yingshe.recipes import apply_recipe, data_family, parse_recipe

    name, family = parse_recipe(recipe)
    return apply_recipe(RunConfig(), name, family or data_family(data))


def recipe_table() -> list[dict[str, Any]]:
    """Each recipe: name, one-line summary and its overrides per data family."""
    from yingshe.recipes import FAMILIES, list_recipes, recipe_overrides

    return [
        {"name": name, "summary": summary, "families": {f: recipe_overrides(name, f) for f in FAMILIES}}
        for name, summary in list_recipes()
    ]


def model_table(num_classes: int = 10, channels: int = 3, image_size: int = 32) -> list[dict[str, Any]]:
    """Each built-in model: name, parameter count at the given input, summary."""
    from yingshe.models import list_models

    return [
        {
            "name": name,
            "parameters": count_parameters(create_model(name, num_classes, channels, image_size)),
            "summary": summary,
        }
        for name, summary in list_models()
    ]


def cross_validate(*args: Any, **kwargs: Any) -> Any:
    """`yingshe.tune.cv.cross_validate` (imported here: tune/ imports this module)."""
    from yingshe.tune.cv import cross_validate as run

    return run(*args, **kwargs)


def compare_runs(runs: list[str], out: str | Path) -> dict[str, Any]:
    from yingshe.evaluate.compare import compare_runs as compare

    return compare(runs, out)


def expand_paths(paths: list[str]) -> list[Path]:
    from yingshe.inference import expand_paths as expand

    return expand(paths)
