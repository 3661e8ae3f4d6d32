"""The transfer verbs of the CLI: finetune, embed, neighbors, project, knn (thin over the library)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from yingshe.errors import YingsheError


def add_transfer_parsers(
    sub, add_train_arguments: Callable, build_config: Callable, progress_cb: Callable
) -> None:
    f = sub.add_parser("finetune", help="fine-tune a pretrained model (a run, timm:NAME, torchvision:NAME)")
    f.add_argument(
        "source", metavar="SOURCE", help="a yingshe run or checkpoint, timm:<name> or torchvision:<name>"
    )
    f.add_argument("--strategy", choices=["linear-probe", "full", "gradual"], help="default full")
    f.add_argument(
        "--freeze-until", metavar="LAYER", help="keep the body frozen up to this stage (see finetune.json)"
    )
    f.add_argument("--head-lr-mult", type=float, metavar="M", help="head learning rate = lr × M (default 10)")
    f.add_argument(
        "--weights", metavar="FILE", help=".pth/.pt/.safetensors: a state dict or a whole checkpoint"
    )
    add_train_arguments(f, "run folder (default runs/<data>-<model>-<time>)")
    f.set_defaults(handler=lambda args: cmd_finetune(args, build_config, progress_cb))

    e = sub.add_parser("embed", help="penultimate features of a split (.npy + .json index)")
    e.add_argument("run", metavar="RUN")
    e.add_argument("--data", help="dataset (default: the run's)")
    e.add_argument("--split", default="test", choices=["test", "val", "train"])
    e.add_argument("--out", required=True, metavar="FEATURES", help="writes FEATURES.npy and FEATURES.json")
    e.add_argument("--limit", type=int, help="a stratified subset of N images")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--device", default="cpu")
    e.set_defaults(handler=cmd_embed)

    n = sub.add_parser("neighbors", help="nearest indexed images by cosine similarity, with a PNG strip each")
    n.add_argument("run", metavar="RUN")
    n.add_argument("images", nargs="+", metavar="IMAGE")
    n.add_argument("--index", required=True, metavar="FEATURES", help="a feature file from `yingshe embed`")
    n.add_argument("--k", type=int, default=5)
    n.add_argument("--out", default="neighbors", help="folder for the PNG strips (default ./neighbors)")
    n.add_argument("--json", action="store_true")
    n.set_defaults(handler=cmd_neighbors)

    p = sub.add_parser("project", help="2-D map of a feature file coloured by class")
    p.add_argument("features", metavar="FEATURES")
    p.add_argument("--method", default="pca", choices=["pca", "tsne", "umap"])
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.set_defaults(handler=cmd_project)

    k = sub.add_parser("knn", help="k-NN accuracy of the run's features (train → test)")
    k.add_argument("run", metavar="RUN")
    k.add_argument("--data", help="dataset (default: the run's)")
    k.add_argument("--k", type=int, default=5)
    k.add_argument("--limit", type=int, help="a stratified subset of N images per split")
    k.add_argument("--out", help="folder for the two feature files (default <run>/knn)")
    k.set_defaults(handler=cmd_knn)


def cmd_finetune(args: argparse.Namespace, build_config: Callable, progress_cb: Callable) -> int:
    from yingshe.api import train

    cfg = build_config(args)
    cfg.finetune.source = args.source
    for flag in ("strategy", "freeze_until", "head_lr_mult", "weights"):
        if getattr(args, flag) is not None:
            setattr(cfg.finetune, flag, getattr(args, flag))
    if args.model:
        raise YingsheError("finetune takes its model from SOURCE", "leave out --model")
    result = train(cfg, callbacks=[progress_cb()] if progress_cb else None)
    from yingshe.train.distributed import env_context  # torch: not at the parser's start-up

    if not env_context().is_main:  # under torchrun, rank 0 speaks for the run (its report)
        return 0
    record = json.loads((result.run_dir / "finetune.json").read_text())
    report = result.report
    print(f"\nfine-tuned {record['model']} ({record['strategy']}) from {record['weights']}")
    print(f"test accuracy {100 * report['accuracy']:.2f}% on {report['num_test']} images")
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from yingshe.cli import progress_bar
    from yingshe.transfer.features import embed

    with progress_bar("embed") as progress:
        summary = embed(
            args.run, args.data, args.split, args.out, args.batch_size, args.limit, args.device, progress
        )
    print(
        f"{summary['count']} images × {summary['dim']} features → {summary['features']} ({summary['index']})"
    )
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    from yingshe.transfer.features import neighbors

    results = neighbors(args.run, args.index, args.images, args.k, args.out)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for entry in results:
        print(f"{entry['query']}  (strip: {entry['strip']})")
        for rank, hit in enumerate(entry["neighbors"], 1):
            print(f"  {rank}. {hit['similarity']:.4f}  {hit['label']:<16} {hit['path']}")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from yingshe.transfer.features import project

    summary = project(args.features, args.method, args.out)
    print(f"{summary['method']} map of {summary['count']} images → {summary['out']}")
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from yingshe.cli import progress_bar
    from yingshe.transfer.features import knn

    with progress_bar("embed") as progress:
        summary = knn(args.run, args.data, args.k, args.out, args.limit, progress)
    folder = Path(args.out) if args.out else Path(args.run) / "knn"
    print(
        f"{args.k}-NN accuracy {100 * summary['knn_accuracy']:.2f}% "
        f"({summary['test']} test images against {summary['train']} train images; features in {folder})"
    )
    return 0


def finetune_argv(argv: list[str]) -> list[str]:
    """`finetune SOURCE [flags] [key=value ...]`: argparse cannot take a positional, then flags,
    then more positionals, so SOURCE is moved to just before the trailing key=value overrides."""
    import re

    command = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if command is None or argv[command] != "finetune" or command + 1 >= len(argv):
        return argv
    source = argv[command + 1]
    if source.startswith("-"):
        return argv
    rest = argv[command + 2 :]
    tail = len(rest)
    while tail > 0 and re.match(r"^[A-Za-z_][\w.]*=", rest[tail - 1]):
        tail -= 1
    return [*argv[: command + 1], *rest[:tail], source, *rest[tail:]]
