"""A recipe run end to end on real data (digits, a few steps): the config it records, the EMA
weights in best.pt, and the raw weights kept in last.pt for an exact resume."""

import csv

import pytest
import torch

import yingshe
from yingshe.recipes import recipe_config
from yingshe.runs import load_checkpoint


def test_tiny_fast_recipe_run_with_ema(tmp_path):
    cfg = recipe_config(
        "fast",
        data="digits",
        overrides=[
            f"train.out={tmp_path}",
            "train.epochs=2",
            "train.batch_size=128",
            "train.ema=0.9",
            "model.kwargs={widths: [8, 16, 16]}",
        ],
    )
    result = yingshe.train(cfg)
    assert result.report["config"]["train"]["recipe"] == "fast:grey-28"
    assert (tmp_path / "config.yaml").read_text().count("recipe: fast:grey-28") == 1
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last.raw_state_dict is not None and best.raw_state_dict is None
    assert last.optimizer is not None and best.optimizer is None
    key = "features.0.conv1.weight"
    assert not torch.equal(last.state_dict[key], last.raw_state_dict[key]), "EMA equals raw weights"
    if best.fit_state["epoch"] == last.fit_state["epoch"]:
        torch.testing.assert_close(best.state_dict[key], last.state_dict[key])  # best.pt: the EMA
    assert set(best.state_dict) == set(yingshe.create_model("airbench", 10, 1, 8).state_dict())
    assert result.report["training"]["steps"] > 0
    # the airbench recipe's run exports with parity (GELU's channels-last branch and the plain one)
    for kind, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        exported = yingshe.export(tmp_path, kind, out=tmp_path / name, dynamic_batch=kind == "onnx")
        assert exported.parity["passed"] and exported.parity["top1_agreement"] == 1.0


def test_resume_restores_raw_weights_and_ema(tmp_path):
    overrides = [
        f"train.out={tmp_path}",
        "train.epochs=1",
        "train.ema=0.9",
        "model.kwargs={widths: [8, 8, 8], whiten_bias_epochs: 1}",  # as fast:grey-28's
    ]
    yingshe.train(recipe_config("fast", data="digits", overrides=overrides))
    first = load_checkpoint(tmp_path / "last.pt")
    yingshe.train(resume=tmp_path, epochs=2)
    second = load_checkpoint(tmp_path / "last.pt")
    assert second.fit_state["epoch"] == 2 and second.fit_state["step"] > first.fit_state["step"]
    assert second.raw_state_dict is not None
    # the resumed epoch 2 keeps the stem's bias where epoch 1 left it; the filters move on
    torch.testing.assert_close(second.raw_state_dict["whiten.bias"], first.raw_state_dict["whiten.bias"])
    key = "features.0.conv1.weight"
    assert not torch.equal(second.raw_state_dict[key], first.raw_state_dict[key])


def test_the_colour_recipe_trains_real_cifar_jpegs_with_muon_and_resumes(tmp_path, cifar_folder):
    """fast:colour-32 is Muon: its filter banks end near norm √out (each step rescales them
    first), the run learns, and its last.pt resumes to a longer run."""
    overrides = [
        f"train.out={tmp_path}",
        "train.epochs=6",
        "train.batch_size=50",
        "data.val_fraction=0.1",
        "train.plots=false",
        "model.kwargs={widths: [16, 32, 32]}",
    ]
    cfg = recipe_config("fast", data=str(cifar_folder), overrides=overrides)
    assert cfg.optim.name == "muon" and cfg.train.recipe == "fast:colour-32"
    result = yingshe.train(cfg, progress=False)
    with open(tmp_path / "metrics.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert result.report["accuracy"] > 0.15  # ten classes: chance is 0.10
    last = load_checkpoint(tmp_path / "last.pt")
    assert [g["muon"] for g in last.optimizer["param_groups"]].count(True) >= 1
    for name, weight in last.state_dict.items():
        if weight.ndim == 4 and not name.startswith("whiten"):  # the whitening stem is frozen
            assert float(weight.norm()) == pytest.approx(len(weight) ** 0.5, rel=0.1), name
    steps = result.report["training"]["steps"]
    resumed = yingshe.train(resume=tmp_path, epochs=7, progress=False)
    assert resumed.report["training"]["epochs_run"] == 7
    assert resumed.report["training"]["steps"] == steps // 6 * 7
