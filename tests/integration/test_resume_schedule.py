"""`--resume RUN --epochs N` with a larger N: the learning rate continues without a jump, and a
run that ended inside an epoch (a fractional `train.epochs`) finishes that epoch first."""

import json

import pytest
import torch

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.runs import load_checkpoint, read_metrics_csv, save_checkpoint
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
    record = (tmp_path / "tuned" / "finetune.json").read_text()
    resumed = RecordMoments()
    yingshe.train(resume=tmp_path / "tuned", callbacks=[resumed])
    assert (tmp_path / "tuned" / "finetune.json").read_text() == record  # its start, as written then
    assert json.loads(record)["load"] is not None
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


# --- a run ended inside an epoch (train.epochs=1.5), extended -----------------------------------

TIMINGS = {"epoch_seconds", "train_images_per_second"}  # the machine's, not the run's
EXACT = ["optim.schedule=constant", "train.deterministic=true", "train.device=cpu"]


def exact_config(out, epochs: float, *overrides: str) -> RunConfig:
    """`config` on a constant rate, so a run extended from 1.5 to 3 epochs takes the same steps
    as one planned for 3: its step losses can be held bit-identical to that run's."""
    cfg = config(out, epochs)
    apply_overrides(cfg, [*EXACT, *overrides])
    return cfg


def train_logged(log, monkeypatch, *args, **kwargs):
    """`yingshe.train` on one thread, each step's loss appended to `log` (YINGSHE_DEBUG_STEP_LOG)."""
    from support import one_thread

    monkeypatch.setenv("YINGSHE_DEBUG_STEP_LOG", str(log))
    with one_thread():
        return yingshe.train(*args, progress=False, **kwargs)


def step_losses(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def without_timings(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """The uninterrupted 3-epoch run: its folder and step log."""
    out = tmp_path_factory.mktemp("three-epochs")
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_logged(out / "steps.log", monkeypatch, exact_config(out / "run", 3))
    return out / "run", step_losses(out / "steps.log")


def test_extending_a_fractional_run_finishes_its_partial_epoch(three_epochs, tmp_path, monkeypatch):
    """1.5 epochs extended to 3: the resume continues epoch 2 where it stopped (its order's other
    half), so every step is bit-identical to the run planned for 3 epochs, the epochs are numbered
    1, 2, 3 once each and epoch 2's row is the completed epoch's, its train figures included."""
    reference, want = three_epochs
    run, log = tmp_path / "run", tmp_path / "steps.log"
    train_logged(log, monkeypatch, exact_config(run, 1.5))
    half = len(step_losses(log))
    unextended = train_logged(log, monkeypatch, resume=run)  # the same epochs: nothing more to train
    assert len(step_losses(log)) == half and unextended.report["training"]["steps"] == half
    assert [row["epoch"] for row in read_metrics_csv(run / "metrics.csv")] == [1, 2]

    result = train_logged(log, monkeypatch, resume=run, epochs=3)
    assert step_losses(log) == want  # epoch 2 went on with the batches it had not taken
    rows = read_metrics_csv(run / "metrics.csv")
    assert without_timings(rows) == without_timings(read_metrics_csv(reference / "metrics.csv"))
    training = result.report["training"]
    assert training["epochs_run"] == 3 and training["steps"] == len(want)
    assert training["best"] == rows[training["best_epoch"] - 1]["val_accuracy"]  # a row of its own
    got, expected = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    for key, tensor in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], tensor), key


def test_a_fractional_run_saved_before_partial_epochs_were_kept_extends_the_same_way(
    three_epochs, tmp_path, monkeypatch
):
    """A last.pt without `partial` (written before it was saved): the partial epoch's position
    comes from the history's step column, and the same steps follow."""
    _, want = three_epochs
    run, log = tmp_path / "run", tmp_path / "steps.log"
    train_logged(log, monkeypatch, exact_config(run, 1.5))
    old = load_checkpoint(run / "last.pt")
    old.fit_state.pop("partial", None)
    save_checkpoint(run / "last.pt", old)
    train_logged(log, monkeypatch, resume=run, epochs=3)
    assert step_losses(log) == want
    assert [row["epoch"] for row in read_metrics_csv(run / "metrics.csv")] == [1, 2, 3]


class InterruptAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.step == self.step:
            raise KeyboardInterrupt


def test_a_fractional_run_resumed_mid_epoch_trains_to_its_last_step(three_epochs, tmp_path, monkeypatch):
    """1.5 epochs, last.pt every 7 steps, stopped late in epoch 1: the resume counts the epochs
    it needs from epoch 1's start, not from the checkpoint's step (which left epoch 2 out)."""
    _, want = three_epochs
    run, log = tmp_path / "run", tmp_path / "steps.log"
    per_epoch = len(want) // 3
    saved = 7 * ((per_epoch - 1) // 7)  # the last mid-epoch checkpoint of epoch 1
    assert 2 * saved > per_epoch, "the steps left after it fit in one epoch"
    cfg = exact_config(run, 1.5, "train.checkpoint_every=7")
    with pytest.raises(KeyboardInterrupt):
        train_logged(log, monkeypatch, cfg, callbacks=[InterruptAtStep(saved + 1)])
    log.unlink()
    result = train_logged(log, monkeypatch, resume=run)
    assert result.report["training"]["steps"] == round(1.5 * per_epoch)
    assert step_losses(log) == want[saved : round(1.5 * per_epoch)]
    assert [row["epoch"] for row in read_metrics_csv(run / "metrics.csv")] == [1, 2]


class StopBeforeEpochEnd(Callback):
    """Stands for a kill one step before the first epoch's end (last.pt written every step)."""

    def on_step_end(self, trainer) -> None:
        if trainer.state.step == trainer.steps_per_epoch - 1:
            raise KeyboardInterrupt


def test_a_resumed_epochs_speed_counts_only_the_images_trained_after_the_resume(tmp_path, monkeypatch):
    """Stopped one step before epoch 1's end and resumed: epoch 1's row divides the one batch
    trained after the resume by the time it took, not all of the epoch's images (which would
    make it about as many times faster as the epoch has steps)."""
    run, log = tmp_path / "run", tmp_path / "steps.log"
    cfg = exact_config(run, 2, "train.checkpoint_every=1")
    with pytest.raises(KeyboardInterrupt):
        train_logged(log, monkeypatch, cfg, callbacks=[StopBeforeEpochEnd()])
    train_logged(log, monkeypatch, resume=run)
    first, second = read_metrics_csv(run / "metrics.csv")
    assert first["train_images_per_second"] < 3 * second["train_images_per_second"], (first, second)


def test_a_run_ending_inside_an_epoch_leaves_its_last_checkpoint_to_the_epochs_end(tmp_path, monkeypatch):
    """1.5 epochs with last.pt every step: the final step writes no mid-epoch last.pt of its own
    (a kill before the end-of-epoch one would resume a run already done, its last epoch never
    closed), so the previous last.pt is the step before, and last.pt closes the epoch."""
    run, log = tmp_path / "run", tmp_path / "steps.log"
    result = train_logged(log, monkeypatch, exact_config(run, 1.5, "train.checkpoint_every=1"))
    final = result.report["training"]["steps"]
    last, previous = load_checkpoint(run / "last.pt"), load_checkpoint(run / "last.prev.pt")
    assert last.fit_state["step"] == final and last.fit_state["progress"] is None
    assert previous.fit_state["step"] == final - 1
