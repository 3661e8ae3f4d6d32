"""DistributedDataParallel under real `torchrun` processes on the CPU (Gloo).

Each test starts `python -m torch.distributed.run --standalone --nproc-per-node 2 -m yingshe train`
on a few steps of digits with one thread per process (the machine has 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import one_thread

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.models import create_model
from yingshe.runs import load_checkpoint
from yingshe.transfer.freeze import plan_stages

TIMEOUT = 90  # train.dist_timeout in these runs (s): the loaded CI box needs slack for imports
# a transformer has no batch norm, so a step on two shares of B equals a step on the 2B batch
VIT = ["model.name=vit-tiny", "model.kwargs={dim: 32, depth: 1, heads: 2}"]
# SGD: Adam's g/sqrt(v) turns the float noise of a zero gradient (the attention's key bias)
# into full-size steps, so its weights would differ where the losses still agree
SGD = ["optim.name=sgd", "optim.lr=0.05"]
COMMON = [
    "data.spec=digits",
    "train.device=cpu",
    "train.plots=false",
    "augment.crop_padding=0",  # no random augmentation: the same inputs on 1 and 2 processes
    f"train.dist_timeout={TIMEOUT}",
]


def torchrun(
    overrides: list[str],
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
    verb: list[str] | None = None,
) -> tuple[subprocess.CompletedProcess, float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [*(extra or []), "-m", "yingshe", *(verb or ["train"]), *overrides]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=4 * TIMEOUT,
        )
    except subprocess.TimeoutExpired as err:  # show where it stood
        output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"torchrun ran past {4 * TIMEOUT} s:\n{output[-4000:]}")
    return done, time.perf_counter() - started


def step_losses(path: Path) -> list[float]:
    return [float(line.split()[1]) for line in path.read_text().splitlines()]


def train_one_process(overrides: list[str], step_log: Path, monkeypatch) -> yingshe.TrainResult:
    """The same run in this process (no torchrun), its step losses logged to `step_log`."""
    monkeypatch.setenv("YINGSHE_DEBUG_STEP_LOG", str(step_log))
    cfg = RunConfig()
    apply_overrides(cfg, overrides)
    with one_thread():
        return yingshe.train(cfg)


def test_two_ranks_match_one_process_with_the_global_batch(tmp_path, monkeypatch):
    """2 ranks × 16 images against 1 process × 32 (train.batch_size=32 in both: the global batch):
    the same data order, so the same losses step by step and the same final weights; and the
    DDP run's report equals a single-process `evaluate` of its checkpoint."""
    run = [*COMMON, *VIT, *SGD, "train.batch_size=32", "train.epochs=1"]
    run += ["train.max_steps=6"]
    ddp_steps = tmp_path / "ddp-steps.txt"
    done, _ = torchrun(
        [*run, f"train.out={tmp_path / 'ddp'}"], env={"YINGSHE_DEBUG_STEP_LOG": str(ddp_steps)}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    one_steps = tmp_path / "one-steps.txt"
    monkeypatch.setenv("YINGSHE_DEBUG_STEP_LOG", str(one_steps))
    cfg = RunConfig()
    apply_overrides(cfg, [*run, f"train.out={tmp_path / 'one'}"])
    with one_thread():
        yingshe.train(cfg)

    ddp, one = step_losses(ddp_steps), step_losses(one_steps)
    assert len(ddp) == len(one) == 6
    assert ddp == pytest.approx(one, rel=1e-4, abs=1e-5)
    ddp_weights = load_checkpoint(tmp_path / "ddp" / "last.pt").state_dict
    one_weights = load_checkpoint(tmp_path / "one" / "last.pt").state_dict
    for key, value in one_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)

    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    with one_thread():
        again = yingshe.evaluate(tmp_path / "ddp", out=tmp_path / "evaluated")
    for key in ("accuracy", "loss", "f1_macro", "ece", "confusion_matrix", "per_class"):
        assert report[key] == again[key], key
    assert report["num_test"] == again["num_test"]


