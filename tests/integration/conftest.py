"""Models trained once per session on real data and shared by the integration tests."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

import yingshe
from yingshe.cli import main
from yingshe.config import RunConfig, apply_overrides


@contextlib.contextmanager
def one_thread():
    """Train on one CPU thread: the model then comes out bit-identical on any machine (the order
    of float sums depends on the thread count), and on a shared 2-core box one thread runs several
    times faster than two threads that keep preempting each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory, datasets_dir) -> yingshe.TrainResult:
    """A seed-cnn of half the default width trained for 3 epochs on 2,000 Fashion-MNIST images
    (about 76% on 500 test images, ~10 s on two idle cores). Its run folder holds the report and
    every figure `train` writes."""
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            "data.spec=fashion-mnist",
            f"data.data_dir={datasets_dir}",
            "data.limit_train=2000",
            "data.limit_test=500",
            "train.epochs=3",
            "train.batch_size=64",
            "train.device=cpu",
            "model.kwargs={widths: [16, 32, 64, 128]}",
            f"train.out={tmp_path_factory.mktemp('fashion-run')}",
        ],
    )
    with one_thread():
        return yingshe.train(cfg)


@pytest.fixture(scope="session")
def fashion_cv(tmp_path_factory, datasets_dir) -> tuple[Path, str]:
    """`yingshe cv --folds 3` on a 600-image pool of Fashion-MNIST, 2 epochs a fold, no figures
    per fold (~10 s): the cross-validation folder and what the command printed."""
    out = tmp_path_factory.mktemp("fashion-cv")
    flags = "--data fashion-mnist --folds 3 --limit-train 600 --limit-test 200 --epochs 2 --batch-size 32"
    argv = [
        "cv",
        *flags.split(),
        *["--device", "cpu", "--out", str(out), f"data.data_dir={datasets_dir}"],
        "model.kwargs={widths: [16, 32, 64, 128]}",  # a quarter of the default's work
        "train.plots=false",  # the fold runs' own PNGs cost more than their training here
    ]
    printed = io.StringIO()
    with one_thread(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return out, printed.getvalue()
