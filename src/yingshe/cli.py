"""The `yingshe` command: parse arguments, build a config, call the API, print for a person.

Only this module parses arguments or prints; everything it does is a call into `yingshe.api`,
imported inside the commands so `yingshe --help` and `--version` answer without loading torch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from yingshe.config import (
    DEFAULT_TOP_K,
    RunConfig,
    apply_overrides,
    describe,
    key_choices,
    load_config,
    set_value,
)
from yingshe.errors import YingsheError

# flag → config key; flags default to None so only the ones given override the config file
TRAIN_FLAGS = {
    "data": "data.spec",
    "model": "model.name",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "time_budget": "train.time_budget",
    "limit_train": "data.limit_train",
    "limit_test": "data.limit_test",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "image_size": "data.image_size",
    "device": "train.device",
    "seed": "train.seed",
    "out": "train.out",
    "workers": "data.workers",
    "patience": "train.patience",
    "exclude": "data.exclude",
    "imbalance": "data.imbalance",
    "balance": "train.balance",
}


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's `error:`/`fix:` shape for bad arguments (exit 2, as argparse)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        print(f"  fix: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def at_least(low: int):
    """An argparse type: an int >= `low`, named in the message when it is not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}; got {value}")
        return value

    return parse


def config_help(key: str, text: str | None = None) -> str:
    """A flag's help: its meaning (from the config's table unless given) and the config default."""
    row = config_rows().get(key)
    meaning = text or (row["meaning"] if row else "")
    default = row["default"].replace("null", "none") if row else None
    bound = f"; {row['range']}" if row and row["range"] else ""
    return f"{meaning} (config {key}, default: {default}{bound})"


@functools.cache
def config_rows() -> dict[str, dict[str, str]]:
    return {row["key"]: row for row in describe()}


@contextlib.contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr, fed by the library's `progress(done, total)` callbacks."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def build_train_config(args: argparse.Namespace) -> RunConfig:
    """defaults < --recipe < --config file < flags < key=value overrides.

    The recipe (`--recipe`, or `train.recipe` in the file or overrides) depends on the data's
    family, which the layers above it decide, so they are read once to find it and applied again
    on top of the recipe."""
    cfg = layer_train_config(args, RunConfig())
    recipe = getattr(args, "recipe", None) or cfg.train.recipe
    if recipe:
        from yingshe.api import recipe_base

        base = recipe_base(recipe, cfg.data)
        cfg = layer_train_config(args, base)
        cfg.train.recipe = base.train.recipe
    return cfg


