"""Multi-label manifests on real CIFAR-10 photos: each image carries its class and its
superclass (vehicle or animal), so the labels are learnable in a tiny run. Metrics are held to
scikit-learn's on the same probabilities; thresholds live in the checkpoint; predict returns
every label above its threshold."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
)
from support import one_thread
from torch import Tensor

import yingshe
from yingshe.api import splits_fingerprint
from yingshe.cli import main
from yingshe.config import RunConfig, apply_overrides
from yingshe.data.dataset import build_dataset, stage_rng
from yingshe.data.sources import read_source
from yingshe.errors import YingsheError
from yingshe.evaluate import multilabel
from yingshe.export import ExportResult
from yingshe.runs import load_checkpoint

VEHICLES = {"airplane", "automobile", "ship", "truck"}
NO_LABELS = 4  # train images listed with an empty labels cell


def labels_of(cls: str) -> str:
    return f"{cls}|{'vehicle' if cls in VEHICLES else 'animal'}"


def manifest_rows(cifar_folder: Path) -> list[tuple[str, str, str]]:
    """(relative path, labels cell, split) for every image of the CIFAR slice."""
    rows = []
    for split in ("train", "test"):
        for image in sorted((cifar_folder / split).glob("*/*.jpg")):
            rows.append((str(image.relative_to(cifar_folder)), labels_of(image.parent.name), split))
    return [(p, "" if i < NO_LABELS else cell, s) for i, (p, cell, s) in enumerate(rows)]


@pytest.fixture(scope="module")
def manifest(cifar_folder: Path) -> Path:
    path = cifar_folder / "multilabel.csv"
    lines = ["path,labels,split"] + [f"{p},{cell},{s}" for p, cell, s in manifest_rows(cifar_folder)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def multilabel_run(manifest: Path, tmp_path_factory) -> yingshe.TrainResult:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={manifest}",
            "data.workers=0",
            "data.val_fraction=0.25",
            "train.epochs=2",
            "train.batch_size=32",
            "train.device=cpu",
            "augment.mixup=0.2",  # mixing must keep multi-hot targets
            "train.plots=false",
            "model.kwargs={widths: [8, 16, 32, 64]}",
            f"train.out={tmp_path_factory.mktemp('multilabel-run')}",
        ],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-stable and fastest on a shared box, as the session runs
    try:
        return yingshe.train(cfg)
    finally:
        torch.set_num_threads(threads)


def test_manifest_reads_multi_hot_rows_and_json_agrees(manifest: Path, cifar_folder: Path, tmp_path: Path):
    data = read_source(manifest)
    assert data.task == "multilabel" and len(data.classes) == 12
    train = data.splits["train"].labels
    assert train.shape == (400, 12) and set(np.unique(train)) == {0, 1}
    assert (train[:NO_LABELS].sum(1) == 0).all() and (train[NO_LABELS:].sum(1) == 2).all()
    items = [
        {"path": str(cifar_folder / p), "labels": cell.split("|") if cell else [], "split": s}
        for p, cell, s in manifest_rows(cifar_folder)
    ]
    as_json = tmp_path / "m.json"
    as_json.write_text(json.dumps(items))
    other = read_source(as_json)
    assert other.classes == data.classes
    for split in ("train", "test"):
        assert np.array_equal(other.splits[split].labels, data.splits[split].labels)


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("cat||animal", "empty label"),
        ("cat|", "empty label"),
        ('"cat,animal"', "contains ','"),
        ("cat;animal", "contains ';'"),
    ],
)
def test_bad_label_cells_name_the_line_and_the_fix(cifar_folder: Path, tmp_path: Path, cell, message):
    images = sorted((cifar_folder / "train" / "cat").glob("*.jpg"))[:3]
    path = tmp_path / "bad.csv"
    path.write_text(f"path,labels\n{images[0]},cat|animal\n{images[1]},dog\n{images[2]},{cell}\n")
    with pytest.raises(YingsheError, match=f"line 4.*{message}") as caught:
        read_source(path)
    assert "'|'" in caught.value.fix


def test_bad_manifest_rows(cifar_folder: Path, tmp_path: Path):
    images = sorted((cifar_folder / "train" / "cat").glob("*.jpg"))[:3]
    path = tmp_path / "bad.csv"
    path.write_text(f"path,labels\n{images[0]},cat|animal\n ,dog\n")
    with pytest.raises(YingsheError, match="line 3 has an empty path"):
        read_source(path)
    path.write_text(f"path,labels\n{images[0]},cat|animal\n{images[0]},cat\n{images[1]},dog\n")
    with pytest.raises(YingsheError, match="two label sets"):
        read_source(path)
    path.write_text(f"path,labels\n{images[0]},cat|animal\n{images[0]},animal|cat\n{images[1]},dog\n")
    with pytest.raises(YingsheError, match="more than once"):
        read_source(path)
    path.write_text(json.dumps([{"path": str(images[0]), "labels": "cat|animal"}]))
    json_path = path.with_suffix(".json")
    json_path.write_text(path.read_text())
    with pytest.raises(YingsheError, match="must be a list of strings"):
        read_source(json_path)


def test_tuned_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 4)) < [0.1, 0.3, 0.5, 0.0]
    scores = np.clip(truth * 0.3 + rng.random((200, 4)) * 0.7, 0, 1)
    tuned = multilabel.tune_thresholds(torch.tensor(scores), torch.tensor(truth.astype(np.int64)))

    def f1(y: np.ndarray, decided: np.ndarray) -> float:
        return 2 * (y & decided).sum() / (y.sum() + decided.sum())

    for j in range(3):
        y, s = truth[:, j], scores[:, j]
        best = max(f1(y, s >= t) for t in np.unique(s))  # every distinct cut
        assert f1(y, s >= tuned[j]) == pytest.approx(best, abs=1e-12)
        assert f1(y, s >= tuned[j]) == pytest.approx(f1_score(y, s >= tuned[j]), abs=1e-12)
    assert tuned[3] == 0.5  # no positive image: nothing to tune


def split_logits(run_dir: Path, cifar_folder: Path, classes: list[str]) -> tuple[np.ndarray, Tensor]:
    """The test split's 0/1 truth (from the manifest) and the run's logits on its images, computed
    through `yingshe.load`, apart from any report."""
    rows = [(p, cell) for p, cell, s in manifest_rows(cifar_folder) if s == "test"]
    truth = np.array([[int(c in cell.split("|")) for c in classes] for _, cell in rows])
    classifier = yingshe.load(run_dir, device="cpu")
    arrays = np.stack([classifier.preprocess(cifar_folder / p) for p, _ in rows])
    with torch.no_grad():
        x = classifier.normalize(torch.from_numpy(arrays).permute(0, 3, 1, 2))
        return truth, classifier.model(x).float()


def test_multilabel_run_metrics_match_sklearn(multilabel_run, manifest: Path, cifar_folder: Path):
    report = multilabel_run.report
    checkpoint = load_checkpoint(multilabel_run.run_dir)
    meta = checkpoint.meta
    assert meta.task == "multilabel" and len(meta.thresholds) == 12
    assert report["task"] == "multilabel" and report["thresholds"] == meta.thresholds
    assert "confusion_matrix" not in report and "map" in report["validation"]
    assert report["training"]["monitor"] == "val_map"
    assert [row["threshold"] for row in report["per_class"]] == meta.thresholds
    classes = meta.classes
    truth, logits = split_logits(multilabel_run.run_dir, cifar_folder, classes)
    ours = multilabel.full(logits, torch.from_numpy(truth), classes, meta.thresholds)
    probs = logits.sigmoid().double().numpy()
    predicted = (probs >= np.array(meta.thresholds)).astype(int)
    assert ours["map"] == pytest.approx(average_precision_score(truth, probs, average="macro"), abs=1e-6)
    assert ours["subset_accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-6)
    assert ours["hamming_loss"] == pytest.approx(hamming_loss(truth, predicted), abs=1e-6)
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        per_label = fn(truth, predicted, average=None, zero_division=0)
        assert [row[name] for row in ours["per_class"]] == pytest.approx(per_label.tolist(), abs=1e-6)
        assert ours[f"{name}_macro"] == pytest.approx(
            fn(truth, predicted, average="macro", zero_division=0), abs=1e-6
        )
    for key in ("map", "subset_accuracy", "hamming_loss", "f1_macro", "loss"):  # the report's own pass
        assert report[key] == pytest.approx(ours[key], abs=1e-4), key
    assert report["map"] > 0.2  # learnt something: chance mAP is the mean label frequency, 2/12 here


def test_evaluation_counts_each_labels_decisions_and_draws_them(multilabel_run, cifar_folder, tmp_path):
    """`yingshe.evaluate` of the run: each label's TP/FP/FN/TN are scikit-learn's
    multilabel_confusion_matrix of the run's own decisions, in report.json and report.md, and the
    per-label confusion and precision–recall figures are drawn, listed and embedded."""
    with one_thread():
        report = yingshe.evaluate(multilabel_run.run_dir, out=tmp_path / "eval", device="cpu")
    folder = Path(report["report_dir"])
    meta = load_checkpoint(multilabel_run.run_dir).meta
    truth, logits = split_logits(multilabel_run.run_dir, cifar_folder, meta.classes)
    decided = (logits.sigmoid().double().numpy() >= np.array(meta.thresholds)).astype(int)
    expected = multilabel_confusion_matrix(truth, decided)  # (K, 2, 2): [[TN, FP], [FN, TP]]
    written = json.loads((folder / "report.json").read_text())
    images = report["num_test"]
    assert images == len(truth) == 200
    for row, label, counts in zip(written["per_class"], meta.classes, expected, strict=True):
        (tn, fp), (fn, tp) = counts.tolist()
        assert row["class"] == label and (row["tp"], row["fp"], row["fn"], row["tn"]) == (tp, fp, fn, tn)
        assert tp + fp + fn + tn == images and tp + fn == row["support"]
    assert sum(row["fp"] + row["fn"] for row in written["per_class"]) > 0  # some errors to draw
    assert written["plots"] == ["training_curves.png", "label-confusion.png", "label-pr.png"]
    markdown = (folder / "report.md").read_text()
    first = written["per_class"][0]
    assert f"| {first['tp']} / {first['fp']} / {first['fn']} / {first['tn']} |" in markdown
    for name in ("label-confusion.png", "label-pr.png"):
        assert f"![{name}]({name})" in markdown
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300, image.size
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 5, f"{name} is a blank canvas"


def test_predict_returns_every_label_above_its_threshold(multilabel_run, cifar_folder: Path, tmp_path: Path):
    classifier = yingshe.load(multilabel_run.run_dir, device="cpu")
    images = sorted((cifar_folder / "test").glob("*/*.jpg"))[::10]
    predictions = classifier.predict(images, top_k=3)
    probs = classifier.probabilities(np.stack([classifier.preprocess(p) for p in images]))
    for row, p in zip(probs.tolist(), predictions, strict=True):
        expected = [
            c for c, s, t in zip(classifier.classes, row, classifier.thresholds, strict=True) if s >= t
        ]
        assert p.labels == expected and len(p.top) == 3
    assert max(len(p.labels) for p in predictions) >= 2
    run = str(multilabel_run.run_dir)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["predict", run, str(images[0])]) == 0
    assert f"labels: {'|'.join(predictions[0].labels) or '(none)'}" in printed.getvalue()
    out = tmp_path / "p.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["predict", run, *map(str, images[:3]), "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert [w["labels"] for w in written] == [p.labels for p in predictions[:3]]
    csv_out = tmp_path / "p.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["predict", str(multilabel_run.run_dir), str(images[0]), "--output", str(csv_out)])
    header, first = csv_out.read_text().splitlines()[:2]
    assert header.startswith("path,labels,") and first.split(",")[1] == "|".join(predictions[0].labels)


def test_serve_returns_the_labels_above_threshold(multilabel_run, cifar_folder: Path):
    from fastapi.testclient import TestClient

    from yingshe.serve import ServeConfig
    from yingshe.serve.app import create_app

    classifier = yingshe.load(multilabel_run.run_dir, device="cpu")
    image = sorted((cifar_folder / "test").glob("*/*.jpg"))[0]
    expected = classifier.predict([image])[0].labels
    cfg = ServeConfig(model=str(multilabel_run.run_dir / "best.pt"), max_wait_ms=1)
    with TestClient(create_app(cfg, classifier)) as client:
        answer = client.post("/v1/predict", files={"file": ("a.jpg", image.read_bytes(), "image/jpeg")})
        info = client.get("/v1/model").json()
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"] == expected and len(answer.json()["top"]) >= 1
    assert info["task"] == "multilabel" and info["thresholds"] == classifier.thresholds


@pytest.fixture(scope="module")
def multilabel_exports(multilabel_run, tmp_path_factory) -> dict[str, ExportResult]:
    """The multi-label run exported both ways: ONNX with any batch, TorchScript traced at batch 1."""
    folder = tmp_path_factory.mktemp("multilabel-export")
    run = multilabel_run.run_dir
    return {
        "onnx": yingshe.export(run, "onnx", out=folder / "m.onnx", dynamic_batch=True),
        "torchscript": yingshe.export(run, "torchscript", out=folder / "m.pt"),
    }


def test_multilabel_export_passes_parity_on_scores_and_records_the_thresholds(
    multilabel_run, multilabel_exports
):
    import onnx

    thresholds = load_checkpoint(multilabel_run.run_dir).meta.thresholds
    for result in multilabel_exports.values():
        parity = result.parity
        assert parity["passed"] and parity["images"] == 64 and parity["label_agreement"] == 1.0
        assert parity["max_abs_score_diff"] < 1e-5 and parity["max_abs_logit_diff"] < 1e-4
        beside = json.loads(result.metadata_path.read_text())
        assert beside["task"] == "multilabel" and beside["thresholds"] == thresholds
        assert "sigmoid" in beside["output"]["meaning"] and beside["parity"] == parity
    props = {p.key: p.value for p in onnx.load(multilabel_exports["onnx"].path).metadata_props}
    assert props["task"] == "multilabel" and json.loads(props["thresholds"]) == thresholds
    # a colour model's normalisation goes through the fast TorchScript-based exporter, no fallback
    assert "legacy" in multilabel_exports["onnx"].metadata["exporter"]
    extra = {"yingshe.json": ""}
    torch.jit.load(str(multilabel_exports["torchscript"].path), _extra_files=extra)
    assert json.loads(extra["yingshe.json"])["thresholds"] == thresholds


def test_onnx_export_predicts_the_runs_scores_and_labels(
    multilabel_run, multilabel_exports, cifar_folder: Path, tmp_path: Path
):
    """`yingshe.load` and `yingshe predict` on the .onnx give the run folder's sigmoid scores and
    label sets (softmax scores would sum to 1 over the 12 labels and miss both)."""
    images = sorted((cifar_folder / "test").glob("*/*.jpg"))[::10]
    model = str(multilabel_exports["onnx"].path)
    run = yingshe.load(multilabel_run.run_dir, device="cpu")
    exported = yingshe.load(model)
    assert exported.multilabel and exported.thresholds == run.thresholds
    ours, theirs = run.predict(images, top_k=12), exported.predict(images, top_k=12)
    for a, b in zip(ours, theirs, strict=True):
        assert b.labels == a.labels
        assert dict(b.top) == pytest.approx(dict(a.top), abs=1e-5)  # every label's score
    assert max(len(p.labels) for p in ours) >= 2 and len({tuple(p.labels) for p in ours}) > 1
    outputs = {}
    for name, source in (("run", str(multilabel_run.run_dir)), ("onnx", model)):
        outputs[name] = tmp_path / f"{name}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["predict", source, *map(str, images), "--output", str(outputs[name])]) == 0
    written = {name: json.loads(path.read_text()) for name, path in outputs.items()}
    assert [w["labels"] for w in written["onnx"]] == [w["labels"] for w in written["run"]]


def test_serving_the_onnx_export_answers_the_runs_labels(multilabel_run, multilabel_exports, cifar_folder):
    from fastapi.testclient import TestClient

    from yingshe.serve import ServeConfig
    from yingshe.serve.app import create_app

    images = sorted((cifar_folder / "test").glob("*/*.jpg"))[::25]
    expected = [p.labels for p in yingshe.load(multilabel_run.run_dir, device="cpu").predict(images)]
    cfg = ServeConfig(model=str(multilabel_exports["onnx"].path), max_wait_ms=1)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    with TestClient(create_app(cfg, yingshe.load(cfg.model, serving=True))) as client:
        answer = client.post("/v1/predict/batch", files=files)
    assert answer.status_code == 200, answer.text
    assert [r["labels"] for r in answer.json()["results"]] == expected


def test_torchscript_export_gives_the_runs_scores_and_labels(
    multilabel_run, multilabel_exports, cifar_folder
):
    """No yingshe reader on this side: torch.jit, the sigmoid and the thresholds from the archive."""
    extra = {"yingshe.json": ""}
    module = torch.jit.load(str(multilabel_exports["torchscript"].path), _extra_files=extra)
    meta = json.loads(extra["yingshe.json"])
    images = sorted((cifar_folder / "test").glob("*/*.jpg"))[::25]
    run = yingshe.load(multilabel_run.run_dir, device="cpu")
    arrays = torch.from_numpy(np.stack([run.preprocess(p) for p in images]))
    with torch.no_grad():  # traced at batch 1: one image at a time
        scores = torch.cat([module(arrays[i : i + 1]) for i in range(len(arrays))]).sigmoid()
    labels = [
        [c for c, s, t in zip(meta["classes"], row, meta["thresholds"], strict=True) if s >= t]
        for row in scores.tolist()
    ]
    assert labels == [p.labels for p in run.predict(images)]
    assert scores.numpy() == pytest.approx(run.probabilities(arrays.numpy()).numpy(), abs=1e-5)


def two_steps_on(manifest: Path, out: Path, val_fraction: float) -> list[str]:
    """The overrides of a two-step run on a multi-label manifest, for tests of what it is cut into."""
    return [
        f"data.spec={manifest}",
        "data.workers=0",
        f"data.val_fraction={val_fraction}",
        "train.epochs=1",
        "train.max_steps=2",
        "train.batch_size=32",
        "train.device=cpu",
        "train.plots=false",
        "model.kwargs={widths: [8, 8, 8, 8]}",
        f"train.out={out}",
    ]


def test_thresholds_tuned_on_the_test_split_are_flagged_in_the_report(manifest: Path, tmp_path: Path):
    """With no validation split the thresholds come from the test split itself: the report says so."""
    cfg = RunConfig()
    apply_overrides(
        cfg,
        two_steps_on(manifest, tmp_path, val_fraction=0),
    )
    result = yingshe.train(cfg, progress=False)
    assert any("tuned on the test split" in note for note in result.report["training"]["notes"])
    assert "tuned on the test split" in (tmp_path / "report.md").read_text()


def test_a_rare_label_reaches_the_validation_split_of_a_training_run(cifar_folder: Path, tmp_path: Path):
    """A label on 4 of the 400 training images, all on rows the old multi-label cut (one seeded
    shuffle) kept out of validation: the run still trains, and iterative stratification puts one of
    them, and some of every other label, in the validation split its thresholds are tuned on."""
    cfg = RunConfig()
    shuffle = stage_rng(cfg.train.seed, "val").permutation(400)  # the old cut: the first 100 held out
    rare = set(shuffle[100:104].tolist())
    rows, seen = [], {"train": 0, "test": 0}
    for path, cell, split in manifest_rows(cifar_folder):
        carries = seen[split] in rare if split == "train" else seen[split] < 2  # and 2 test images
        cell = "|".join(filter(None, [cell, "rare" if carries else ""]))
        seen[split] += 1
        rows.append(f"{cifar_folder / path},{cell},{split}")
    manifest = tmp_path / "rare.csv"
    manifest.write_text("path,labels,split\n" + "\n".join(rows) + "\n")
    apply_overrides(
        cfg,
        two_steps_on(manifest, tmp_path / "run", val_fraction=0.25),
    )
    result = yingshe.train(cfg, progress=False)
    source = read_source(manifest)
    column = source.classes.index("rare")
    assert set(np.flatnonzero(source.splits["train"].labels[:, column]).tolist()) == rare
    data = build_dataset(cfg.data, cfg.train.seed)
    assert splits_fingerprint(data) == load_checkpoint(result.run_dir).meta.data.splits  # the run's cut
    val = data.val
    assert len(val) == result.report["num_val"] == 100
    assert val.labels[:, column].sum() == 1 and (val.labels.sum(0) > 0).all()
    assert len(result.report["thresholds"]) == len(source.classes) == 13