def test_the_balanced_sampler_splits_one_draw_between_the_ranks(tmp_path, monkeypatch):
    """`train.balance=sampler` on a long-tailed cut of digits (data.imbalance=10: 530 images, 128
    zeros down to 13 nines), 2 ranks × 16 against 1 process × 32. An epoch's draws (with
    replacement, ∝ 1 / class count) are one sequence from (seed, epoch) that the ranks split
    between them (`loader.EpochShuffle`), so each global batch is the batch the single process
    draws: the same losses step by step over the whole epoch, the same step count and weights.
    Both ranks drawing the whole sequence (16 images twice per step, twice the steps) or each its
    own would fail that. The class frequencies of the shares: tests/unit/test_balance.py."""
    run = [*COMMON, *VIT, *SGD, "data.imbalance=10", "train.balance=sampler"]
    run += ["train.batch_size=32", "train.epochs=1"]
    ddp_steps = tmp_path / "ddp-steps.txt"
    done, _ = torchrun(
        [*run, f"train.out={tmp_path / 'ddp'}"], env={"YINGSHE_DEBUG_STEP_LOG": str(ddp_steps)}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one_steps = tmp_path / "one-steps.txt"
    one = train_one_process([*run, f"train.out={tmp_path / 'one'}"], one_steps, monkeypatch)

    ddp_losses, one_losses = step_losses(ddp_steps), step_losses(one_steps)
    assert len(ddp_losses) == len(one_losses) == 17  # ⌈530 / 32⌉: the last batch holds 18
    assert ddp_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-5)
    ddp_weights = load_checkpoint(tmp_path / "ddp" / "last.pt").state_dict
    for key, value in load_checkpoint(tmp_path / "one" / "last.pt").state_dict.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert report["training"]["steps"] == one.report["training"]["steps"] == 17
    assert report["training"]["epochs_run"] == 1 and report["config"]["train"]["balance"] == "sampler"
    assert report["num_train"] == 530 and report["num_test"] == 359
    assert 0 <= report["balanced_accuracy"] <= 1


VIT_2 = ["model.name=vit-tiny", "model.kwargs={dim: 32, depth: 2, heads: 2}"]  # stages: embed, 2 layers, norm
SMALL = ["data.limit_train=180", "train.batch_size=32"]  # 160 training images: 5 steps of 2 × 16


@pytest.fixture(scope="module")
def vit_source(tmp_path_factory) -> Path:
    """A fine-tuning source: VIT_2 trained one epoch on SMALL in this process (~5 s)."""
    source = tmp_path_factory.mktemp("vit-source")
    cfg = RunConfig()
    apply_overrides(cfg, [*COMMON, *VIT_2, *SGD, *SMALL, "train.epochs=1", f"train.out={source}"])
    with one_thread():
        yingshe.train(cfg)
    return source


def finetune_on_two_ranks_and_one(
    run: list[str], tmp_path: Path, monkeypatch, steps: int, verb: list[str] | None = None
) -> None:
    """Fine-tune `run` under torchrun (to tmp_path/ddp; `yingshe train`, or `verb`) and in this
    process (tmp_path/one): the run finishes, with the same losses step by step and the same
    final weights."""
    ddp_steps = tmp_path / "ddp-steps.txt"
    done, _ = torchrun(
        [*run, f"train.out={tmp_path / 'ddp'}"], env={"YINGSHE_DEBUG_STEP_LOG": str(ddp_steps)}, verb=verb
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one_steps = tmp_path / "one-steps.txt"
    train_one_process([*run, f"train.out={tmp_path / 'one'}"], one_steps, monkeypatch)
    ddp_losses, one_losses = step_losses(ddp_steps), step_losses(one_steps)
    assert len(ddp_losses) == len(one_losses) == steps
    assert ddp_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-5)
    ddp_weights = load_checkpoint(tmp_path / "ddp" / "last.pt").state_dict
    for key, value in load_checkpoint(tmp_path / "one" / "last.pt").state_dict.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_a_gradual_finetune_unfreezes_stages_under_ddp(vit_source, tmp_path, monkeypatch):
    """`finetune.strategy=gradual` from a small ViT run on 2 ranks: epoch 1 trains the new head,
    epoch 2 the top stage (the final norm) too, epoch 3 the last encoder layer; the first layer's
    turn (epoch 4) never comes and `freeze_until=embed` never trains the embedding. Two things
    broke this: DDP registers the parameters that require grad when it wraps the model and waits
    every step for each one's gradient, so the stages frozen at first failed the second step
    ("Expected to have finished reduction in the prior iteration"); and the stage schedule ran on
    rank 0 alone (among the caller's callbacks), so rank 1 trained every stage with the default
    optimiser. The run must finish with the losses of one process step by step (every rank
    follows the schedule and the gradients of stages unfrozen mid-run are averaged), and rank 0's
    checkpoints must hold each stage bit-identical to the source while frozen, moved once trained."""
    run = [*COMMON, *SGD, *SMALL, "train.epochs=3", f"finetune.source={vit_source}"]
    run += ["finetune.strategy=gradual", "finetune.freeze_until=embed", "finetune.head_lr_mult=1"]
    finetune_on_two_ranks_and_one(run, tmp_path, monkeypatch, steps=15)

    record = json.loads((tmp_path / "ddp" / "finetune.json").read_text())
    assert record["unfreeze_order"] == ["norm", "encoder.layers.1", "encoder.layers.0"]
    plan = plan_stages(create_model("vit-tiny", 10, 1, 8, dim=32, depth=2, heads=2), "gradual", "embed")
    stage = dict(plan.stages)
    original = load_checkpoint(vit_source).state_dict  # the weights fine-tuning started from (best.pt)
    epoch_2 = load_checkpoint(tmp_path / "ddp" / "last.prev.pt").state_dict
    epoch_3 = load_checkpoint(tmp_path / "ddp" / "last.pt").state_dict
    for key in stage["embed"] + stage["encoder.layers.0"]:  # frozen all along
        assert torch.equal(epoch_3[key], original[key]), key
    for key in stage["encoder.layers.1"]:  # frozen through epoch 2, trained in epoch 3
        assert torch.equal(epoch_2[key], original[key]), key
    assert any(not torch.equal(epoch_3[key], original[key]) for key in stage["encoder.layers.1"])
    assert all(not torch.equal(epoch_2[key], original[key]) for key in stage["norm"])  # from epoch 2