def layer_train_config(args: argparse.Namespace, base: RunConfig) -> RunConfig:
    """--config file, flags and key=value overrides, in that order, onto `base`."""
    cfg = load_config(args.config, base) if args.config else base
    for flag, key in TRAIN_FLAGS.items():  # typed by argparse: set as they are, not parsed as YAML
        if getattr(args, flag) is not None:
            set_value(cfg, key, getattr(args, flag), f"--{flag.replace('_', '-')}")
    if args.deterministic:
        cfg.train.deterministic = True
    if getattr(args, "dedupe", False):
        cfg.data.dedupe = True
    apply_overrides(cfg, args.overrides)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from yingshe.api import train

    if args.resume:
        ignored = [
            f"--{flag.replace('_', '-')}"
            for flag in TRAIN_FLAGS
            if flag != "epochs" and getattr(args, flag) is not None
        ]
        ignored += ["--config"] * bool(args.config) + ["--recipe"] * bool(getattr(args, "recipe", None))
        ignored += args.overrides
        if ignored:
            raise YingsheError(
                f"--resume continues a run with its own config; {', '.join(ignored)} would be ignored",
                "leave them out (only --epochs may extend the run), or start a new run with --out",
            )
        result = train(resume=args.resume, epochs=args.epochs)
    else:
        result = train(build_train_config(args))
    from yingshe.train.distributed import env_context

    if not env_context().is_main:  # under torchrun, rank 0 speaks for the run
        return 0
    report = result.report
    print(
        f"\ntest accuracy {100 * report['accuracy']:.2f}% on {report['num_test']} images "
        f"(loss {report['loss']:.4f}); skipped unreadable files: {report['skipped_files']}"
    )
    print(f"run folder: {result.run_dir}")
    print(f"report: {result.run_dir / 'report.md'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    from yingshe.tune.tuner import tune

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)

    def announce(study, trial) -> None:
        params = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        value = "" if trial.value is None else f"  {args.metric} {trial.value:.4f}"
        if "duplicate_of" in trial.user_attrs:
            value = f"  not trained: trial {trial.user_attrs['duplicate_of']} holds this grid point"
        elif trial.state.name == "PRUNED":
            value = f"  pruned after epoch {trial.last_step}"
        print(f"trial {trial.number:>4}: {trial.state.name.lower():<8}{value}  {params}", flush=True)

    result = tune(
        build_train_config(args),
        args.space,
        sampler=args.sampler,
        pruner=args.pruner,
        trials=args.trials,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study,
        cv=args.cv,
        metric=args.metric,
        heartbeat=args.heartbeat,
        on_trial=announce,
    )
    summary = result.summary
    states = ", ".join(f"{n} {state}" for state, n in sorted(summary["states"].items()))
    print(
        f"\nstudy {summary['study']}: {summary['trials']} trials ({states}), "
        f"{summary['epochs']} epochs in all"
    )
    if summary["best"] is not None:
        best = summary["best"]
        print(f"best: trial {best['number']}, validation {args.metric} {best['value']:.4f}")
        print(f"retrain it: yingshe train --config {result.best_config}")
    print(f"study folder: {result.study_dir}")
    print(f"report: {result.study_dir / 'study.md'}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from yingshe.runs import default_run_dir
    from yingshe.tune.lr_find import lr_find

    cfg = build_train_config(args)
    plot = (
        Path(cfg.train.out or default_run_dir(cfg.data.spec, cfg.model.name, "runs/lr-find")) / "lr_find.png"
    )
    found = lr_find(cfg, args.start_lr, args.end_lr, args.steps, plot)
    print(f"range test: {len(found.lrs)} steps from {found.lrs[0]:.2g} to {found.lrs[-1]:.2g}")
    print(f"plot: {found.plot}")
    print(f"suggested learning rate: optim.lr={found.suggestion:g}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from yingshe.api import evaluate

    report = evaluate(
        args.run, data=args.data, split=args.split, out=args.out, limit=args.limit, device=args.device
    )
    print(
        f"{args.split} accuracy {100 * report['accuracy']:.2f}% on {report['num_test']} images "
        f"(loss {report['loss']:.4f}, macro F1 {100 * report['f1_macro']:.2f}%)"
    )
    print(f"report: {Path(report['report_dir']) / 'report.md'}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from yingshe.api import cross_validate

    def announce(fold: int, folds: int) -> None:
        print(f"\nfold {fold}/{folds}", flush=True)

    result = cross_validate(build_train_config(args), args.folds, on_fold=announce)
    print(f"\n{args.folds}-fold cross-validation (held-out folds; ± sample std over folds)")
    for fold in result.folds:
        v = fold.validation
        print(f"  fold {fold.fold}: accuracy {100 * v['accuracy']:.2f}%  macro F1 {100 * v['f1_macro']:.2f}%")
    for key in ("accuracy", "f1_macro"):
        print(f"  mean {key}: {100 * result.mean[key]:.2f}% ± {100 * result.std[key]:.2f}%")
    print(f"cross-validation folder: {result.cv_dir}")
    print(f"report: {result.cv_dir / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from yingshe.api import compare_runs

    report = compare_runs(args.runs, args.out)
    for row in report["runs"]:
        print(f"{row['name']}\taccuracy {100 * row['accuracy']:.2f}%\t{row['model']} on {row['data']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {Path(report['report_dir']) / 'report.md'}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from yingshe.api import expand_paths, explain

    paths = expand_paths(args.images)
    if not paths:
        raise YingsheError("no images to explain", "pass image files or folders that contain images")
    results = explain(args.run, paths, args.out, args.method, args.top_k, args.target, args.device)
    for item in results:
        if item.error:
            print(f"{item.source}\t{item.error}")
            continue
        top = "  ".join(f"{name} {100 * prob:.1f}%" for name, prob in item.top)
        print(f"{item.source}\t{top}\t→ {item.path}")
    failed = sum(item.error is not None for item in results)
    return 1 if failed == len(results) else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from yingshe.api import load
    from yingshe.inference import iter_paths
    from yingshe.outputs import check_output_file

    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):  # before loading anything
        raise YingsheError(f"cannot write predictions to {out}", "use a .csv or .json file name")
    if out is not None:
        check_output_file(out)  # a read-only or full place fails before any prediction
    classifier = load(args.run, device=args.device)
    total = sum(1 for _ in iter_paths(args.paths))  # a lazy walk: counts, holds nothing
    if not total:
        raise YingsheError("no images to predict", "pass image files or folders that contain images")
    stream = classifier.iter_predict(iter_paths(args.paths), top_k=args.top_k)
    bar = tqdm(stream, total=total, desc="predicting", unit="img", file=sys.stderr, leave=False)
    counts = {"done": 0, "failed": 0}

    def shown(predictions):
        for p in predictions:
            counts["done"] += 1
            counts["failed"] += p.error is not None
            if out is None:
                text = p.error or "  ".join(f"{name} {100 * prob:.1f}%" for name, prob in p.top)
                if p.labels is not None and not p.error:  # multi-label: the labels above threshold
                    text = f"labels: {'|'.join(p.labels) or '(none)'}  {text}"
                bar.write(f"{p.source}\t{text}", file=sys.stdout)
            yield p

    k = min(args.top_k, len(classifier.classes))
    if out is None:
        for _ in shown(bar):
            pass
    else:
        write_predictions(out, shown(bar), k, getattr(classifier, "multilabel", False))
    bar.close()
    if out is not None:
        print(f"{counts['done']} predictions written to {out} ({counts['failed']} unreadable)")
    return 1 if counts["failed"] == counts["done"] else 0


def write_predictions(path: Path, predictions, k: int, multilabel: bool = False) -> None:
    """Stream predictions into a CSV or JSON file, one row at a time (atomically: the file appears
    complete or not at all), so a folder of 100 k images never sits in memory. A multi-label
    model's rows also carry `labels` (a list in JSON, `|`-separated in the CSV's second column)."""
    from yingshe.runs import atomic_file

    with atomic_file(path) as raw:
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if path.suffix.lower() == ".json":
            handle.write("[")
            for i, p in enumerate(predictions):
                item = {"path": p.source, "top": [{"class": c, "probability": v} for c, v in p.top]}
                if multilabel:
                    item["labels"] = p.labels
                handle.write(("," if i else "") + "\n  " + json.dumps({**item, "error": p.error}))
            handle.write("\n]\n")
        else:
            writer = csv.writer(handle)
            labels_column = ["labels"] if multilabel else []
            writer.writerow(
                ["path", *labels_column]
                + [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("class", "prob")]
                + ["error"]
            )
            for p in predictions:
                cells = [x for c, v in p.top for x in (c, f"{v:.6f}")]
                labels = ["|".join(p.labels or [])] if multilabel else []
                writer.writerow([p.source, *labels, *cells, *[""] * (2 * k - len(cells)), p.error or ""])
        handle.flush()
        handle.detach()  # atomic_file fsyncs and closes the raw handle itself


def cmd_export(args: argparse.Namespace) -> int:
    from yingshe.export import export_model

    result = export_model(
        args.run,
        args.format,
        out=args.out,
        dynamic_batch=args.dynamic_batch,
        opset=args.opset,
        parity_images=args.parity_images,
        tolerance=args.tolerance,
        exporter=args.exporter,
    )
    if result.parity is None:
        print("parity not checked (--parity-images 0)")
    else:
        from yingshe.export.parity import Parity

        print(Parity(**result.parity).line())
    print(f"model: {result.path}\nmetadata: {result.metadata_path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from yingshe.serve import ServeConfig, serve

    cfg = ServeConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        max_file_mb=args.max_file_mb,
        max_files=args.max_files,
        max_pixels=args.max_pixels,
        device=args.device,
    )
    serve(cfg)
    return 0


def add_deploy_parsers(sub) -> None:
    """`export` and `serve`: the model leaving yingshe, and yingshe serving it over HTTP."""
    from yingshe.serve.config import ServeConfig

    x = sub.add_parser("export", help="write an ONNX or TorchScript model, checked against PyTorch")
    x.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    x.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    x.add_argument("--out", help="model file (default <run>/model.onnx or <run>/model.torchscript.pt)")
    x.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch of 1)")
    x.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    x.add_argument(
        "--exporter",
        default="auto",
        choices=["auto", "legacy", "dynamo"],
        help="torch.onnx path (default %(default)s)",
    )
    x.add_argument(
        "--parity-images", type=int, help="test images compared with PyTorch (default 64; 0 skips the check)"
    )
    x.add_argument(
        "--tolerance",
        type=float,
        help="largest allowed |logit difference| (multi-label: |sigmoid score difference|; default 1e-3)",
    )
    x.set_defaults(handler=cmd_export)

    d = ServeConfig
    s = sub.add_parser("serve", help="an HTTP service (FastAPI + uvicorn) with dynamic batching and a page")
    s.add_argument("model", metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    s.add_argument("--host", default=d.host, help="interface to listen on (default %(default)s)")
    s.add_argument("--port", type=int, default=d.port, help="default %(default)s")
    s.add_argument("--max-batch", type=int, default=d.max_batch, help="images per pass (default %(default)s)")
    s.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help="batch fill wait (default %(default)s)",
    )
    s.add_argument("--workers", type=int, default=d.workers, help="server processes (default %(default)s)")
    s.add_argument(
        "--max-file-mb", type=float, default=d.max_file_mb, help="max upload MB (default %(default)s)"
    )
    s.add_argument("--max-files", type=int, default=d.max_files, help="per batch (default %(default)s)")
    s.add_argument("--max-pixels", type=int, default=d.max_pixels, help="width×height (default %(default)s)")
    s.add_argument("--device", default=d.device, help="for a run or checkpoint (default %(default)s)")
    s.set_defaults(handler=cmd_serve)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from yingshe.api import inspect_data

    with progress_bar("checking images") as progress:
        summary = inspect_data(args.spec, args.data_dir, progress)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(summary["description"])
    print(
        f"{len(summary['classes'])} classes: {', '.join(summary['classes'][:30])}"
        + (" …" if len(summary["classes"]) > 30 else "")
    )
    unsplit = list(summary["splits"]) == ["train"]  # a folder of classes: training splits it
    for name, split in summary["splits"].items():
        heading = "all images (the source has no split folders)" if unsplit else name
        print(f"\n[{heading}] {split['images']} images")
        counts = split["per_class"]
        print("  per class: " + ", ".join(f"{c} {n}" for c, n in list(counts.items())[:30]))
        if "array" in split:
            print(f"  decoded array {split['array']} (uint8)")
        if "width" in split:
            w, h = split["width"], split["height"]
            print(
                f"  width {w['min']}–{w['max']} (median {w['median']}), "
                f"height {h['min']}–{h['max']} (median {h['median']})"
            )
            print("  modes: " + ", ".join(f"{m} {n}" for m, n in split["modes"].items()))
        for bad in split.get("unreadable", []):
            print(f"  unreadable: {bad}")
    print_inspect_findings(summary)
    return 0


def print_inspect_findings(summary: dict[str, Any]) -> None:
    """The split a run will make, imbalance, duplicates and notes, after the per-split figures."""
    planned = summary["planned_splits"]
    if planned and "error" in planned:
        print(f"\ntraining cannot split it: {planned['error']}")
    elif planned:
        counts = " · ".join(f"{k} {n}" for k, n in planned["counts"].items())
        print(f"\n`yingshe train` splits it (default fractions, seed 0): {counts}")
        for note in planned["notes"]:
            print(f"  {note}")
    balance = summary["imbalance"]
    if balance["warn"]:
        (big, nb), (small, ns) = balance["largest"], balance["smallest"]
        ratio = "an empty class" if balance["ratio"] is None else f"ratio {balance['ratio']:.1f}"
        print(f"warning: classes are imbalanced ({ratio}): {big} has {nb} images, {small} has {ns}")
    duplicates = summary["duplicates"]
    if duplicates:
        copies = sum(len(group) - 1 for group in duplicates)
        print(f"warning: {copies} exact duplicate file(s) in {len(duplicates)} group(s) (same bytes):")
        for group in duplicates[:20]:
            print("  " + "  =  ".join(group))
        if len(duplicates) > 20:
            print(f"  … and {len(duplicates) - 20} more groups (--json lists all)")
    for name, reason in summary.get("skipped", {}).items():
        print(f"skipped while reading: {name}: {reason}")
    for note in summary["notes"]:
        print(f"note: {note}")


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from yingshe.api import prepare_data

    desc = "decoding" if args.format == "packed" else "writing shards"
    with progress_bar(desc) as progress:
        summary = prepare_data(
            args.spec,
            args.out,
            args.image_size,
            args.channels,
            fmt=args.format,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            workers=args.workers,
            **({} if args.shard_mb is None else {"shard_mb": args.shard_mb}),  # the library's default
            force=args.force,
            progress=progress,
            jpeg_quality=args.jpeg_quality,
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            merge=args.merge,
        )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if "slice" in summary:
        index, count = summary["slice"]
        print(
            f"prepared slice {index} of {count}: {summary['images']} images in {summary['shards']} shard(s) "
            f"into {summary['out']} ({summary['seconds']:.1f} s)"
        )
        for bad in summary["skipped"]:
            print(f"  unreadable, left out: {bad}")
        print(f"when every slice is done: yingshe data prepare {args.spec} --out {summary['out']} --merge")
        return 0
    if args.format == "webdataset":
        print(f"wrote WebDataset shards to {summary['out']} ({summary['seconds']:.1f} s)")
        for name, split in summary["splits"].items():
            print(f"  {name}: {split['samples']} samples in {len(split['shards'])} shard(s)")
        for bad in summary["skipped"]:
            print(f"  left out: {bad}")
        return 0
    print(
        f"prepared {summary['description']} at {summary['image_size']} px, {summary['channels']} channel(s) "
        f"into {summary['out']} ({summary['seconds']:.1f} s)"
    )
    for name, split in summary["splits"].items():
        print(f"  {name}: {split['images']} images in {split['shards']} shard(s)")
        for bad in split["skipped"]:
            print(f"  unreadable, left out: {bad}")
    print(which_training_reads(args.spec, summary, args.cache_dir))
    return 0


def which_training_reads(spec: str, summary: dict[str, Any], cache_dir: str | None) -> str:
    """The training command that will use the shards just prepared, and the one that will not."""
    if not summary["picked_up"]:
        return f"train on them with: yingshe train --data {summary['out']}"
    flags = []
    if summary["image_size"] != summary["training_image_size"]:
        flags.append(f"--image-size {summary['image_size']}")
    if summary["channels"] != summary["native_channels"]:
        flags.append(f"data.channels={summary['channels']}")
    if cache_dir:
        flags.append(f"data.cache_dir={cache_dir}")
    command = " ".join(["yingshe train --data", spec, *flags])
    text = f"these shards are read by: {command}  (data.prepared=auto)"
    if (
        summary["image_size"] != summary["training_image_size"]
        or summary["channels"] != summary["native_channels"]
    ):
        text += (
            f"\n  a run at the default {summary['training_image_size']} px, "
            f"{summary['native_channels']} channel(s) decodes the files again"
        )
    return text


def cmd_data_samples(args: argparse.Namespace) -> int:
    from yingshe.api import write_samples

    written = write_samples(args.spec, args.out, args.count, args.split, args.data_dir, args.augmented)
    sheets = [p for p in written if p.name in ("grid.png", "augmented.png")]
    print(f"wrote {len(written) - len(sheets)} images to {args.out}")
    for sheet in sheets:
        print(f"  {sheet.name}: {'examples per class' if sheet.name == 'grid.png' else 'after augmentation'}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from yingshe.api import recipe_table

    for recipe in recipe_table():
        print(f"{recipe['name']}: {recipe['summary']}")
        if args.verbose_recipes:
            for family, overrides in recipe["families"].items():
                text = yaml.safe_dump(overrides, sort_keys=False)
                print(f"  [{family}]\n" + "\n".join("    " + line for line in text.splitlines()))
    print("\nUse: yingshe train --data DATA --recipe NAME [key=value ...]; --show prints the settings.")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from yingshe.api import model_table

    print(f"{'name':<14} {'parameters':>12}  description (10 classes, 3×32×32 input)")
    for row in model_table(10, 3, 32):
        print(f"{row['name']:<14} {row['parameters']:>12,}  {row['summary']}")
    print("\nAlso: timm:<name> (any timm model) and torchvision:<name> (any torchvision classifier).")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from yingshe.config import config_markdown, resolve_key

    if args.markdown:
        print(config_markdown(), end="")
        return 0
    rows = describe()
    if args.show:
        key = resolve_key(RunConfig(), args.show)
        rows = [row for row in rows if row["key"] == key]
    width = max(len(row["key"]) for row in rows)
    for row in rows:
        allowed = f"  [{row['range']}]" if row["range"] else ""
        print(f"{row['key']:<{width}}  {row['type']} = {row['default']}{allowed}")
        print(f"{'':<{width}}  {row['meaning']}")
    return 0


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds `(default: X)` to every option that has a real default and does not state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default:" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


class VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        from yingshe.about import version_text

        print(version_text())
        parser.exit(0)


def add_train_arguments(t: argparse.ArgumentParser, out_help: str) -> None:
    """The flags `train` and `cv` share (TRAIN_FLAGS maps them onto config keys); their help shows
    the config's default, since the flags themselves default to None (unset)."""
    t.add_argument("--data", help=config_help("data.spec"))
    t.add_argument("--model", help=config_help("model.name", "model name; see `yingshe models`"))
    t.add_argument("--epochs", type=float, help=config_help("train.epochs"))
    t.add_argument("--max-steps", type=int, help=config_help("train.max_steps"))
    t.add_argument("--time-budget", help=config_help("train.time_budget"))
    t.add_argument("--limit-train", type=int, help=config_help("data.limit_train"))
    t.add_argument("--limit-test", type=int, help=config_help("data.limit_test"))
    t.add_argument("--batch-size", type=int, help=config_help("train.batch_size"))
    t.add_argument("--lr", type=float, help=config_help("optim.lr"))
    t.add_argument("--optimizer", choices=key_choices("optim.name"), help=config_help("optim.name"))
    t.add_argument("--image-size", type=int, help=config_help("data.image_size"))
    t.add_argument("--device", help=config_help("train.device"))
    t.add_argument("--seed", type=int, help=config_help("train.seed"))
    t.add_argument("--deterministic", action="store_true", help=config_help("train.deterministic"))
    t.add_argument("--workers", type=int, help=config_help("data.workers"))
    t.add_argument("--patience", type=int, help=config_help("train.patience"))
    add_health_arguments(t)
    t.add_argument("--out", help=config_help("train.out", out_help))
    t.add_argument(
        "--recipe",
        metavar="NAME",
        help="tuned settings for the data's family: fast or best (`yingshe recipes`); NAME:FAMILY forces "
        "the family (grey-28, colour-32, large); --config, flags and key=value override it key by key "
        "(default: none)",
    )
    t.add_argument("--config", help="YAML config file (sections data, model, augment, optim, train)")
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any config key, e.g. optim.lr=0.01 augment.mixup=0.2; `yingshe config` lists them all",
    )


def add_health_arguments(t: argparse.ArgumentParser) -> None:
    """Real-world data: what `yingshe data check` recommends, and class imbalance."""
    t.add_argument(
        "--exclude", metavar="FILE", help="leave out the images listed (exclude.txt of `data check`)"
    )
    t.add_argument(
        "--dedupe", action="store_true", help="keep one of each exact copy; drop train copies of test"
    )
    t.add_argument(
        "--balance", choices=["none", "weights", "sampler", "logit-adjust"], help="class imbalance"
    )
    t.add_argument(
        "--imbalance", type=float, metavar="RATIO", help="long-tailed train split (CIFAR-10-LT profile)"
    )


def cmd_data_check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from yingshe.health.check import run_check

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.setdefault(stage, tqdm(desc=stage, total=total, file=sys.stderr, leave=False))
        bar.update(done - bar.n)

    try:
        report = run_check(
            args.spec,
            args.out,
            data_dir=args.data_dir,
            model=args.model,
            folds=args.folds,
            epochs=args.epochs,
            limit_train=args.limit_train,
            device=args.device,
            progress=progress,
        )
    finally:
        for bar in bars.values():
            bar.close()
    print(f"{report['description']}: {', '.join(f'{s} {n}' for s, n in report['images'].items())} images")
    for action in report["actions"]:
        print(f"- {action}")
    print(f"report: {Path(args.out) / 'check.md'}  exclude list: {Path(args.out) / 'exclude.txt'}")
    if args.strict and (report["unreadable"] or report["leakage"]):
        print("error: --strict: unreadable files or train/test leakage found", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    kw: dict[str, Any] = {"formatter_class": DefaultsFormatter}
    top = Parser(prog="yingshe", description="Image classifiers from image datasets.", **kw)
    top.add_argument("--version", action=VersionAction, help="print versions and the device, then exit")
    loud = top.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="also log the library's details")
    loud.add_argument("-q", "--quiet", action="store_true", help="print only results and problems")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a classifier, then evaluate it on the test split", **kw)
    add_train_arguments(t, "run folder; None: runs/<data>-<model>-<time>")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last.pt")
    t.set_defaults(handler=cmd_train)

    c = sub.add_parser("cv", help="k-fold cross-validation: one training run per stratified fold", **kw)
    c.add_argument("--folds", type=at_least(2), default=5, help="number of folds K")
    add_train_arguments(c, "cross-validation folder; None: runs/cv-<data>-<model>-<time>")
    c.set_defaults(handler=cmd_cv)

    tu = sub.add_parser("tune", help="hyperparameter search: an Optuna study whose trials are training runs")
    tu.add_argument("--space", required=True, help="search-space YAML: key: [grid values] or {type: ...}")
    tu.add_argument("--sampler", choices=["grid", "random", "tpe"], help="default: grid for lists, else tpe")
    tu.add_argument(
        "--pruner", choices=["none", "median", "asha", "hyperband"], help="default: none for grid, else asha"
    )
    tu.add_argument("--trials", type=int, help="trials this worker runs (default: the grid's size, else 20)")
    tu.add_argument("--timeout", type=float, help="start no trial after S seconds")
    tu.add_argument(
        "--storage", help="postgresql://..., sqlite:///FILE or journal:FILE (default study.db in --out)"
    )
    tu.add_argument("--study", help="study name (default: the study folder's name)")
    tu.add_argument("--cv", type=int, metavar="K", help="objective: mean over K stratified folds")
    tu.add_argument("--metric", default="accuracy", choices=["accuracy", "f1_macro", "loss"])
    tu.add_argument(
        "--heartbeat", type=int, default=10, help="seconds between a trial's heartbeats (default 10)"
    )
    add_train_arguments(tu, "study folder (default runs/tune-<data>-<model>-<time>)")
    tu.set_defaults(handler=cmd_tune)

    lf = sub.add_parser("lr-find", help="learning-rate range test: loss against an exponentially rising LR")
    lf.add_argument("--start-lr", type=float, default=1e-7)
    lf.add_argument("--end-lr", type=float, default=10.0)
    lf.add_argument("--steps", type=int, default=100, help="steps of the sweep (default 100)")
    add_train_arguments(lf, "folder for lr_find.png (default runs/lr-find/<data>-<model>-<time>)")
    lf.set_defaults(handler=cmd_lr_find)

    e = sub.add_parser("evaluate", help="evaluate a run or checkpoint on a dataset split", **kw)
    e.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--data", help="dataset (default: the one it was trained on)")
    e.add_argument("--split", default="test", choices=["test", "val", "train"], help="which split")
    e.add_argument(
        "--limit", type=at_least(1), help="evaluate a stratified subset of N images (default: all)"
    )
    e.add_argument("--out", help="report folder (default: <run>/evaluate-<split>)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes for image files or folders", **kw)
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT|MODEL.onnx")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (walked recursively)")
    p.add_argument("--top-k", type=at_least(1), default=DEFAULT_TOP_K, help="classes per image")
    p.add_argument("--output", help="stream predictions to FILE.csv or FILE.json")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=cmd_predict)

    add_deploy_parsers(sub)

    d = sub.add_parser("data", help="look at datasets", **kw).add_subparsers(
        dest="data_command", required=True, parser_class=Parser
    )
    di = d.add_parser(
        "inspect", help="classes, counts, splits, sizes, modes, duplicates, unreadable files", **kw
    )
    di.add_argument("spec", help="dataset name or path")
    di.add_argument(
        "--data-dir", help="where dataset names are looked up (default: $YINGSHE_DATA or the cache)"
    )
    di.add_argument("--json", action="store_true", help="print the summary as JSON")
    di.set_defaults(handler=cmd_data_inspect)
    dc = d.add_parser("check", help="broken files, duplicates, train/test leakage, imbalance, label errors")
    dc.add_argument("spec")
    dc.add_argument("--out", default="data-check", help="report folder (default ./data-check)")
    dc.add_argument("--model", metavar="RUN", help="a run whose embeddings find near duplicates")
    dc.add_argument("--folds", type=int, default=0, help="check labels on K-fold out-of-fold predictions")
    dc.add_argument("--epochs", type=int, default=3, help="epochs per fold of the label check")
    dc.add_argument("--limit-train", type=int, help="label-check a stratified subset of N training images")
    dc.add_argument("--strict", action="store_true", help="exit 1 on unreadable files or train/test leakage")
    dc.add_argument("--device", default="auto")
    dc.add_argument("--data-dir")
    dc.set_defaults(handler=cmd_data_check)
    ds = d.add_parser("samples", help="write a few images of a split as PNG files", **kw)
    ds.add_argument("spec", help="dataset name or path")
    ds.add_argument("--out", required=True, help="folder for the PNG files")
    ds.add_argument("--count", type=at_least(1), default=8, help="images to write")
    ds.add_argument("--split", default="test", choices=["test", "train"], help="which split")
    ds.add_argument(
        "--data-dir", help="where dataset names are looked up (default: $YINGSHE_DATA or the cache)"
    )
    ds.add_argument(
        "--augmented",
        action="store_true",
        help="also write augmented.png: the grid's images after augmentation",
    )
    ds.set_defaults(handler=cmd_data_samples)
    dp = d.add_parser(
        "prepare",
        help="decode every image once into uint8 shards (training picks them up), or write WebDataset tars",
        **kw,
    )
    dp.add_argument("spec", help="dataset name or path (folder, tar, CSV, WebDataset shards, ...)")
    dp.add_argument("--out", help="output folder (default: the cache, where training finds the shards)")
    dp.add_argument(
        "--image-size", type=at_least(1), help="side of the stored images (default: what training picks)"
    )
    dp.add_argument("--channels", type=int, choices=[1, 3], help="1 or 3 (default: follow the data)")
    dp.add_argument("--format", default="packed", choices=["packed", "webdataset"], help="what to write")
    dp.add_argument("--workers", type=at_least(0), help="decoding processes (default: one per core)")
    dp.add_argument("--shard-mb", type=float, help="size of a packed shard in MB (default: the library's)")
    dp.add_argument(
        "--jpeg-quality",
        type=at_least(1),
        help="with --format webdataset and --image-size: store square JPEGs at this quality (1-100)",
    )
    dp.add_argument(
        "--data-dir", help="where dataset names are looked up (default: $YINGSHE_DATA or the cache)"
    )
    dp.add_argument("--cache-dir", help="the prepared-data cache (default: $YINGSHE_CACHE or ~/.cache)")
    dp.add_argument("--force", action="store_true", help="replace what --out holds")
    dp.add_argument("--num-shards", type=at_least(1), help="prepare in N slices (N jobs, one --out)")
    dp.add_argument("--shard-index", type=at_least(0), help="the slice this process prepares: 0 … N-1")
    dp.add_argument("--merge", action="store_true", help="join the finished slices in --out into one dataset")
    dp.add_argument("--json", action="store_true", help="print the summary as JSON")
    dp.set_defaults(handler=cmd_data_prepare)

    m = sub.add_parser("models", help="list the model names with parameter counts", **kw)
    m.set_defaults(handler=cmd_models)

    r = sub.add_parser("recipes", help="list the training recipes (tuned settings per data family)", **kw)
    r.add_argument("--show", dest="verbose_recipes", action="store_true", help="print every setting")
    r.set_defaults(handler=cmd_recipes)

    g = sub.add_parser("config", help="every config key with its type, default and meaning", **kw)
    g.add_argument("--show", metavar="KEY", help="only this key (dotted, or a unique bare name)")
    g.add_argument("--markdown", action="store_true", help="print the table as docs/config.md")
    g.set_defaults(handler=cmd_config)

    r = sub.add_parser("report", help="compare runs side by side: a table and overlaid curves", **kw)
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or evaluate folders)")
    r.add_argument("--out", required=True, help="folder for report.md, report.json and curves.png")
    r.set_defaults(handler=cmd_report)

    x = sub.add_parser("explain", help="heat maps of where the model looks, over each image", **kw)
    x.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    x.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    x.add_argument(
        "--method",
        default="auto",
        choices=["auto", "gradcam", "saliency"],
        help="gradcam (conv nets), saliency (any model); auto picks gradcam where it applies",
    )
    x.add_argument("--out", required=True, help="folder for the overlay PNGs")
    x.add_argument("--top-k", type=at_least(1), default=3, help="classes per image")
    x.add_argument("--class", dest="target", metavar="NAME", help="explain this class, not the predicted one")
    x.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    x.set_defaults(handler=cmd_explain)

    from yingshe.transfer.cli import add_transfer_parsers  # finetune, embed, neighbors, project, knn

    add_transfer_parsers(sub, add_train_arguments, build_train_config, None)
    return top


