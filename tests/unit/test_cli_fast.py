"""The CLI answers --help and --version without torch, and every key is documented (issue 9)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import yingshe
from yingshe.config import config_markdown, describe
from yingshe.train.optim import OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "yingshe", *args], capture_output=True, text=True, timeout=60
    )
    return result, time.perf_counter() - started


def test_help_and_version_answer_fast_and_do_not_import_torch():
    probe = (
        "import sys, yingshe, yingshe.cli; yingshe.cli.parser(); "
        "print(sorted({'torch', 'tqdm', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for args in (["--help"], ["train", "--help"], ["data", "prepare", "--help"]):
        result, seconds = run(*args)
        assert result.returncode == 0 and "usage: yingshe" in result.stdout
        assert seconds < 2.5, f"yingshe {' '.join(args)} took {seconds:.2f} s"
    result, seconds = run("--version")
    assert result.returncode == 0 and seconds < 2.5
    assert f"yingshe {yingshe.__version__}" in result.stdout and "torch " in result.stdout
    assert "device: " in result.stdout


def test_help_shows_the_config_defaults_and_ranges():
    result, _ = run("train", "--help")
    text = " ".join(result.stdout.split())
    assert "(config train.epochs, default: 10; > 0)" in text
    assert "(config optim.name, default: adamw)" in text and "{sgd,adam,adamw,rmsprop,adagrad,muon}" in text


def test_config_lists_every_key_and_the_docs_table_is_current():
    rows = describe()
    assert all(row["meaning"] for row in rows), [row["key"] for row in rows if not row["meaning"]]
    result, _ = run("config", "--show", "lr")
    assert "optim.lr  float = 0.002  [> 0]" in result.stdout and "peak learning rate" in result.stdout
    docs = (ROOT / "docs" / "config.md").read_text()
    assert docs == config_markdown(), "docs/config.md is stale: yingshe config --markdown > docs/config.md"


def test_choices_in_the_config_are_the_registries_names():
    from typing import get_args

    from yingshe.config import OptimizerName, Schedule

    assert set(get_args(OptimizerName)) == set(OPTIMIZERS.names())
    assert set(get_args(Schedule)) == set(SCHEDULES.names())
    from yingshe.config import Monitor
    from yingshe.evaluate.metrics import monitor_choices

    assert list(get_args(Monitor)) == monitor_choices()


def test_package_names_resolve_lazily():
    import yingshe.evaluate.plots
    import yingshe.train.callbacks

    assert set(yingshe.__all__) == set(yingshe._EXPORTS) | set(yingshe._PACKAGES)
    assert set(yingshe.__all__) <= set(dir(yingshe))
    assert all(getattr(yingshe, name) is not None for name in yingshe.__all__)


CALLABLE_PACKAGES = {  # name → (a submodule, the function a call lands in)
    "train": ("trainer", "yingshe.api:train"),
    "evaluate": ("metrics", "yingshe.api:evaluate"),
    "tune": ("cv", "yingshe.tune.tuner:tune"),
    "export": ("parity", "yingshe.export:export_model"),
}


@pytest.mark.parametrize("name", sorted(CALLABLE_PACKAGES))
def test_callable_packages_import_every_way_and_call_their_function(name):
    """`import yingshe.X.sub as m`, `from yingshe.X import sub`, `import yingshe.X.sub` and
    `yingshe.X(...)` all work, in a fresh interpreter, whichever comes first."""
    sub, target = CALLABLE_PACKAGES[name]
    module, _, function = target.partition(":")
    code = f"""
import importlib, sys
import yingshe.{name}.{sub} as first
from yingshe.{name} import {sub} as second
import yingshe.{name}.{sub}
import pytest

import yingshe
assert first is second is yingshe.{name}.{sub} is sys.modules["yingshe.{name}.{sub}"]
assert yingshe.{name} is sys.modules["yingshe.{name}"]
setattr(importlib.import_module("{module}"), "{function}", lambda *a, **k: ("called", a, k))
assert yingshe.{name}(1, key=2) == ("called", (1,), {{"key": 2}})
from yingshe import {name} as bound
assert bound(3) == ("called", (3,), {{}})
"""
    env = {**os.environ, "PYTHONPATH": str(Path(yingshe.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_overrides_may_come_between_and_after_options():
    from yingshe.cli import parse_command_line

    args = parse_command_line(
        ["train", "--data", "digits", "optim.lr=0.1", "--out", "r", "train.plots=false", "optim.lr=0.2"]
    )
    assert args.out == "r" and args.overrides == ["optim.lr=0.1", "train.plots=false", "optim.lr=0.2"]
    with pytest.raises(SystemExit):
        parse_command_line(["train", "--data", "digits", "a.b=1", "--out", "r", "stray"])  # not key=value
    with pytest.raises(SystemExit):
        parse_command_line(["models", "optim.lr=0.1"])  # a command without overrides refuses them
