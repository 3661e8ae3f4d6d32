"""Training through the Python API on real data: the run folder, its reports and checkpoints,
exact resume, early stopping, bad files, and prediction agreeing with evaluation."""

from pathlib import Path

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
from yingshe.inference import model_from_checkpoint
from yingshe.runs import load_checkpoint, read_metrics_csv
from yingshe.train.callbacks import Callback
from yingshe.train.optim import OPTIMIZERS

SMALL_CNN = "model.kwargs={widths: [8, 16, 32, 32]}"


def config(tmp_path, *overrides: str) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(cfg, [f"train.out={tmp_path}", "train.batch_size=64", SMALL_CNN, *overrides])
    return cfg


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    cfg = config(tmp_path_factory.mktemp("digits-run"), "train.epochs=6")
    return yingshe.train(cfg)


def test_run_folder_holds_every_file_and_report_field(digits_run):
    root = digits_run.run_dir
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "report.json", "report.md"):
        assert (root / name).is_file(), name
    report = digits_run.report
    for key in ("accuracy", "loss", "classes", "num_train", "num_test", "skipped_files"):
        assert key in report
    assert report["classes"] == [str(i) for i in range(10)]
    assert report["num_train"] + report["num_val"] + report["num_test"] == 1797
    assert report["accuracy"] > 0.85, "six epochs on digits should classify most test images"
    assert len(read_metrics_csv(root / "metrics.csv")) == 6
    assert "| accuracy |" in (root / "report.md").read_text()


def test_checkpoint_is_self_describing_and_safe(digits_run):
    raw = torch.load(digits_run.run_dir / "best.pt", weights_only=True)
    assert raw["classes"] == [str(i) for i in range(10)]
    assert raw["image_size"] == 8 and raw["channels"] == 1
    assert len(raw["mean"]) == len(raw["std"]) == 1
    assert raw["model"]["name"] == "seed-cnn"
    assert raw["config"]["train"]["epochs"] == 6


def test_predict_agrees_with_evaluation_on_the_same_images(digits_run):
    """The serving path (raw image → decode/fit → normalise) gives the evaluation path's answers."""
    payload = load_checkpoint(digits_run.run_dir)
    cfg = RunConfig.from_dict(payload.config)
    data = build_dataset(cfg.data, cfg.train.seed)
    model = model_from_checkpoint(payload)
    batches = eval_batches(data.test, data, cfg, torch.device("cpu"), Normalize(data.mean, data.std), False)
    evaluated = predict_batches(model, batches).logits.softmax(1)
    classifier = yingshe.load(digits_run.run_dir, device="cpu")
    predicted = classifier.predict(list(data.test.images), top_k=1)
    labels = [int(p.label) for p in predicted]
    assert labels == evaluated.argmax(1).tolist()
    np.testing.assert_allclose([p.top[0][1] for p in predicted], evaluated.max(1).values, atol=1e-5)


class InterruptAtEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch: int, steps: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(tmp_path):
    straight = yingshe.train(config(tmp_path / "straight", "train.epochs=3"))
    with pytest.raises(KeyboardInterrupt):
        yingshe.train(config(tmp_path / "split", "train.epochs=3"), callbacks=[InterruptAtEpoch(3)])
    assert not (tmp_path / "split" / "report.json").exists()
    resumed = yingshe.train(resume=tmp_path / "split")
    a = load_checkpoint(straight.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    assert b.fit_state["epoch"] == 3 and len(b.history) == 3
    for key, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[key], value, msg=f"{key} differs after resume")
    assert resumed.accuracy == pytest.approx(straight.accuracy)