def test_a_linear_probe_under_ddp_trains_the_head_alone(vit_source, tmp_path, monkeypatch):
    """`torchrun -m yingshe finetune SOURCE` with `finetune.strategy=linear-probe` on 2 ranks: the
    body never trains, so it is frozen before DDP wraps the model and DDP all-reduces the head's
    gradients alone (registered and frozen afterwards, the body failed the second step the same
    way). The run finishes on every rank (rank 1 once read rank 0's report, which it does not
    have, and exited 1), matches one process, and rank 0's checkpoint holds the body bit-identical
    to the source and a trained head."""
    run = [*COMMON, *SGD, *SMALL, "train.epochs=2", f"finetune.source={vit_source}"]
    run += ["finetune.strategy=linear-probe", "finetune.head_lr_mult=1"]
    verb = ["finetune", str(vit_source)]  # the verb a user runs; its flags' settings are in `run`
    finetune_on_two_ranks_and_one(run, tmp_path, monkeypatch, steps=10, verb=verb)
    original = load_checkpoint(vit_source).state_dict
    tuned = load_checkpoint(tmp_path / "ddp" / "last.pt").state_dict
    head = {"head.weight", "head.bias"}
    assert set(tuned) - head == set(original) - head
    for key in set(original) - head:
        assert torch.equal(tuned[key], original[key]), key
    epoch_1 = load_checkpoint(tmp_path / "ddp" / "last.prev.pt").state_dict
    assert not torch.equal(tuned["head.weight"], epoch_1["head.weight"])  # trained in epoch 2


