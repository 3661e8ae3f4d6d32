"""The metric table: one row per figure, read by the report, the comparison, cv and train.monitor."""

import pytest
import torch

from yingshe.errors import YingsheError
from yingshe.evaluate import compare, report
from yingshe.evaluate.metrics import (
    METRICS,
    Predictions,
    full_metrics,
    headline,
    metric,
    monitor_choices,
    monitor_metric,
    summary_metrics,
)
from yingshe.train.callbacks import improved
from yingshe.tune import cv


def test_monitor_direction_comes_from_the_table():
    assert improved(0.01, 0.02, "val_ece") and not improved(0.03, 0.02, "val_ece")  # minimised
    assert improved(0.2, 0.3, "val_loss") and not improved(0.4, 0.3, "val_loss")
    assert improved(0.9, 0.8, "val_accuracy") and not improved(0.7, 0.8, "val_accuracy")
    assert improved(3, 2, "epoch")  # monitor=epoch keeps the last epoch
    assert not improved(float("nan"), None, "val_ece")


def test_an_unknown_monitor_is_an_error_naming_the_choices():
    with pytest.raises(YingsheError, match="val_acc") as err:
        improved(0.5, 0.4, "val_acc")
    assert "val_accuracy" in err.value.fix and "val_ece" in err.value.fix
    with pytest.raises(YingsheError, match="unknown metric"):
        metric("balanced")


def test_every_per_epoch_figure_is_a_monitor_choice_and_is_measured():
    torch.manual_seed(0)
    pred = Predictions(torch.randn(40, 3), torch.arange(40) % 3)
    row = summary_metrics(pred, 3)
    multi = summary_metrics(Predictions(torch.randn(40, 3), (torch.rand(40, 3) < 0.4).long()), 3)
    assert set(multi) == {"loss", "accuracy", "map"}  # a multi-label split's validation row
    for choice in monitor_choices():
        if choice.startswith("val_"):  # the validation row comes from summary_metrics
            assert choice.split("_", 1)[1] in {**row, **multi}, choice
        monitor_metric(choice)
    assert "train_ece" not in monitor_choices()  # not measured on the training batches
    assert 0 <= row["ece"] <= 1


def test_every_scalar_a_split_reports_is_a_row_of_the_table():
    torch.manual_seed(0)
    figures = full_metrics(Predictions(torch.randn(60, 7), torch.arange(60) % 7), list("abcdefg"))
    scalars = {key for key, value in figures.items() if isinstance(value, float)}
    multi = full_metrics(Predictions(torch.randn(60, 7), (torch.rand(60, 7) < 0.3).long()), list("abcdefg"))
    multi_scalars = {key for key, value in multi.items() if isinstance(value, float)}
    assert scalars | multi_scalars == {spec.key for spec in METRICS}  # each task reports its rows
    assert set(headline(figures)) == scalars and set(headline(multi)) == multi_scalars


def test_report_comparison_and_cv_show_one_title_and_format_per_metric(tmp_path):
    torch.manual_seed(0)
    figures = full_metrics(Predictions(torch.randn(60, 7), torch.arange(60) % 7), list("abcdefg"))
    body = {**figures, "classes": list("abcdefg"), "title": "t", "num_test": 60}
    markdown = report.markdown(body)
    for spec in (s for s in METRICS if s.key in figures):  # single-label rows (multi-label: their own)
        assert f"| {spec.title} | {spec.show(figures[spec.key])} |" in markdown
    assert spec.show(0.12345) == "0.1235" and metric("accuracy").show(0.5) == "50.00%"
    assert [s.key for s in compare.COLUMNS] == [key for key, _ in cv.CV_METRICS]
    titles = {spec.key: spec.title for spec in METRICS}
    assert all(titles[key] == title for key, title in cv.CV_METRICS)
    rows = [{"accuracy": 0.5, "ece": 0.2}, {"accuracy": 0.6, "ece": 0.1}]
    assert compare.best_values(rows) == {"accuracy": 0.6, "ece": 0.1}
