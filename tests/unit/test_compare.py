"""`yingshe report`: runs side by side from their report.json and metrics.csv files."""

import json

import pytest

from yingshe.errors import YingsheError
from yingshe.evaluate.compare import compare_runs
from yingshe.runs import write_metrics_csv


def fake_run(folder, accuracy: float, loss: float, data: str = "fashion-mnist", epochs: int = 3):
    folder.mkdir(parents=True)
    report = {
        "title": "seed-cnn on fashion-mnist",
        "split": "test",
        "accuracy": accuracy,
        "top5_accuracy": 0.99,
        "f1_macro": accuracy - 0.01,
        "f1_weighted": accuracy - 0.005,
        "ece": 0.05,
        "loss": loss,
        "num_test": 500,
        "data": {"spec": data},
        "model": {"name": "seed-cnn", "parameters": 1000},
        "training": {"epochs_run": epochs, "seconds": 12.5},
    }
    (folder / "report.json").write_text(json.dumps(report))
    rows = [
        {
            "epoch": e,
            "train_loss": loss * 2 / e,
            "val_loss": loss * 2.2 / e,
            "train_accuracy": 0.5,
            "val_accuracy": 0.5,
        }
        for e in range(1, epochs + 1)
    ]
    write_metrics_csv(folder / "metrics.csv", rows)
    return folder


def test_runs_side_by_side_with_the_best_of_each_column_marked(tmp_path):
    a = fake_run(tmp_path / "exp1" / "run", 0.80, 0.60)
    b = fake_run(tmp_path / "exp2" / "run", 0.75, 0.55)  # same folder name: parents tell them apart
    report = compare_runs([a, b], tmp_path / "cmp")
    assert [row["name"] for row in report["runs"]] == ["exp1/run", "exp2/run"]
    assert report["best"]["accuracy"] == 0.80 and report["best"]["loss"] == 0.55, "loss: lower is better"
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "**80.00%**" in md and "75.00%" in md and "**0.5500**" in md and "0.6000" in md
    assert "![curves.png](curves.png)" in md and (tmp_path / "cmp" / "curves.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "cmp" / "report.json").read_text())["runs"][1]["accuracy"] == 0.75
    assert not report["notes"]


def test_different_data_is_flagged(tmp_path):
    a = fake_run(tmp_path / "a", 0.8, 0.6)
    b = fake_run(tmp_path / "b", 0.9, 0.3, data="mnist")
    assert "different data" in compare_runs([a, b], tmp_path / "cmp")["notes"][0]


def test_a_folder_without_a_report_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(YingsheError, match="no report.json") as err:
        compare_runs([fake_run(tmp_path / "a", 0.8, 0.6), tmp_path / "empty"], tmp_path / "cmp")
    assert "yingshe evaluate" in err.value.fix
    assert not (tmp_path / "cmp").exists(), "nothing is written when an input is bad"
