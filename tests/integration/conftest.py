"""Models trained once per session on real data and shared by the integration tests (the
Fashion-MNIST run `fashion_run` lives in tests/conftest.py: the e2e server tests serve it too)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from support import one_thread

from yingshe.cli import main


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
