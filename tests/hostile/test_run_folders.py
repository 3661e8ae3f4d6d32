"""Output folders are never written over: `report --out`, `train --out`, `evaluate --out` refuse
a folder holding a run or someone else's files (exit 2, error:/fix: naming it, every file
unchanged byte for byte), and a run that fails before it is built leaves no folder behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_helpers import assert_clean_error, cli, snapshot, tiny_config, tiny_flags, tiny_run

import yingshe
from yingshe.errors import YingsheError

USER_FILES = {
    "report.md": b"# my notes\nkeep me\n",
    "config.yaml": b"mine: true\n",
    "metrics.csv": b"a,b\n1,2\n",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("hostile-run") / "run")


def user_folder(root: Path, files: dict[str, bytes] = USER_FILES) -> Path:
    folder = root / "mine"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_report_refuses_to_write_over_another_run(run, tmp_path, capsys):
    other = tmp_path / "other-run"
    shutil.copytree(run, other)
    before = snapshot(other)
    code, _, err = cli(capsys, "report", run, "--out", other)
    assert_clean_error(code, err, other, "run folder")
    assert snapshot(other) == before
    assert json.loads((other / "report.json").read_text())["accuracy"] >= 0  # still reads as a run


def test_report_refuses_files_it_would_overwrite_but_replaces_an_earlier_comparison(run, tmp_path, capsys):
    mine = user_folder(tmp_path, {"report.md": USER_FILES["report.md"], "notes.txt": b"x"})
    before = snapshot(mine)
    code, _, err = cli(capsys, "report", run, "--out", mine)
    assert_clean_error(code, err, mine, "report.md")
    assert snapshot(mine) == before

    comparison = tmp_path / "cmp"
    assert cli(capsys, "report", run, "--out", comparison)[0] == 0
    first = (comparison / "report.json").read_bytes()
    assert cli(capsys, "report", run, run, "--out", comparison)[0] == 0  # a new comparison replaces it
    assert (comparison / "report.json").read_bytes() != first
    assert not (comparison / ".yingshe.lock").exists()


def test_report_out_that_is_a_file_is_refused(run, tmp_path, capsys):
    target = tmp_path / "report.json"
    target.write_bytes(b"{}")
    code, _, err = cli(capsys, "report", run, "--out", target)
    assert_clean_error(code, err, target)
    assert target.read_bytes() == b"{}"


def test_train_refuses_a_folder_of_user_files(tmp_path, capsys):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    code, _, err = cli(capsys, *tiny_flags(mine))
    assert_clean_error(code, err, mine, "report.md", "train.exist_ok=true")
    assert snapshot(mine) == before


def test_train_exist_ok_writes_into_a_user_folder(tmp_path, capsys):
    mine = user_folder(tmp_path, {"notes.txt": b"kept\n"})
    code, _, err = cli(capsys, *tiny_flags(mine), "train.exist_ok=true")
    assert code == 0, err
    assert (mine / "notes.txt").read_bytes() == b"kept\n"
    assert {"config.yaml", "last.pt", "best.pt", "report.json"} <= set(p.name for p in mine.iterdir())
    assert not (mine / ".yingshe.lock").exists(), "the lock file goes with the lock"


def test_train_refuses_an_existing_run_without_resume(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    code, _, err = cli(capsys, *tiny_flags(copy))
    assert_clean_error(code, err, copy, "--resume")
    assert snapshot(copy) == before


def test_train_out_that_is_a_file_or_under_a_file_is_refused(tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"data")
    for out in (plain, plain / "run"):
        code, _, err = cli(capsys, *tiny_flags(out))
        assert_clean_error(code, err, plain, "is a file")
    assert plain.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_unknown_models_leave_no_folder_and_say_what_exists(tmp_path, capsys):
    out = tmp_path / "deep" / "run"
    code, _, err = cli(capsys, *tiny_flags(out), "model.name=nosuch-net")
    assert_clean_error(code, err, "nosuch-net", "seed-cnn")
    code, _, err = cli(capsys, *tiny_flags(out), "model.name=timm:zzqqxxyy")
    assert_clean_error(code, err, "zzqqxxyy", "yingshe models")
    assert "choose one of: \n" not in err and not err.rstrip().endswith("choose one of:")
    code, _, err = cli(capsys, *tiny_flags(out), "model.name=timm:resnet181")
    assert_clean_error(code, err, "did you mean", "timm:resnet18")
    assert list(tmp_path.iterdir()) == [], "nothing is created for a run that could not be built"


def test_evaluate_refuses_user_files_and_replaces_its_own_report(run, tmp_path, capsys):
    mine = user_folder(tmp_path)
    before = snapshot(mine)
    code, _, err = cli(capsys, "evaluate", run, "--out", mine, "--device", "cpu")
    assert_clean_error(code, err, mine, "report.md")
    assert snapshot(mine) == before

    folder = tmp_path / "eval"
    for _ in range(2):  # the second evaluation replaces the first one's report
        code, _, err = cli(capsys, "evaluate", run, "--out", folder, "--device", "cpu", "--limit", "40")
        assert code == 0, err
    assert json.loads((folder / "report.json").read_text())["split"] == "test"
    assert not (folder / ".yingshe.lock").exists()


def test_runs_that_cannot_train_leave_no_folder(tmp_path, capsys):
    """--epochs 0 and --batch-size 0 fail (when the config is built, or at the latest before the
    first checkpoint); either way no run folder is left behind."""
    out = tmp_path / "run"
    code, _, err = cli(capsys, *tiny_flags(out, epochs=0))
    assert code == 2 and "Traceback" not in err, err
    assert not out.exists()
    with pytest.raises((YingsheError, ValueError)):
        yingshe.train(tiny_config(out, "train.batch_size=0"))
    assert list(tmp_path.iterdir()) == []
