"""`--resume RUN --epochs N` with a larger N: the learning rate continues without a jump."""

import pytest

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.runs import read_metrics_csv
from yingshe.train.callbacks import Callback


class RecordLR(Callback):
    """The learning rate of every progress report (every 10 steps and each epoch's last step)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_progress(self, trainer, steps_done: int, stats: dict[str, float]) -> None:
        self.lrs.append(stats["lr"])


class InterruptAtEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch: int, steps: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def config(out, epochs: int) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"train.out={out}",
            f"train.epochs={epochs}",
            "train.batch_size=64",
            "train.plots=false",
            "model.kwargs={widths: [8, 8, 8, 8]}",
            "optim.schedule=onecycle",
        ],
    )
    return cfg


def test_extending_a_finished_run_keeps_its_final_learning_rate(tmp_path):
    before, after = RecordLR(), RecordLR()
    yingshe.train(config(tmp_path, 2), callbacks=[before])
    yingshe.train(resume=tmp_path, epochs=3, callbacks=[after])
    assert after.lrs, "the extension trained"
    # one-cycle used to restart here (1.9e-4 → 1.1e-3 on the fast recipe)
    assert max(after.lrs) <= before.lrs[-1]  # no restart, no jump: at most the last rate it used
    assert min(after.lrs) == max(after.lrs) > 0  # the schedule's final rate, held
    assert [row["epoch"] for row in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2, 3]


def test_extending_an_interrupted_run_stretches_the_rest_of_its_schedule(tmp_path):
    before, after = RecordLR(), RecordLR()
    with pytest.raises(KeyboardInterrupt):
        yingshe.train(config(tmp_path, 3), callbacks=[before, InterruptAtEpoch(3)])
    yingshe.train(resume=tmp_path, epochs=5, callbacks=[after])
    steps = [b - a for a, b in zip(before.lrs, before.lrs[1:], strict=False)]
    biggest_step = max(abs(s) for s in steps)
    assert abs(after.lrs[0] - before.lrs[-1]) <= biggest_step  # no jump at the resume
    assert all(b <= a + 1e-12 for a, b in zip(after.lrs, after.lrs[1:], strict=False))  # still annealing
    assert after.lrs[-1] < 0.01 * max(before.lrs)  # and it ends annealed


def test_an_unknown_monitor_fails_before_the_first_epoch(tmp_path):
    cfg = config(tmp_path, 1)
    cfg.train.monitor = "val_acc"
    with pytest.raises(YingsheError, match="val_acc") as err:
        yingshe.train(cfg)
    assert "val_accuracy" in err.value.fix
    assert not (tmp_path / "last.pt").exists()


class RecordPeaks(Callback):
    """Each parameter group's peak learning rate at the start of every epoch."""

    def __init__(self) -> None:
        self.peaks: list[list[float]] = []

    def on_epoch_start(self, trainer, epoch: int, steps: int) -> None:
        self.peaks.append([group["peak_lr"] for group in trainer.optimizer.param_groups])


def test_a_resumed_run_keeps_the_biases_learning_rate_scale(tmp_path):
    cfg = config(tmp_path, 2)
    apply_overrides(cfg, ["optim.bias_lr_scale=4", "optim.name=sgd", "optim.lr=0.05"])
    with pytest.raises(KeyboardInterrupt):
        yingshe.train(cfg, callbacks=[InterruptAtEpoch(2)])
    resumed = RecordPeaks()
    yingshe.train(resume=tmp_path, callbacks=[resumed])
    assert resumed.peaks and all(peaks == pytest.approx([0.05, 0.2]) for peaks in resumed.peaks)


@pytest.mark.parametrize("strategy", ["gradual", "linear-probe"])
def test_an_interrupted_fine_tune_resumes_with_its_moments(tmp_path, strategy):
    """Its stage-wise optimiser has other groups than the trainer's own (loading them into the
    trainer's raised 'a different number of parameter groups'): it is built at fit start and
    loads the saved moments then, so the resumed run continues them."""
    import torch

    yingshe.train(config(tmp_path / "source", 1))
    cfg = config(tmp_path / "tuned", 3)
    apply_overrides(cfg, [f"finetune.source={tmp_path / 'source'}", f"finetune.strategy={strategy}"])
    with pytest.raises(KeyboardInterrupt):
        yingshe.train(cfg, callbacks=[InterruptAtEpoch(2)])
    saved = torch.load(tmp_path / "tuned" / "last.pt", weights_only=True)["optimizer"]["state"]
    resumed = RecordMoments()
    yingshe.train(resume=tmp_path / "tuned", callbacks=[resumed])
    assert saved and set(resumed.state) == set(saved)
    for key, moments in saved.items():
        for name, value in moments.items():
            assert torch.equal(resumed.state[key][name], value), (key, name)
    assert [row["epoch"] for row in read_metrics_csv(tmp_path / "tuned" / "metrics.csv")] == [1, 2, 3]


class RecordMoments(Callback):
    """The optimiser's state as fitting starts, after the fine-tuning schedule installed its own."""

    def on_fit_start(self, trainer) -> None:
        self.state = {
            k: {n: v.clone() for n, v in m.items()}
            for k, m in trainer.optimizer.state_dict()["state"].items()
        }
