"""The Python API the CLI is a thin shell over: train, evaluate, load, inspect.

A notebook user calls these directly; nothing here parses arguments or prints.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yingshe.config import DataConfig, RunConfig, save_yaml
from yingshe.data import pack
from yingshe.data.augment import BatchAugment, Normalize, per_image_policy
from yingshe.data.dataset import (
    DatasetSpec,
    build_dataset,
    fit_split,
    read_spec,
    stage_rng,
)
from yingshe.data.images import UnreadableImage, decode_image, image_header
from yingshe.data.loader import DeviceBatches, SplitDataset, make_batches
from yingshe.data.prepare import prepare_source
from yingshe.data.splits import Split, stratified_subset
from yingshe.errors import YingsheError
from yingshe.evaluate.explain import Explanation, explain_images
from yingshe.evaluate.figures import report_figures, run_history
from yingshe.evaluate.metrics import Predictions, full_metrics, headline, predict_batches
from yingshe.evaluate.report import write_report
from yingshe.inference import Classifier, model_from_checkpoint
from yingshe.models import count_parameters, create_model
from yingshe.models.tta import flip_tta_applies
from yingshe.runs import RunDir, atomic_write_text, default_run_dir, load_checkpoint
from yingshe.runtime import resolve_device, seed_everything
from yingshe.schema import Checkpoint, CheckpointMeta, DataRecord, ModelRecord, Report, TrainingSummary
from yingshe.train import distributed
from yingshe.train.callbacks import Callback, EarlyStopping, TensorBoardLogger
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
            "or prepared shards without the unreadable images): its test images could have been trained on",
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
    """Batches of a split in order; with (rank, world), this rank's share of it."""
    batch_size = max(1, (cfg.train.eval_batch_size or 2 * cfg.train.batch_size) // world)
    batches = make_batches(
        split,
        data.image_size,
        data.channels,
        batch_size,
        train=False,
        workers=cfg.data.workers,
        rank=rank,
        world=world,
    )
    return DeviceBatches(batches, split, device, normalize, None, channels_last, cfg.data.strict)


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


def train(
    config: RunConfig | None = None,
    callbacks: list[Callback] | None = None,
    resume: str | Path | None = None,
    epochs: int | None = None,
) -> TrainResult:
    """Train a classifier and evaluate its best checkpoint on the test split.

    With `resume`, continue the run in that folder from its last.pt (optionally to a new number
    of `epochs`; see `train.optim.SchedulePlan` for what a longer run's schedule does); the run's
    own config is used, so the continuation matches the original.

    Launched by `torchrun`, this is one rank of a DistributedDataParallel run
    (train/distributed.py); a group restarted by `torchrun --max-restarts` resumes its run.
    """
    started = time.perf_counter()
    cfg, resumed = resolve_training(config, resume, epochs)
    try:
        session = build_training(cfg, resumed, callbacks)
        state = fit_training(session, resumed)
        return report_training(session, state, started)
    except RuntimeError as err:  # a collective failed: a peer died, hung or timed out
        if not distributed.active() or not distributed.collective_failure(err):
            raise
        raise distributed.lost_peer_error(err, cfg.train.dist_timeout) from err
    finally:
        distributed.shutdown()


def resolve_training(
    config: RunConfig | None, resume: str | Path | None, epochs: int | None
) -> tuple[RunConfig, Checkpoint | None]:
    """Step 1: the config to run and, when resuming, the last.pt it continues from."""
    resumed = None
    resume = resume if resume is not None else elastic_resume(config)
    if resume is not None:
        resume = Path(resume)
        folder = RunDir(resume.parent if resume.is_file() else resume)  # a run folder or its last.pt
        resumed = load_checkpoint(folder.last)
        cfg = RunConfig.from_dict(resumed.config, source=str(folder.last))
        cfg.train.out = str(folder.root)
    else:
        cfg = config or RunConfig()
    if epochs is not None:
        cfg.train.epochs = epochs
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


def build_training(
    cfg: RunConfig, resumed: Checkpoint | None, callbacks: list[Callback] | None
) -> TrainingSession:
    """Step 2: data, run folder, model, batches and trainer, in the order that fails cheapest
    first (the data is read and checked before the run folder is touched)."""
    world = distributed.env_context().world
    per_rank = distributed.per_rank_batch(cfg.train.batch_size, world)  # before any data is read
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    known_stats = (resumed.meta.mean, resumed.meta.std) if resumed is not None else None
    data = build_dataset(cfg.data, cfg.train.seed, stats=known_stats)
    if resumed is not None:
        check_same_splits(resumed.meta, data, str(cfg.train.out))
    ctx, device = distributed.setup(cfg.train.device, cfg.train.dist_timeout)
    if ctx.enabled:
        distributed.check_sync_bn(cfg.train.sync_bn, device)
    channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else device.type == "cuda"
    run = open_ranked_run_folder(cfg, resumed is not None, ctx)

    model = create_model(
        cfg.model.name,
        data.num_classes,
        data.channels,
        data.image_size,
        cfg.model.pretrained,
        **cfg.model.kwargs,
    )
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    normalize = Normalize(data.mean, data.std)
    train_batches = training_batches(cfg, data, device, normalize, channels_last, per_rank, ctx)
    val_split = data.val if data.val is not None else data.test
    val_batches = eval_batches(val_split, data, cfg, device, normalize, channels_last, ctx.rank, ctx.world)
    train_model = distributed.wrap(model, device, cfg.train.sync_bn)  # DDP under torchrun
    model = unwrap(train_model)  # with sync_bn, the converted model
    train_model = torch.compile(train_model) if cfg.train.compile else train_model  # shares parameters
    trainer = Trainer(
        train_model,
        cfg,
        train_batches,
        val_batches,
        device,
        run,
        checkpoint_meta(cfg, data),
        training_callbacks(cfg, run, callbacks, ctx.is_main),
    )
    return TrainingSession(
        cfg, run, data, device, channels_last, model, normalize, train_batches, val_batches, trainer
    )


def open_run_folder(cfg: RunConfig, resuming: bool) -> RunDir:
    """The run folder, created, with the run's config.yaml; a new run never writes over an old one."""
    run = RunDir(Path(cfg.train.out or default_run_dir(cfg.data.spec, cfg.model.name)))
    if not resuming and run.last.exists() and not cfg.train.exist_ok:
        raise YingsheError(
            f"{run.root} already holds a run (last.pt)",
            f"continue it with --resume {run.root}, choose another --out, or set train.exist_ok=true",
        )
    run.root.mkdir(parents=True, exist_ok=True)
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
    augment = BatchAugment(cfg.augment, data.image_size, data.flip_invariant, data.num_classes)
    batches = make_batches(
        data.train,
        data.image_size,
        data.channels,
        batch_size or cfg.train.batch_size,
        train=True,
        seed=cfg.train.seed,
        workers=cfg.data.workers,
        transform=per_image_policy(cfg.augment.policy),
        stream=cfg.data.stream,
        rank=ctx.rank,
        world=ctx.world,
    )
    return DeviceBatches(batches, data.train, device, normalize, augment, channels_last, cfg.data.strict)


def training_callbacks(
    cfg: RunConfig, run: RunDir, callbacks: list[Callback] | None, main: bool = True
) -> list[Callback]:
    """The caller's callbacks, then those the config asks for. Under torchrun the caller's
    callbacks (progress display) and TensorBoard run on rank 0 only; early stopping on every rank."""
    out = list(callbacks or []) if main else []
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
    distributed.barrier()  # every rank's training is over and rank 0's checkpoints are on disk
    if distributed.is_main():
        return write_training_report(session, state, started)
    return TrainResult(session.run.root, {})  # type: ignore[typeddict-item]


def write_training_report(session: TrainingSession, state: FitState, started: float) -> TrainResult:
    cfg, run, data, device, model = session.cfg, session.run, session.data, session.device, session.model
    best = load_checkpoint(run.best if run.best.is_file() else run.last)
    model.load_state_dict(best.state_dict)
    test_batches = eval_batches(data.test, data, cfg, device, session.normalize, session.channels_last)
    amp = autocast_dtype(cfg.train.amp, device)
    tta = session.trainer.tta_flip
    pred = predict_batches(model, test_batches, amp, tta)
    validation = None
    if data.val is not None:  # the held-out figures cross-validation and tuning read
        val_batches = session.val_batches  # under torchrun only this rank's share: take all of it
        if distributed.active():
            val_batches = eval_batches(data.val, data, cfg, device, session.normalize, session.channels_last)
        val_pred = predict_batches(model, val_batches, amp, tta)
        validation = headline(full_metrics(val_pred, data.classes))
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
    )
    report["config"] = cfg.to_dict()
    if validation is not None:
        report["validation"] = validation
    publish_report(
        run.root,
        report,
        cfg.train.plots,
        lambda: report_figures(
            run.root, report, pred, model, session.normalize, data.test, test_batches.skipped, state.history
        ),
    )
    return TrainResult(run.root, report)


