"""`yingshe export`: ONNX and TorchScript files that answer like the PyTorch run on its real test
images, checked by yingshe's parity step and independently by plain onnxruntime / torch.jit."""

from __future__ import annotations

import csv
import io
import json
import os
import time

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

import yingshe
from yingshe.cli import main
from yingshe.errors import YingsheError
from yingshe.export.graph import DeployModule
from yingshe.export.parity import split_images


@pytest.fixture(scope="module")
def onnx_export(fashion_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "fashion.onnx"
    return yingshe.export(fashion_run.run_dir, "onnx", out=out, dynamic_batch=True)


@pytest.fixture(scope="module")
def test_pngs(fashion_run, tmp_path_factory) -> list:
    """The run's first 24 test images as PNG files, as a user would hold them."""
    folder = tmp_path_factory.mktemp("pngs")
    images = split_images(yingshe.load(fashion_run.run_dir, device="cpu"), 24)
    paths = []
    for i, array in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(array[..., 0]).save(paths[-1])
    return paths


def test_onnx_export_reports_and_stores_parity(onnx_export):
    parity = onnx_export.parity
    assert parity["passed"] and parity["images"] == 64
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    beside = json.loads(onnx_export.metadata_path.read_text())
    assert beside["parity"] == parity and beside["classes"][0] == "T-shirt/top"
    assert beside["image_size"] == 28 and beside["channels"] == 1 and len(beside["mean"]) == 1
    import onnx

    props = {p.key: p.value for p in onnx.load(onnx_export.path).metadata_props}
    assert json.loads(props["classes"]) == beside["classes"]
    assert json.loads(props["parity"])["passed"] is True
    assert props["torch_version"] == torch.__version__


def test_plain_onnxruntime_session_gets_the_same_top1(onnx_export, fashion_run, test_pngs):
    """No yingshe code on this side: PIL decodes, onnxruntime runs the file as it is."""
    session = onnxruntime.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    batch = np.stack([np.asarray(Image.open(p).convert("L"))[..., None] for p in test_pngs])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    plain = [classes[i] for i in logits.argmax(1)]
    expected = [p.label for p in yingshe.load(fashion_run.run_dir, device="cpu").predict(test_pngs)]
    assert plain == expected
    assert len(set(expected)) > 1, "a real model on real images, not one constant answer"


def test_load_onnx_predicts_like_the_run(onnx_export, fashion_run, test_pngs):
    run = yingshe.load(fashion_run.run_dir, device="cpu").predict(test_pngs, top_k=3)
    exported = yingshe.load(onnx_export.path).predict(test_pngs, top_k=3)
    for a, b in zip(run, exported, strict=True):
        assert [c for c, _ in a.top] == [c for c, _ in b.top]
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-5)


def test_single_label_export_carries_no_task_and_reads_as_single_label(onnx_export, test_pngs):
    """The multi-label keys stay out of a single-label export, so it is what exports were before
    them, and such a file loads with softmax scores and no label sets."""
    assert not {"task", "thresholds"} & set(onnx_export.metadata)
    assert set(onnx_export.parity) == {
        "images",
        "max_abs_logit_diff",
        "top1_agreement",
        "tolerance",
        "passed",
    }
    assert onnx_export.metadata["output"]["meaning"] == "logits; softmax gives probabilities"
    exported = yingshe.load(onnx_export.path)
    assert not exported.multilabel and exported.thresholds is None
    predictions = exported.predict(test_pngs[:4], top_k=10)
    assert all(
        p.labels is None and sum(v for _, v in p.top) == pytest.approx(1, abs=1e-5) for p in predictions
    )


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"task": "regression"}, "'regression' export, which this yingshe"),
        ({"task": "multilabel"}, "without one threshold per class"),
        ({"task": "multilabel", "thresholds": [0.5, 0.5]}, "without one threshold per class"),
    ],
)
def test_onnx_with_a_task_it_cannot_read_is_refused(onnx_export, tmp_path, props, message, test_pngs, capsys):
    """Through the API and through `yingshe predict`: the file is named, the fix given, nothing written."""
    from yingshe.export.onnx import with_metadata

    path = tmp_path / "odd.onnx"
    path.write_bytes(with_metadata(onnx_export.path.read_bytes(), props))
    with pytest.raises(YingsheError, match=message) as refused:
        yingshe.load(path)
    assert "odd.onnx" in str(refused.value) and refused.value.fix
    out = tmp_path / "p.csv"
    assert main(["predict", str(path), str(test_pngs[0]), "--output", str(out)]) == 2
    assert "odd.onnx" in capsys.readouterr().err and not out.exists()


def test_torchscript_export_parity_and_plain_jit_load(fashion_run, tmp_path, test_pngs):
    result = yingshe.export(fashion_run.run_dir, "torchscript", out=tmp_path / "m.pt")
    assert result.parity["passed"] and result.parity["top1_agreement"] == 1.0
    extra = {"yingshe.json": ""}
    module = torch.jit.load(str(result.path), _extra_files=extra)
    meta = json.loads(extra["yingshe.json"])
    batch = torch.from_numpy(np.stack([np.asarray(Image.open(p))[..., None] for p in test_pngs[:8]]))
    # a batch-1 trace still takes one image at a time
    top1 = [meta["classes"][int(module(batch[i : i + 1]).argmax())] for i in range(8)]
    expected = [p.label for p in yingshe.load(fashion_run.run_dir, device="cpu").predict(test_pngs[:8])]
    assert top1 == expected


def test_export_that_disagrees_fails_loudly_and_leaves_no_file(fashion_run, tmp_path, monkeypatch):
    """A graph that drifts from PyTorch (here: its logits nudged) is refused, and nothing is written."""
    original = DeployModule.forward
    monkeypatch.setattr(DeployModule, "forward", lambda self, image: original(self, image) * 1.01 + 0.05)
    out = tmp_path / "drift.onnx"
    with pytest.raises(YingsheError, match="does not reproduce the PyTorch model"):
        yingshe.export(fashion_run.run_dir, "onnx", out=out, parity_images=16)
    assert os.listdir(tmp_path) == []


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_predict_with_onnx_streams_csv_and_names_bad_files_once(onnx_export, test_pngs, tmp_path):
    folder = test_pngs[0].parent
    junk = tmp_path / "in" / "notes.png"
    junk.parent.mkdir()
    junk.write_text("not an image")
    out = tmp_path / "p.csv"
    code, printed, _ = run_cli(
        "predict", str(onnx_export.path), str(folder), str(junk.parent), "--output", str(out)
    )
    assert code == 0 and f"{len(test_pngs) + 1} predictions written" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows[:-1]] == [str(p) for p in test_pngs]
    assert rows[-1]["error"] and "BytesIO" not in rows[-1]["error"] and str(junk) not in rows[-1]["error"]
    code, printed, _ = run_cli("predict", str(onnx_export.path), str(junk))
    assert code == 1 and printed.count(str(junk)) == 1 and "not an image" in printed


def test_predict_refuses_an_output_format_before_any_work(tmp_path):
    start = time.perf_counter()
    code, _, err = run_cli("predict", str(tmp_path / "no-such-run"), str(tmp_path), "--output", "x.txt")
    assert code == 2 and "x.txt" in err and ".csv or .json" in err
    assert time.perf_counter() - start < 2