def test_an_existing_run_is_never_overwritten(digits_run):
    cfg = config(digits_run.run_dir, "train.epochs=1")
    before = (digits_run.run_dir / "last.pt").read_bytes()
    with pytest.raises(YingsheError, match="already holds a run") as err:
        yingshe.train(cfg)
    assert "--resume" in err.value.fix
    assert (digits_run.run_dir / "last.pt").read_bytes() == before


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path):
    result = yingshe.train(
        config(
            tmp_path,
            "train.epochs=8",
            "train.patience=1",
            "optim.lr=1e-7",
            "optim.schedule=constant",
            "train.monitor=val_loss",
        )
    )
    training = result.report["training"]
    assert training["epochs_run"] < 8 and "early stop" in training["stop_reason"]


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_learns_through_the_loop(tmp_path, name):
    """Through a real run, not only the optimiser's own step: the loss falls and the test
    accuracy is well above chance (10 classes)."""
    lr = {"sgd": 0.05, "adagrad": 0.02}.get(name, 2e-3)
    result = yingshe.train(config(tmp_path, "train.epochs=2", f"optim.name={name}", f"optim.lr={lr}"))
    rows = read_metrics_csv(result.run_dir / "metrics.csv")
    assert rows[-1]["train_loss"] < rows[0]["train_loss"], rows
    assert result.accuracy > 0.3, result.accuracy


def test_photo_folder_with_mixed_formats_and_broken_files(photo_folder, sample_photos, tmp_path):
    cfg = config(
        tmp_path,
        f"data.spec={photo_folder}",
        "data.image_size=32",
        "train.epochs=2",
        "train.batch_size=16",
        "data.workers=0",
    )
    result = yingshe.train(cfg)
    report = result.report
    assert report["classes"] == ["airplane", "cat", "ship"]
    assert report["data"]["channels"] == 3
    assert report["skipped_files"] == 3
    assert sorted(s.split(":")[0].rsplit("/", 1)[1] for s in report["skipped"]) == [
        "empty.png",
        "notes.jpg",
        "truncated.jpg",
    ]
    predictions = yingshe.load(result.run_dir).predict(list(sample_photos.values()), top_k=2)
    assert all(p.error is None and len(p.top) == 2 for p in predictions)
    strict = config(
        tmp_path / "strict",
        f"data.spec={photo_folder}",
        "data.image_size=32",
        "train.epochs=1",
        "data.strict=true",
        "data.workers=0",
    )
    with pytest.raises(YingsheError, match=r"unreadable image .*(truncated|empty|notes)"):
        yingshe.train(strict)


def test_every_augmentation_option_trains(tmp_path):
    """Batch ops (affine, erasing, mixup, cutmix) and a per-image policy, through a real run."""
    batch_ops = config(
        tmp_path / "batch",
        "train.epochs=2",
        "augment.rotate=10",
        "augment.translate=0.1",
        "augment.scale=0.1",
        "augment.erasing=0.5",
        "augment.mixup=0.2",
        "augment.cutmix=1.0",
        "optim.label_smoothing=0.1",
        "optim.grad_clip=1.0",
    )
    rows = read_metrics_csv(yingshe.train(batch_ops).run_dir / "metrics.csv")
    assert rows[-1]["val_loss"] < rows[0]["val_loss"], rows  # it still learns under every op
    policy = config(tmp_path / "policy", "train.epochs=2", "augment.policy=trivialaugment", "data.workers=0")
    rows = read_metrics_csv(yingshe.train(policy).run_dir / "metrics.csv")
    assert rows[-1]["val_loss"] < rows[0]["val_loss"], rows


def test_same_seed_same_model_and_tensorboard_events(tmp_path):
    a = yingshe.train(config(tmp_path / "a", "train.epochs=2", "train.deterministic=true"))
    b = yingshe.train(
        config(tmp_path / "b", "train.epochs=2", "train.deterministic=true", "train.tensorboard=true")
    )
    wa, wb = load_checkpoint(a.run_dir / "last.pt"), load_checkpoint(b.run_dir / "last.pt")
    for key, value in wa.state_dict.items():
        torch.testing.assert_close(wb.state_dict[key], value)
    assert list((b.run_dir / "events").glob("events.out.tfevents.*"))


def test_large_real_photos_are_predicted(digits_run):
    from sklearn.datasets import load_sample_images

    folder = Path(load_sample_images().filenames[0]).parent  # china.jpg, flower.jpg: 640×427 photos
    predictions = yingshe.load(digits_run.run_dir).predict(sorted(folder.glob("*.jpg")), top_k=3)
    assert len(predictions) == 2
    assert all(p.error is None and len(p.top) == 3 for p in predictions)


def validated_epochs(run_dir: Path) -> list[int]:
    return [
        int(r["epoch"]) for r in read_metrics_csv(run_dir / "metrics.csv") if not np.isnan(r["val_accuracy"])
    ]


