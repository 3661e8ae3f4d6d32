"""Evaluation of a real trained model: every reported figure against scikit-learn on the same
predictions, the JSON, Markdown and PNGs of `yingshe evaluate` and `train`, `yingshe report`,
and `predict --output`."""

import contextlib
import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from yingshe.api import eval_batches, load
from yingshe.cli import main
from yingshe.config import RunConfig
from yingshe.data.augment import Normalize
from yingshe.data.dataset import build_dataset
from yingshe.evaluate.metrics import predict_batches
from yingshe.inference import model_from_checkpoint
from yingshe.runs import load_checkpoint

TOL = 1e-6
FIGURES = [
    "training_curves.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "reliability.png",
    "confident_errors.png",
]


def run_cli(*argv: str) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def evaluated(fashion_run, tmp_path_factory) -> Path:
    """`yingshe evaluate RUN --data fashion-mnist` into a folder of its own."""
    out = tmp_path_factory.mktemp("evaluate")
    flags = f"--data fashion-mnist --limit 500 --device cpu --out {out}"
    code, printed = run_cli("evaluate", str(fashion_run.run_dir), *flags.split())
    assert code == 0 and "accuracy" in printed
    return out


def numpy_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """L1 expected calibration error over equal-width confidence bins (lo, hi] (Guo et al. 2017)."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    ece = 0.0
    for lo, hi in itertools.pairwise(np.arange(n_bins + 1) / n_bins):
        members = (confidence > lo) & (confidence <= hi) | ((confidence == 0) & (lo == 0))
        if members.any():
            ece += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return float(ece)


def same_predictions(run_dir: Path):
    """The model's logits on the evaluated images, recomputed independently of the report."""
    payload = load_checkpoint(run_dir)
    cfg = RunConfig.from_dict(payload.config)
    data = build_dataset(cfg.data, cfg.train.seed)
    model = model_from_checkpoint(payload)
    batches = eval_batches(data.test, data, cfg, torch.device("cpu"), Normalize(data.mean, data.std), False)
    return predict_batches(model, batches)


def test_every_reported_figure_agrees_with_sklearn(fashion_run, evaluated):
    report = json.loads((evaluated / "report.json").read_text())
    pred = same_predictions(fashion_run.run_dir)
    probs = pred.logits.double().softmax(1).numpy()
    y, guess, k = pred.labels.numpy(), probs.argmax(1), probs.shape[1]
    assert len(y) == report["num_test"] == 500
    expected = {
        "accuracy": skm.accuracy_score(y, guess),
        "top5_accuracy": skm.top_k_accuracy_score(y, probs, k=5, labels=list(range(k))),
        "loss": skm.log_loss(y, probs, labels=list(range(k))),
        "ece": numpy_ece(probs, y),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, guess, average=average, zero_division=0)
        expected |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=TOL), key
    assert report["confusion_matrix"] == skm.confusion_matrix(y, guess, labels=list(range(k))).tolist()
    p, r, f, support = skm.precision_recall_fscore_support(y, guess, labels=list(range(k)), zero_division=0)
    for i, row in enumerate(report["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=TOL)
        assert row["support"] == support[i]
    assert 0.6 < report["accuracy"] < 0.95, "a 3-epoch seed-cnn on 2,000 images: well above chance"
    assert report["accuracy"] == pytest.approx(fashion_run.report["accuracy"]), (
        "evaluate repeats train's test"
    )


def assert_real_png(path: Path, min_side: int = 300, max_side: int = 4000) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min_side <= min(image.size) and max(image.size) <= max_side, (path.name, image.size)
        assert np.asarray(image.convert("L"), dtype=np.float32).std() > 5, f"{path.name} is blank"


def test_evaluate_writes_json_markdown_and_every_png(evaluated):
    report = json.loads((evaluated / "report.json").read_text())
    assert report["plots"] == FIGURES, "training curves come from the run's metrics.csv"
    for name in FIGURES:
        assert_real_png(evaluated / name)
    md = (evaluated / "report.md").read_text()
    for section in ("## Summary", "## Per class", "## Most confused pairs", "## Plots"):
        assert section in md
    assert "| Ankle boot |" in md and "| top-5 accuracy |" in md
    for name in FIGURES:
        assert f"![{name}]({name})" in md
    errors = report["confident_errors"]
    assert 0 < len(errors) <= 16
    assert all(e["true"] != e["predicted"] for e in errors)
    assert [e["confidence"] for e in errors] == sorted((e["confidence"] for e in errors), reverse=True)
    pairs = report["confused_pairs"]
    assert pairs[0]["count"] == max(
        c for i, row in enumerate(report["confusion_matrix"]) for j, c in enumerate(row) if i != j
    )


def test_train_writes_the_same_report_and_figures(fashion_run):
    report = fashion_run.report
    assert report["plots"] == FIGURES
    for name in FIGURES:
        assert_real_png(fashion_run.run_dir / name)
    assert "![reliability.png](reliability.png)" in (fashion_run.run_dir / "report.md").read_text()
    validation = report["validation"]
    assert 0.5 < validation["accuracy"] <= 1 and validation["loss"] > 0, "figures of the held-out 10%"
    assert validation["accuracy"] == pytest.approx(report["training"]["best"], abs=1e-6), (
        "best.pt's val_accuracy"
    )


def test_report_command_compares_runs(fashion_run, fashion_cv, tmp_path):
    cv_dir, _ = fashion_cv
    code, printed = run_cli(
        "report", str(fashion_run.run_dir), str(cv_dir / "fold-1"), "--out", str(tmp_path)
    )
    assert code == 0 and fashion_run.run_dir.name in printed
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["runs"][0]["accuracy"] == pytest.approx(fashion_run.report["accuracy"])
    assert summary["notes"], "500 vs 200 test images: the comparison says so"
    md = (tmp_path / "report.md").read_text()
    assert "| run |" in md and "fold-1" in md and "**" in md
    assert_real_png(tmp_path / "curves.png")


def test_predict_output_writes_top_k_per_image(fashion_run, tmp_path):
    payload = load_checkpoint(fashion_run.run_dir)
    cfg = RunConfig.from_dict(payload.config)
    data = build_dataset(cfg.data, cfg.train.seed)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}_{data.classes[data.test.labels[i]].replace('/', '-')}.png")
        Image.fromarray(data.test.images[i][..., 0]).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    expected = load(fashion_run.run_dir, device="cpu").predict(paths, top_k=3)
    for suffix in ("csv", "json"):
        out = tmp_path / f"predictions.{suffix}"
        images = [*map(str, paths), str(broken)]
        flags = f"--top-k 3 --device cpu --output {out}".split()
        code, _ = run_cli("predict", str(fashion_run.run_dir), *images, *flags)
        assert code == 0, "one unreadable image does not fail the others"
        if suffix == "csv":
            rows = list(csv.DictReader(out.open()))
            tops = [[(r[f"class_{j}"], float(r[f"prob_{j}"])) for j in (1, 2, 3)] for r in rows[:4]]
            assert rows[4]["error"] and not rows[4]["class_1"]
        else:
            items = json.loads(out.read_text())
            tops = [[(t["class"], t["probability"]) for t in item["top"]] for item in items[:4]]
            assert items[4]["error"] and items[4]["top"] == []
        for top, want in zip(tops, expected, strict=True):
            assert [c for c, _ in top] == [c for c, _ in want.top]
            assert [p for _, p in top] == pytest.approx([p for _, p in want.top], abs=1e-6)
            probs = [p for _, p in top]
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
            assert all(c in data.classes for c, _ in top)
