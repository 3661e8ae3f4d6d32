"""Shared pieces of the run-folder hostile tests (tests/hostile/test_run_*.py): a tiny real run,
byte-for-byte snapshots of folders, and the CLI called in-process or as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yingshe
from yingshe.cli import main
from yingshe.config import RunConfig, apply_overrides

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = [
    "data.spec=digits",
    "train.epochs=1",
    "train.batch_size=128",
    "train.device=cpu",
    "train.plots=false",
    "model.kwargs={widths: [8, 8, 8, 8]}",
]


def tiny_config(out: Path, *overrides: str) -> RunConfig:
    """Digits, one epoch of a seed-cnn with 8 channels: a real run folder in about a second."""
    cfg = RunConfig()
    apply_overrides(cfg, [*TINY, f"train.out={out}", *overrides])
    return cfg


def tiny_run(out: Path, *overrides: str) -> Path:
    return yingshe.train(tiny_config(out, *overrides)).run_dir


def tiny_flags(out: Path, epochs: int = 1) -> list[str]:
    """`yingshe train` arguments for the same tiny run (key=value overrides come last)."""
    flags = ["train", "--data", "digits", "--epochs", str(epochs), "--batch-size", "128", "--device", "cpu"]
    return [*flags, "--out", str(out), "train.plots=false", "model.kwargs={widths: [8, 8, 8, 8]}"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) by relative path, with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`yingshe ARGV` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *named: object) -> None:
    """Exit 2, an `error:` line and a `fix:` line naming each of `named`, and no traceback."""
    assert code == 2, err
    lines = err.splitlines()
    assert any(line.startswith("error: ") for line in lines), err  # after any progress bar
    assert any(line.startswith("  fix: ") for line in lines), err
    assert "Traceback" not in err, err
    for thing in named:
        assert str(thing) in err, f"{thing} not named in: {err}"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def yingshe_process(*argv: object, preexec_fn=None, prefix: list[str] | None = None, **kwargs):
    """`yingshe ARGV` as a real process (optionally behind `prefix`, e.g. `unshare`)."""
    command = [*(prefix or []), sys.executable, "-m", "yingshe", *map(str, argv)]
    return subprocess.run(
        command, capture_output=True, text=True, env=env(), preexec_fn=preexec_fn, timeout=600, **kwargs
    )


# Several `yingshe` commands in one real process (one import of torch instead of one each).
BATCH = """
import contextlib, io, json, sys
from yingshe.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
with open(sys.argv[2], "w") as handle:
    json.dump(results, handle)
"""


def yingshe_batch(results: Path, *argvs: list[object], prefix: list[str] | None = None) -> list[dict]:
    """Run each argv through the CLI's `main` in one real process (behind `prefix`); a traceback
    fails the test with the process's stderr."""
    argv_json = json.dumps([[str(a) for a in argv] for argv in argvs])
    command = [*(prefix or []), sys.executable, "-c", BATCH, argv_json, str(results)]
    done = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(results.read_text())


# A process that holds a folder's lock without importing torch: the `yingshe` package is made a
# bare namespace so only errors.py and outputs.py load (the package's __init__ imports the API).
LIGHT_HOLDER = """
import os, sys, time, types
pkg = types.ModuleType("yingshe"); pkg.__path__ = [{src!r} + "/yingshe"]; sys.modules["yingshe"] = pkg
from yingshe.outputs import RunLock
RunLock(sys.argv[1]).acquire("train")
child = 0
if len(sys.argv) > 2:  # fork a child that outlives us, as a DataLoader or decoding worker can
    child = os.fork()
    if child == 0:
        time.sleep(120); os._exit(0)
print("locked", child, flush=True)
time.sleep(120)
"""


def start_light_holder(folder: Path, fork_child: bool = False) -> tuple[subprocess.Popen, int]:
    """A real process holding `folder`'s lock, and the PID of its forked child (0: none); returns
    once it holds the lock."""
    script = LIGHT_HOLDER.format(src=str(SRC))
    argv = [sys.executable, "-c", script, str(folder)] + (["fork"] if fork_child else [])
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env())
    word, child = holder.stdout.readline().split()
    assert word == "locked"
    return holder, int(child)