def test_a_killed_rank_makes_the_run_fail_fast_with_a_clear_error(tmp_path):
    """Rank 1 SIGKILLs itself before step 3: the run ends non-zero well within the collective
    timeout, names the dead rank's signal, and leaves no report."""
    overrides = [*COMMON, "model.kwargs={widths: [8, 8, 16, 16]}", "train.batch_size=32", "train.epochs=1"]
    done, seconds = torchrun(
        [*overrides, f"train.out={tmp_path / 'run'}"], env={"YINGSHE_DEBUG_KILL_AT": "1:3"}
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "SIGKILL" in output or "exitcode  : -9" in output, output[-3000:]
    assert seconds < TIMEOUT + 60  # startup, then torchrun's teardown, not a hang to the timeout
    assert not (tmp_path / "run" / "report.json").exists()


def test_elastic_restart_resumes_the_run_and_finishes(tmp_path):
    """`torchrun --max-restarts 1`: rank 1 dies in epoch 2; the restarted group resumes from the
    epoch-1 last.pt (not from scratch) and writes the report."""
    overrides = [
        *COMMON,
        "model.kwargs={widths: [8, 8, 16, 16]}",
        "data.limit_train=256",
        "train.batch_size=32",
        "train.epochs=2",
        f"train.out={tmp_path / 'run'}",
    ]
    done, _ = torchrun(overrides, env={"YINGSHE_DEBUG_KILL_AT": "1:9"}, extra=["--max-restarts", "1"])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "torchrun restart 1: resuming" in output
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["training"]["epochs_run"] == 2


def test_a_parameter_frozen_after_epoch_1_does_not_stall_ddp(tmp_path):
    """The airbench stem's bias trains in epoch 1 only (fast:grey-28's setting): from epoch 2
    DDP gets no gradient for it, and the run must still finish with the bias left as it was."""
    overrides = [
        *COMMON,
        "model.name=airbench",
        "model.kwargs={widths: [8, 8, 8], whiten_bias_epochs: 1}",
        "data.limit_train=256",
        "train.batch_size=32",
        "train.epochs=2",
        f"train.out={tmp_path / 'run'}",
    ]
    done, _ = torchrun(overrides)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["training"]["epochs_run"] == 2
    epoch_1 = load_checkpoint(tmp_path / "run" / "last.prev.pt").state_dict
    epoch_2 = load_checkpoint(tmp_path / "run" / "last.pt").state_dict
    torch.testing.assert_close(epoch_2["whiten.bias"], epoch_1["whiten.bias"])
    assert not torch.equal(epoch_2["features.0.conv1.weight"], epoch_1["features.0.conv1.weight"])


def test_a_time_budget_under_torchrun_ends_every_rank_at_one_planned_step(tmp_path):
    """`train.time_budget` on 2 ranks: each rank's clock plans, the ranks take the slowest plan,
    so both stop at the same step (a rank that stopped alone would leave the other waiting in
    the gradient all-reduce until the collective timeout) and the run ends inside its budget on
    the planned step count, after more epochs than `train.epochs` asked."""
    overrides = [
        *COMMON,
        "model.kwargs={widths: [8, 8, 16, 16]}",
        "data.limit_train=512",
        "train.batch_size=32",
        "train.epochs=1",
        "train.time_budget=20s",
        f"train.out={tmp_path / 'run'}",
    ]
    done, seconds = torchrun(overrides)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    budget, training = report["time_budget"], report["training"]
    assert budget["planned_steps"] == training["steps"]
    assert training["epochs_run"] > 1  # the budget, not train.epochs=1, decided the length
    assert budget["spent_seconds"] <= 20 * 1.3, budget
    assert budget["spent_seconds"] >= 20 * 0.5, "the budget was used, not left idle"
    assert seconds < 20 + TIMEOUT  # start-up and teardown, not a rank waiting out the timeout


SKIPPING_MODEL = """
import sys

from torch import nn

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.models import MODELS, ModelEntry


class SkipsALayer(nn.Module):
    \"\"\"A small net whose `unused` layer never takes part in the forward (an auxiliary head).\"\"\"

    def __init__(self, num_classes, in_chans, image_size, **kw):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size**2, num_classes))
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.body(x)


MODELS.register("skips-a-layer")(ModelEntry(SkipsALayer, "a net with a parameter its forward skips"))
cfg = RunConfig()
apply_overrides(cfg, ["model.name=skips-a-layer", *sys.argv[1:]])
yingshe.train(cfg, progress=False)
"""


def test_a_model_that_skips_parameters_gets_a_clear_error_and_trains_with_find_unused(tmp_path):
    """A forward that leaves a parameter without a gradient stops DDP at its second step; the run
    says what happened and which setting fixes it, and with that setting it trains."""
    script = tmp_path / "skipping.py"
    script.write_text(SKIPPING_MODEL)
    run = [*COMMON, "train.batch_size=32", "train.max_steps=4", "train.epochs=1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    refused = subprocess.run(
        [*command, str(script), *run, f"train.out={tmp_path / 'refused'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * TIMEOUT,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "gave some trainable parameters no gradient" in output, output[-3000:]
    assert "train.find_unused_parameters=true" in output
    done = subprocess.run(
        [*command, str(script), *run, "train.find_unused_parameters=true", f"train.out={tmp_path / 'run'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * TIMEOUT,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["training"]["steps"] == 4


def test_global_batch_must_divide_among_ranks():
    from yingshe.errors import YingsheError
    from yingshe.train.distributed import per_rank_batch

    assert per_rank_batch(64, 4) == 16
    with pytest.raises(YingsheError, match=r"batch_size=30 .* 4 processes") as err:
        per_rank_batch(30, 4)
    assert "28 or 32" in err.value.fix