def setup_logging(verbose: bool, quiet: bool) -> None:
    """The library's INFO lines (header, epochs, what it is doing) as plain lines on stderr;
    -q keeps warnings only, -v adds DEBUG and the logger names."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    root = logging.getLogger("yingshe")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


OVERRIDE = re.compile(r"^[A-Za-z_][\w]*\.[\w.]+=")


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """argparse, plus `key=value` overrides anywhere after the command: argparse fills a `*`
    positional once, so `--out DIR a.b=1 --epochs 2 c.d=2` would otherwise reject `c.d=2`."""
    top = parser()
    args, extras = top.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    stray = [word for word in extras if not (takes_overrides and OVERRIDE.match(word))]
    if stray:
        top.error(f"unrecognized arguments: {' '.join(stray)}")
    if extras:
        args.overrides = [*args.overrides, *extras]  # later overrides win, as on the command line
    return args


def main(argv: list[str] | None = None) -> int:
    from yingshe.transfer.cli import finetune_argv  # SOURCE before the trailing key=value overrides

    try:
        args = parse_command_line(finetune_argv(sys.argv[1:] if argv is None else argv))
    except SystemExit as done:  # --help, --version, or a bad argument (already explained)
        return int(done.code or 0)
    setup_logging(args.verbose, args.quiet)
    try:
        return args.handler(args)
    except YingsheError as err:
        print(f"error: {err.problem}", file=sys.stderr)
        if err.fix:
            print(f"  fix: {err.fix}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the user named: missing, unreadable, a full or read-only disk
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        print("  fix: check that path: it must exist, be readable, and its disk writable", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: files already written are intact; continue a training run with "
            "`yingshe train --resume RUN_DIR`",
            file=sys.stderr,
        )
        return 130
