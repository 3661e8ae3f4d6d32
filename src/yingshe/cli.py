"""The `yingshe` command: parse arguments, build a config, call the API, print for a person.

Only this module parses arguments or prints; everything it does is a call into `yingshe.api`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yingshe.config import RunConfig, apply_overrides, load_config, set_value
from yingshe.errors import YingsheError
from yingshe.train.callbacks import Callback

# flag → config key; flags default to None so only the ones given override the config file
TRAIN_FLAGS = {
    "data": "data.spec",
    "model": "model.name",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
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
}


class ProgressBar(Callback):
    """A tqdm bar per epoch (loss, accuracy, images/s, ETA) and one summary line per epoch."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_epoch_start(self, trainer, epoch: int, steps: int) -> None:
        self.bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{trainer.cfg.train.epochs}",
            unit="step",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_train_progress(self, trainer, steps_done: int, stats: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(steps_done - self.bar.n)
        self.bar.set_postfix(
            loss=f"{stats['loss']:.3f}",
            acc=f"{100 * stats['accuracy']:.1f}%",
            img_s=f"{stats['images_per_second']:.0f}",
        )

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
        best = " *" if trainer.state.best_epoch == row["epoch"] else ""
        print(
            f"epoch {row['epoch']:>3}/{trainer.cfg.train.epochs}  "
            f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%  "
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%  "
            f"{row['train_images_per_second']:.0f} img/s  {row['epoch_seconds']:.1f} s{best}",
            flush=True,
        )


def build_train_config(args: argparse.Namespace) -> RunConfig:
    """defaults < --recipe < --config file < flags < key=value overrides.

    The recipe (`--recipe`, or `train.recipe` in the file or overrides) depends on the data's
    family, which the layers above it decide, so they are read once to find it and applied again
    on top of the recipe."""
    cfg = layer_train_config(args, RunConfig())
    recipe = getattr(args, "recipe", None) or cfg.train.recipe
    if recipe:
        from yingshe.recipes import apply_recipe, data_family, parse_recipe

        name, family = parse_recipe(recipe)
        base = apply_recipe(RunConfig(), name, family or data_family(cfg.data))
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
        result = train(resume=args.resume, callbacks=[ProgressBar()], epochs=args.epochs)
    else:
        result = train(build_train_config(args), callbacks=[ProgressBar()])
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
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
        if trial.state.name == "PRUNED":
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
    from yingshe.tune.cv import cross_validate

    def announce(fold: int, folds: int) -> None:
        print(f"\nfold {fold}/{folds}", flush=True)

    result = cross_validate(build_train_config(args), args.folds, callbacks=[ProgressBar()], on_fold=announce)
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
    from yingshe.evaluate.compare import compare_runs

    report = compare_runs(args.runs, args.out)
    for row in report["runs"]:
        print(f"{row['name']}\taccuracy {100 * row['accuracy']:.2f}%\t{row['model']} on {row['data']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {Path(report['report_dir']) / 'report.md'}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from yingshe.api import explain
    from yingshe.inference import expand_paths

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
    from yingshe.api import load
    from yingshe.inference import expand_paths

    classifier = load(args.run, device=args.device)
    paths = expand_paths(args.paths)
    if not paths:
        raise YingsheError("no images to predict", "pass image files or folders that contain images")
    predictions = classifier.predict(paths, top_k=args.top_k)
    for p in predictions:
        shown = p.error or "  ".join(f"{name} {100 * prob:.1f}%" for name, prob in p.top)
        print(f"{p.source}\t{shown}")
    if args.output:
        write_predictions(Path(args.output), predictions)
        print(f"predictions written to {args.output}")
    failed = sum(p.error is not None for p in predictions)
    return 1 if failed == len(predictions) else 0


def write_predictions(path: Path, predictions) -> None:
    from yingshe.runs import atomic_write_json, atomic_write_text

    if path.suffix.lower() == ".json":
        atomic_write_json(
            path,
            [
                {
                    "path": p.source,
                    "top": [{"class": c, "probability": v} for c, v in p.top],
                    "error": p.error,
                }
                for p in predictions
            ],
        )
        return
    if path.suffix.lower() != ".csv":
        raise YingsheError(f"cannot write predictions to {path}", "use a .csv or .json file name")
    k = max((len(p.top) for p in predictions), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["path"] + [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("class", "prob")] + ["error"]
    )
    for p in predictions:
        cells = [x for c, v in p.top for x in (c, f"{v:.6f}")]
        writer.writerow([p.source, *cells, *[""] * (2 * k - len(cells)), p.error or ""])
    atomic_write_text(path, buffer.getvalue())


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from yingshe.api import inspect_data

    with tqdm(desc="checking images", unit="img", file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = inspect_data(args.spec, args.data_dir, progress)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(summary["description"])
    print(
        f"{len(summary['classes'])} classes: {', '.join(summary['classes'][:30])}"
        + (" …" if len(summary["classes"]) > 30 else "")
    )
    for name, split in summary["splits"].items():
        print(f"\n[{name}] {split['images']} images")
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
    for note in summary["notes"]:
        print(f"note: {note}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from yingshe.api import prepare_data

    desc = "decoding" if args.format == "packed" else "writing shards"
    with tqdm(desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = prepare_data(
            args.spec,
            args.out,
            args.image_size,
            args.channels,
            fmt=args.format,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            workers=args.workers,
            shard_mb=args.shard_mb,
            force=args.force,
            progress=progress,
        )
    if args.json:
        print(json.dumps(summary, indent=2))
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
    if summary["picked_up"]:
        print(f"training on {args.spec} now reads these shards (data.prepared=auto)")
    print(f"train on them directly with --data {summary['out']}")
    return 0


def cmd_data_samples(args: argparse.Namespace) -> int:
    from yingshe.api import write_samples

    written = write_samples(args.spec, args.out, args.count, args.split, args.data_dir)
    print(f"wrote {len(written)} images to {args.out}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from yingshe.recipes import FAMILIES, list_recipes, recipe_overrides

    for name, summary in list_recipes():
        print(f"{name}: {summary}")
        if args.verbose_recipes:
            for family in FAMILIES:
                text = yaml.safe_dump(recipe_overrides(name, family), sort_keys=False)
                print(f"  [{family}]\n" + "\n".join("    " + line for line in text.splitlines()))
    print("\nUse: yingshe train --data DATA --recipe NAME [key=value ...]; --show prints the settings.")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from yingshe.models import count_parameters, create_model, list_models

    print(f"{'name':<14} {'parameters':>12}  description (10 classes, 3×32×32 input)")
    for name, summary in list_models():
        params = count_parameters(create_model(name, 10, 3, 32))
        print(f"{name:<14} {params:>12,}  {summary}")
    print("\nAlso: timm:<name> (any timm model) and torchvision:<name> (any torchvision classifier).")
    return 0


def add_train_arguments(t: argparse.ArgumentParser, out_help: str) -> None:
    """The flags `train` and `cv` share (TRAIN_FLAGS maps them onto config keys)."""
    t.add_argument("--data", help="dataset name (digits, fashion-mnist, mnist, cifar10, cifar100) or path")
    t.add_argument("--model", help="model name; see `yingshe models`")
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--limit-train", type=int, help="train on a stratified subset of N images")
    t.add_argument("--limit-test", type=int, help="evaluate on a stratified subset of N images")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
    t.add_argument("--image-size", type=int)
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--seed", type=int)
    t.add_argument("--deterministic", action="store_true")
    t.add_argument("--workers", type=int, help="decoding processes for image files")
    t.add_argument("--patience", type=int, help="early stopping patience in epochs")
    t.add_argument("--out", help=out_help)
    t.add_argument(
        "--recipe",
        metavar="NAME",
        help="tuned settings for the data's family: fast or best (`yingshe recipes`); NAME:FAMILY forces "
        "the family (grey-28, colour-32, large); --config, flags and key=value override it key by key",
    )
    t.add_argument("--config", help="YAML config file (sections data, model, augment, optim, train)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.01 augment.mixup=0.2")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="yingshe", description="Image classifiers from image datasets.")
    top.add_argument("-v", "--verbose", action="store_true", help="log what the library is doing")
    sub = top.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier, then evaluate it on the test split")
    add_train_arguments(t, "run folder (default runs/<data>-<model>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last.pt")
    t.set_defaults(handler=cmd_train)

    c = sub.add_parser("cv", help="k-fold cross-validation: one training run per stratified fold")
    c.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    add_train_arguments(c, "cross-validation folder (default runs/cv-<data>-<model>-<time>)")
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

    e = sub.add_parser("evaluate", help="evaluate a run or checkpoint on a dataset split")
    e.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--data", help="dataset (default: the one it was trained on)")
    e.add_argument("--split", default="test", choices=["test", "val", "train"])
    e.add_argument("--limit", type=int, help="evaluate a stratified subset of N images")
    e.add_argument("--out", help="report folder (default <run>/evaluate-<split>)")
    e.add_argument("--device", default="auto")
    e.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes for image files or folders")
    p.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--output", help="write predictions to FILE.csv or FILE.json")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=cmd_predict)

    d = sub.add_parser("data", help="look at datasets").add_subparsers(dest="data_command", required=True)
    di = d.add_parser("inspect", help="classes, counts, sizes, modes and unreadable files")
    di.add_argument("spec")
    di.add_argument("--data-dir")
    di.add_argument("--json", action="store_true")
    di.set_defaults(handler=cmd_data_inspect)
    ds = d.add_parser("samples", help="write a few images of a split as PNG files")
    ds.add_argument("spec")
    ds.add_argument("--out", required=True)
    ds.add_argument("--count", type=int, default=8)
    ds.add_argument("--split", default="test", choices=["test", "train"])
    ds.add_argument("--data-dir")
    ds.set_defaults(handler=cmd_data_samples)
    dp = d.add_parser(
        "prepare",
        help="decode every image once into uint8 shards (training picks them up), or write WebDataset tars",
    )
    dp.add_argument("spec", help="dataset name or path (folder, tar, CSV, WebDataset shards, ...)")
    dp.add_argument("--out", help="output folder (default: the cache, where training finds the shards)")
    dp.add_argument("--image-size", type=int, help="side of the stored images (default: as training picks)")
    dp.add_argument("--channels", type=int, choices=[1, 3])
    dp.add_argument("--format", default="packed", choices=["packed", "webdataset"])
    dp.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    dp.add_argument("--shard-mb", type=float, default=128.0, help="size of a packed shard")
    dp.add_argument("--data-dir")
    dp.add_argument("--cache-dir", help="the prepared-data cache (default $YINGSHE_CACHE or ~/.cache)")
    dp.add_argument("--force", action="store_true", help="replace what --out holds")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(handler=cmd_data_prepare)

    m = sub.add_parser("models", help="list the model names with parameter counts")
    m.set_defaults(handler=cmd_models)

    r = sub.add_parser("recipes", help="list the training recipes (tuned settings per data family)")
    r.add_argument("--show", dest="verbose_recipes", action="store_true", help="print every setting")
    r.set_defaults(handler=cmd_recipes)

    r = sub.add_parser("report", help="compare runs side by side: a table and overlaid curves")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or evaluate folders)")
    r.add_argument("--out", required=True, help="folder for report.md, report.json and curves.png")
    r.set_defaults(handler=cmd_report)

    x = sub.add_parser("explain", help="heat maps of where the model looks, over each image")
    x.add_argument("run", metavar="RUN_DIR|CHECKPOINT")
    x.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    x.add_argument(
        "--method",
        default="auto",
        choices=["auto", "gradcam", "saliency"],
        help="gradcam (conv nets), saliency (any model); auto picks gradcam where it applies",
    )
    x.add_argument("--out", required=True, help="folder for the overlay PNGs")
    x.add_argument("--top-k", type=int, default=3)
    x.add_argument("--class", dest="target", metavar="NAME", help="explain this class, not the predicted one")
    x.add_argument("--device", default="auto")
    x.set_defaults(handler=cmd_explain)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except YingsheError as err:
        print(f"error: {err.problem}", file=sys.stderr)
        if err.fix:
            print(f"  fix: {err.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: files already written are intact; continue a training run with "
            "`yingshe train --resume RUN_DIR`",
            file=sys.stderr,
        )
        return 130