def test_val_every_validates_the_epochs_it_names_and_always_the_last(tmp_path):
    result = yingshe.train(config(tmp_path, "train.epochs=5", "train.val_every=2"))
    assert validated_epochs(result.run_dir) == [2, 4, 5]
    assert result.report["training"]["best_epoch"] in (2, 4, 5)
    assert (result.run_dir / "best.pt").is_file() and result.accuracy > 0.3


def test_val_every_0_validates_the_last_epoch_only_and_early_stopping_waits_for_it(tmp_path):
    """Early stopping counts validated epochs only: patience 1 would otherwise stop the run after
    its first, never-validated, epoch."""
    result = yingshe.train(config(tmp_path, "train.epochs=3", "train.val_every=0", "train.patience=1"))
    training = result.report["training"]
    assert training["epochs_run"] == 3 and training["best_epoch"] == 3
    assert validated_epochs(result.run_dir) == [3]
    assert load_checkpoint(result.run_dir / "best.pt").metrics["epoch"] == 3


def test_a_run_validated_on_the_test_split_reports_what_a_fresh_evaluation_gives(tmp_path, caplog):
    """With `data.val_fraction=0` the last epoch's validation pass is best.pt on the test split:
    the report takes those predictions instead of a second pass, and they equal a fresh one."""
    with caplog.at_level("INFO", logger="yingshe.api"):
        result = yingshe.train(
            config(tmp_path / "run", "train.epochs=2", "data.val_fraction=0", "train.monitor=epoch")
        )
    assert "test predictions from its epoch's validation pass" in caplog.text
    fresh = yingshe.evaluate(result.run_dir, out=tmp_path / "fresh")
    assert fresh["accuracy"] == result.report["accuracy"]
    assert fresh["confusion_matrix"] == result.report["confusion_matrix"]
    assert fresh["loss"] == pytest.approx(result.report["loss"], rel=1e-6)


class RecordSteps(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.steps_per_epoch = 0

    def on_epoch_start(self, trainer, epoch, steps) -> None:
        self.steps_per_epoch = steps

    def on_step_end(self, trainer) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_a_fractional_epoch_count_ends_mid_epoch_on_a_complete_schedule(tmp_path):
    """train.epochs=1.5 (airbench94 trains 9.9): the second epoch stops at half its steps, the
    schedule ends there, and that epoch is validated and reported as the run's second."""
    steps = RecordSteps()
    result = yingshe.train(config(tmp_path, "train.epochs=1.5", "optim.schedule=linear"), callbacks=[steps])
    training = result.report["training"]
    assert training["epochs_run"] == 2
    assert training["steps"] == len(steps.lrs) == round(1.5 * steps.steps_per_epoch)
    assert steps.lrs[-1] < 0.05 * max(steps.lrs), "the linear decay should end with the run"
    assert validated_epochs(result.run_dir) == [1, 2]
    assert result.report["config"]["train"]["epochs"] == 1.5


def test_a_fractional_run_extended_on_resume_trains_the_new_count_of_steps(tmp_path):
    """Ended after 1.5 epochs (its second epoch a half), resumed to 3: it trains exactly 3
    epochs' steps in all, not 1.5 more whole epochs' worth cut short or run over."""
    first = yingshe.train(config(tmp_path, "train.epochs=1.5", "optim.schedule=linear"))
    steps = RecordSteps()
    resumed = yingshe.train(resume=tmp_path, epochs=3, callbacks=[steps])
    per_epoch = steps.steps_per_epoch
    assert first.report["training"]["steps"] == round(1.5 * per_epoch)
    assert resumed.report["training"]["steps"] == 3 * per_epoch
    assert len(steps.lrs) == 3 * per_epoch - round(1.5 * per_epoch)


def test_train_reuse_cpu_memory_decides_whether_the_allocator_is_set(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("yingshe.api.reuse_cpu_memory", lambda: calls.append(True) or True)
    yingshe.train(config(tmp_path / "off", "train.max_steps=2", "train.reuse_cpu_memory=false"))
    assert calls == []
    yingshe.train(config(tmp_path / "on", "train.max_steps=2", "train.device=cpu"))
    assert calls == [True]