def data_summary(cfg: DataConfig, data: DatasetSpec) -> dict[str, Any]:
    return {
        "spec": cfg.spec,
        "description": data.description,
        "image_size": data.image_size,
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
        "notes": data.notes,
    }


def split_report(
    title: str,
    split: str,
    pred: Predictions,
    classes: list[str],
    sizes: tuple[int, int, int],
    skipped: dict[str, str],
    data: dict[str, Any],
    model: dict[str, Any],
) -> Report:
    """The report body `train` and `evaluate` share: metrics of one split plus what it was."""
    return {
        "title": title,
        "split": split,
        **full_metrics(pred, classes),
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
        report.update(figures())
        write_report(folder, report)


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
    if data == cfg.data.spec:  # naming the training data is asking for its own splits
        data = None
    if data is None:  # the run's own splits, cut exactly as in training
        dataset = build_dataset(cfg.data, cfg.train.seed, stats=(meta.mean, meta.std))
        check_same_splits(meta, dataset, str(checkpoint))
        chosen = {"test": dataset.test, "val": dataset.val, "train": dataset.train}.get(split)
        sizes = (len(dataset.train), len(dataset.val) if dataset.val is not None else 0, len(dataset.test))
        description, notes = dataset.description, dataset.notes
        spec = cfg.data.spec
    else:
        chosen, classes, description, notes = other_data_split(data, split, cfg.data, size, channels)
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
    tta = flip_tta_applies(cfg.train.tta_flip, meta.flip_invariant)
    pred = predict_batches(model, batches, autocast_dtype(cfg.train.amp, torch_device), tta)
    folder = evaluation_folder(Path(checkpoint), data, split, out)
    summary = {
        "spec": spec,
        "description": description,
        "image_size": size,
        "channels": channels,
        "mean": meta.mean,
        "std": meta.std,
        "notes": notes,
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
    """Where an evaluation's report goes; never over a run's own files."""
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
    if (folder / "last.pt").exists() or (folder / "best.pt").exists():
        raise YingsheError(
            f"{folder} is a run folder: its report.json and plots would be overwritten",
            "leave out --out (reports go to <run>/evaluate-<split>) or give an empty folder",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    return Split(mapping[split.labels], images=split.images, files=split.files, packed=split.packed)


def load(path: str | Path, device: str = "auto") -> Classifier:
    """A trained classifier from a run folder or checkpoint, ready for `.predict(images)`."""
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
    spec: str, out: str | Path, count: int = 8, split: str = "test", data_dir: str | None = None
) -> list[Path]:
    """Write `count` images of a split as PNG files named `<n>_<class>.png`, as the model would see
    them (fitted to the dataset's image size): inputs for `predict`, or a look at the data."""
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
    return written


def inspect_data(
    spec: str, data_dir: str | None = None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Classes, counts, image sizes and modes, and every unreadable file of a dataset."""
    source = read_spec(DataConfig(spec=spec, data_dir=data_dir))
    summary: dict[str, Any] = {
        "description": source.description,
        "classes": source.classes,
        "splits": {},
    }
    total = sum(len(s) for s in source.splits.values())
    done = 0
    for name, split in source.splits.items():
        counts = np.bincount(split.labels, minlength=len(source.classes))
        entry: dict[str, Any] = {
            "images": len(split),
            "per_class": dict(zip(source.classes, counts.tolist(), strict=True)),
        }
        if split.images is not None or split.packed is not None:
            shape = split.images.shape[1:] if split.images is not None else split.packed.image_shape
            entry["array"] = [len(split), *shape]
            done += len(split)
        else:
            widths, heights, modes, unreadable = [], [], Counter(), []
            for i in range(len(split)):
                try:
                    blob = split.files.read(i)
                    w, h, mode = image_header(blob)
                    decode_image(blob, 8, 1, split.name(i))  # a full decode finds truncation
                    widths.append(w), heights.append(h)
                    modes[mode] += 1
                except (UnreadableImage, OSError, ValueError) as err:
                    unreadable.append(str(err) if split.name(i) in str(err) else f"{split.name(i)}: {err}")
                done += 1
                if progress and (done % 200 == 0 or done == total):
                    progress(done, total)
            if widths:
                entry["width"] = {
                    "min": min(widths),
                    "median": int(np.median(widths)),
                    "max": max(widths),
                }
                entry["height"] = {
                    "min": min(heights),
                    "median": int(np.median(heights)),
                    "max": max(heights),
                }
            entry["modes"] = dict(modes)
            entry["unreadable"] = unreadable
        summary["splits"][name] = entry
    summary["notes"] = source.notes
    summary["skipped"] = dict(source.skipped)  # refused while reading the source (tar members)
    return summary


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
) -> dict[str, Any]:
    """Decode a dataset once into uint8 shards at the training size (`fmt="packed"`), or write it
    as WebDataset tar shards (`fmt="webdataset"`).

    Packed shards go to the cache when `out` is None, where training on `spec` finds them; with
    `out`, the cache is pointed at `out`, so data.prepared=auto finds them there too. An
    interrupted prepare resumes when called again with the same arguments.
    """
    started = time.perf_counter()
    cfg = DataConfig(spec=spec, data_dir=data_dir, image_size=image_size, channels=channels)
    options = dict(fmt=fmt, cache_dir=cache_dir, workers=workers, shard_mb=shard_mb, force=force)
    summary = prepare_source(read_spec(cfg), out, image_size, channels, progress=progress, **options)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}
