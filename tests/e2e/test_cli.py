"""The `yingshe` command end to end, as a user runs it, on the real datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yingshe.cli import main

REPO = Path(__file__).resolve().parents[2]


def yingshe(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m yingshe ARGS` (what the console script and torchrun both run)."""
    result = subprocess.run(
        [sys.executable, "-m", "yingshe", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"yingshe {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def train_small(data, model: str, run: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The issue's must-show command: 2,000 training and 1,000 test images, one epoch."""
    flags = ["--limit-train", 2000, "--limit-test", 1000, "--epochs", 1, "--out", run]
    return yingshe("train", "--data", data, "--model", model, *flags, env=env)


def test_fashion_mnist_train_then_evaluate(datasets_dir, tmp_path):
    run = tmp_path / "fm"
    env = {"YINGSHE_DATA": str(datasets_dir)}
    out = train_small("fashion-mnist", "seed-cnn", run, env=env)
    assert "test accuracy" in out.stdout and str(run / "report.md") in out.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["num_test"] == 1000 and report["num_train"] == 1800 and report["skipped_files"] == 0
    assert report["accuracy"] > 0.3, "one epoch on 1,800 images learns well above chance (10%)"
    assert report["classes"][0] == "T-shirt/top"
    ev = yingshe("evaluate", run, env=env)
    evaluated = json.loads((run / "evaluate-test" / "report.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(report["accuracy"])
    assert "test accuracy" in ev.stdout


def test_cifar_jpeg_archive_resnet20_train_and_predict_jpegs(cifar_tar, cifar_folder, tmp_path):
    run = tmp_path / "cifar"
    train_small(cifar_tar, "resnet20", run)
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["image_size"] == 32 and report["data"]["channels"] == 3
    assert report["num_test"] == 1000
    jpegs = sorted((cifar_folder / "test" / "ship").glob("*.jpg"))[:3]
    output = tmp_path / "predictions.json"
    yingshe("predict", run / "best.pt", *jpegs, "--top-k", 3, "--output", output)
    rows = json.loads(output.read_text())
    assert [Path(r["path"]).name for r in rows] == [j.name for j in jpegs]
    for row in rows:
        assert row["error"] is None and len(row["top"]) == 3
        probabilities = [t["probability"] for t in row["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
        assert {t["class"] for t in row["top"]} <= set(report["classes"])


def test_data_inspect_reports_sizes_modes_and_unreadable_files(photo_folder):
    out = yingshe("data", "inspect", photo_folder, "--json")
    summary = json.loads(out.stdout)
    train = summary["splits"]["train"]
    assert summary["classes"] == ["airplane", "cat", "ship"]
    assert train["images"] == 93
    assert sorted(Path(u.split(":")[0]).name for u in train["unreadable"]) == [
        "empty.png",
        "notes.jpg",
        "truncated.jpg",
    ]
    assert {"RGB", "RGBA", "P", "L", "CMYK"} <= set(train["modes"])
    assert train["width"]["min"] == 32 and train["width"]["max"] == 120
    text = yingshe("data", "inspect", photo_folder).stdout
    assert "unreadable:" in text and "truncated.jpg" in text


def test_bad_input_gets_a_clear_error_and_no_traceback(tmp_path, capsys):
    result = yingshe("train", "--data", tmp_path / "missing", check=False)  # one real process
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and "fix:" in result.stderr
    cases = [
        (["train", "--data", tmp_path / "missing"], "does not exist"),
        (["train", "--model", "resnet21", "--out", tmp_path / "a"], "did you mean 'resnet20'"),
        (["train", "optim.lrr=0.1", "--out", tmp_path / "b"], "did you mean 'optim.lr'"),
        (["evaluate", tmp_path], "holds no best.pt"),
        (["predict", tmp_path / "nope.pt", tmp_path], "does not exist"),
    ]
    for args, message in cases:
        assert main([str(a) for a in args]) == 2, args
        stderr = capsys.readouterr().err
        assert message in stderr and "fix:" in stderr


def test_module_and_console_script_are_the_same_command():
    script = Path(sys.executable).with_name("yingshe")
    via_script = subprocess.run([script, "models"], capture_output=True, text=True, check=True).stdout
    assert via_script == yingshe("models").stdout
    assert "resnet20" in via_script and "272,474" in via_script


def test_readme_demo_trains_evaluates_and_predicts(tmp_path):
    run = tmp_path / "demo"
    result = subprocess.run(
        ["bash", REPO / "scripts" / "demo.sh"],
        capture_output=True,
        text=True,
        env={**os.environ, "RUN_DIR": str(run)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"report: {run}/report.md" in result.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["accuracy"] > 0.9
    predictions = (run / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 9 and predictions[0].startswith("path,class_1,prob_1")
