"""Inputs a careful reviewer tried: each once gave a wrong result silently or a traceback."""

import os

import numpy as np
import pytest

import yingshe
from yingshe.cli import main
from yingshe.config import DataConfig, RunConfig, apply_overrides
from yingshe.data.dataset import build_dataset
from yingshe.data.sources import read_source
from yingshe.errors import YingsheError
from yingshe.inference import Classifier


def test_a_test_limit_never_moves_training_images_into_validation():
    full = build_dataset(DataConfig(spec="digits"), seed=0)
    limited = build_dataset(DataConfig(spec="digits", limit_test=100), seed=0)
    assert len(limited.test) == 100
    assert np.array_equal(limited.val.images, full.val.images)
    assert np.array_equal(limited.train.images, full.train.images)


def test_csv_manifest_header_bom_unknown_split_and_duplicates(cifar_folder, tmp_path):
    images = sorted((cifar_folder / "train" / "cat").glob("*.jpg"))[:4]
    dogs = sorted((cifar_folder / "train" / "dog").glob("*.jpg"))[:4]
    rows = [f"{p},cat,train" for p in images] + [f"{p},dog,test" for p in dogs]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufefffilename,class,split\n" + "\n".join(rows) + "\n")
    data = read_source(manifest)
    assert data.classes == ["cat", "dog"] and len(data.splits["test"]) == 4
    manifest.write_text("\n".join([*rows, f"{images[0]},cat,holdout"]))
    with pytest.raises(YingsheError, match="line 9: unknown split 'holdout'"):
        read_source(manifest)
    manifest.write_text("\n".join([*rows, f"{images[0]},cat,test"]))
    with pytest.raises(YingsheError, match="listed in both train and test"):
        read_source(manifest)


def test_flags_are_taken_literally_not_as_yaml(tmp_path, monkeypatch, capsys):
    from yingshe.cli import build_train_config, parser

    monkeypatch.chdir(tmp_path)
    for name in ("0123", "2024-05-01", "my data #2", "off"):
        cfg = build_train_config(parser().parse_args(["train", "--data", name, "--out", name + "-run"]))
        assert cfg.data.spec == name and cfg.train.out == name + "-run"  # YAML would give 83, a date, None
        assert main(["train", "--data", name, "--out", name + "-run"]) == 2  # a path that does not exist
        assert name in capsys.readouterr().err  # the error names the path as it was typed
        assert not (tmp_path / (name + "-run")).exists()
    cfg = build_train_config(parser().parse_args(["train", "data.spec=0123", "data.prepared=off"]))
    assert cfg.data.spec == "0123" and cfg.data.prepared == "off"


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "--lr would be ignored" in capsys.readouterr().err


def test_numpy_inputs_are_checked_not_guessed(tmp_path):
    cfg = RunConfig()
    apply_overrides(cfg, [f"train.out={tmp_path}", "train.epochs=1", "model.kwargs={widths: [8, 8, 8, 8]}"])
    run = yingshe.train(cfg)
    classifier = Classifier.load(run.run_dir, device="cpu")
    grey = np.full((8, 8), 200, dtype=np.uint8)
    bad_dtype, bad_shape = np.zeros((8, 8), dtype=np.float32), np.zeros((3, 8, 8), dtype=np.uint8)
    ok, wrong_dtype, wrong_shape = classifier.predict([grey, bad_dtype, bad_shape], top_k=3)
    assert ok.error is None and len(ok.top) == 3
    assert "dtype float32" in wrong_dtype.error and "shape (3, 8, 8)" in wrong_shape.error
    mode = os.stat(run.run_dir / "best.pt").st_mode & 0o777
    assert mode & 0o044, "run files are readable by the group and others (umask permitting)"
    with pytest.raises(YingsheError, match="is a run folder"):
        yingshe.evaluate(run.run_dir, out=run.run_dir)


def test_a_source_that_changed_since_training_is_refused(cifar_folder, tmp_path):
    import shutil

    folder = tmp_path / "photos"
    for cls in ("cat", "dog", "ship"):
        shutil.copytree(cifar_folder / "train" / cls, folder / cls)
    cfg = RunConfig()
    apply_overrides(
        cfg, [f"data.spec={folder}", f"train.out={tmp_path / 'run'}", "train.epochs=1", "train.plots=false"]
    )
    run = yingshe.train(cfg)
    assert yingshe.evaluate(run.run_dir)["num_test"] == run.report["num_test"]
    shutil.copy(folder / "cat" / "0000.jpg", folder / "cat" / "extra.jpg")
    with pytest.raises(YingsheError, match="no longer splits as it did in training"):
        yingshe.evaluate(run.run_dir)


def test_a_flip_tta_run_serves_what_it_evaluated(cifar_folder, tmp_path):
    import torch

    from yingshe.api import eval_batches
    from yingshe.data.augment import Normalize
    from yingshe.evaluate.metrics import predict_batches
    from yingshe.inference import model_from_checkpoint
    from yingshe.runs import load_checkpoint

    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={cifar_folder}",
            f"train.out={tmp_path}",
            "train.epochs=1",
            "train.tta_flip=true",
            "train.plots=false",
            "data.limit_test=40",
            "model.kwargs={widths: [8, 8, 8, 8]}",
        ],
    )
    run = yingshe.train(cfg)
    payload = load_checkpoint(run.run_dir)
    data = build_dataset(RunConfig.from_dict(payload["config"]).data, 0)
    model = model_from_checkpoint(payload)
    normalize = Normalize(payload["mean"], payload["std"])
    batches = eval_batches(data.test, data, cfg, torch.device("cpu"), normalize, False)
    evaluated = predict_batches(model, batches, tta_flip=True).logits.softmax(1)
    names = [data.test.files.name(i) for i in range(len(data.test))]
    served = Classifier.load(run.run_dir, device="cpu").predict(names, top_k=1)
    np.testing.assert_allclose([p.top[0][1] for p in served], evaluated.max(1).values, atol=1e-5)
