"""What `predict` and `load` are given: numpy arrays are checked, not guessed at; a flip-TTA run
is served as it was evaluated; run files are readable; evaluate never writes into a run folder."""

import os

import numpy as np
import pytest
import torch

import yingshe
from yingshe.api import eval_batches
from yingshe.config import RunConfig, apply_overrides
from yingshe.data.augment import Normalize
from yingshe.data.dataset import build_dataset
from yingshe.errors import YingsheError
from yingshe.evaluate.metrics import predict_batches
from yingshe.inference import Classifier, model_from_checkpoint
from yingshe.runs import load_checkpoint


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    cfg = RunConfig()
    out = tmp_path_factory.mktemp("serving-run")
    apply_overrides(cfg, [f"train.out={out}", "train.epochs=1", "model.kwargs={widths: [8, 8, 8, 8]}"])
    return yingshe.train(cfg)


def test_numpy_inputs_are_checked_not_guessed(digits_run):
    classifier = Classifier.load(digits_run.run_dir, device="cpu")
    grey = np.full((8, 8), 200, dtype=np.uint8)
    bad_dtype, bad_shape = np.zeros((8, 8), dtype=np.float32), np.zeros((3, 8, 8), dtype=np.uint8)
    ok, wrong_dtype, wrong_shape = classifier.predict([grey, bad_dtype, bad_shape], top_k=3)
    assert ok.error is None and len(ok.top) == 3
    assert "dtype float32" in wrong_dtype.error and "shape (3, 8, 8)" in wrong_shape.error


def test_run_files_are_shared_and_evaluate_never_writes_into_a_run(digits_run):
    mode = os.stat(digits_run.run_dir / "best.pt").st_mode & 0o777
    assert mode & 0o044, "run files are readable by the group and others (umask permitting)"
    with pytest.raises(YingsheError, match="is a run folder"):
        yingshe.evaluate(digits_run.run_dir, out=digits_run.run_dir)


def test_a_tta_run_serves_and_exports_what_it_evaluated(cifar_folder, tmp_path):
    """Mirror plus shifted copies (train.tta_translate): evaluation, serving and the ONNX graph
    average the same views."""
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={cifar_folder}",
            f"train.out={tmp_path}",
            "train.epochs=1",
            "train.tta_flip=true",
            "train.tta_translate=1",
            "train.plots=false",
            "data.limit_test=40",
            "model.kwargs={widths: [8, 8, 8, 8]}",
        ],
    )
    run = yingshe.train(cfg)
    checkpoint = load_checkpoint(run.run_dir)
    data = build_dataset(RunConfig.from_dict(checkpoint.config).data, 0)
    model = model_from_checkpoint(checkpoint)
    normalize = Normalize(checkpoint.meta.mean, checkpoint.meta.std)
    batches = eval_batches(data.test, data, cfg, torch.device("cpu"), normalize, False)
    evaluated = predict_batches(model, batches, tta_flip=True, tta_translate=1).logits.softmax(1)
    mirrored = predict_batches(model, batches, tta_flip=True).logits.softmax(1)
    plain = predict_batches(model, batches, tta_flip=False).logits.softmax(1)
    assert not torch.allclose(mirrored, plain), "the mirror must change the answer here"
    assert not torch.allclose(evaluated, mirrored), "so must the shifted copies"
    names = [data.test.files.name(i) for i in range(len(data.test))]
    served = Classifier.load(run.run_dir, device="cpu").predict(names, top_k=1)
    np.testing.assert_allclose([p.top[0][1] for p in served], evaluated.max(1).values, atol=1e-5)
    assert run.report["accuracy"] == pytest.approx(
        float((evaluated.argmax(1) == torch.as_tensor(data.test.labels)).float().mean())
    )
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")  # the export's parity check runs the graph with its shifts
    exported = yingshe.export(run.run_dir, "onnx", out=tmp_path / "m.onnx", parity_images=8)
    assert exported.metadata["tta_flip"] and exported.metadata["tta_translate"] == 1
