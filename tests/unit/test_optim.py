"""Optimisers by name take a step; schedules have the shapes their names promise."""

import copy
import itertools
import math

import pytest
import torch

from yingshe.config import OptimConfig, RunConfig, validate
from yingshe.errors import YingsheError
from yingshe.train.muon import Muon, orthogonalise
from yingshe.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    SchedulePlan,
    build_optimizer,
    build_schedule,
    param_groups,
    set_lr,
)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_reduces_a_simple_loss(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = OptimConfig(name=name, lr=0.05, weight_decay=0.0)
    optimizer = build_optimizer(model, cfg)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(30):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.ndim for p in decay["params"]] == [4]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_bias_lr_scale_multiplies_the_biases_rate_through_the_schedule_and_a_resume():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, bias_lr_scale=64.0))
    weights, biases = optimizer.param_groups
    assert weights["lr"] == pytest.approx(0.1) and biases["lr"] == pytest.approx(6.4)
    assert set_lr(optimizer, 0.5) == pytest.approx(0.05) and biases["lr"] == pytest.approx(3.2)
    restored = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))  # the scale comes from the state
    restored.load_state_dict(optimizer.state_dict())
    assert [g["lr_scale"] for g in restored.param_groups] == [1.0, 64.0]


def test_onecycle_rises_to_the_peak_then_anneals_to_almost_zero():
    factor = build_schedule(OptimConfig(schedule="onecycle"), total_steps=100, steps_per_epoch=10)
    values = [factor(s) for s in range(100)]
    assert values[0] == pytest.approx(0.04)
    assert max(values) == pytest.approx(1.0, abs=0.01) and values.index(max(values)) in (29, 30, 31)
    assert values[-1] < 0.01


def test_cosine_with_warmup_and_step_decay():
    cosine = build_schedule(OptimConfig(schedule="cosine", warmup_epochs=1), 100, 10)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-6)
    step = build_schedule(OptimConfig(schedule="step", step_epochs=2, gamma=0.5), 100, 10)
    assert [step(s) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_set_lr_scales_the_peak_rate():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.2))
    assert set_lr(optimizer, 0.5) == pytest.approx(0.1)
    assert all(g["lr"] == pytest.approx(0.1) for g in optimizer.param_groups)


def test_an_unextended_plan_maps_each_step_to_itself():
    plan = SchedulePlan(100)
    assert [plan.position(s) for s in (0, 1, 57, 99)] == [0, 1, 57, 99]
    assert plan.extended(40, 100) is plan  # resumed with the same epochs: exactly the same schedule


@pytest.mark.parametrize("schedule", SCHEDULES.names())
@pytest.mark.parametrize("resumed_at", [30, 100])  # mid-run, and a finished run
def test_an_extended_run_continues_its_learning_rate_without_a_jump(schedule, resumed_at):
    cfg = OptimConfig(schedule=schedule, warmup_epochs=1, step_epochs=2)
    factor = build_schedule(cfg, total_steps=100, steps_per_epoch=10)
    before = SchedulePlan(100)
    after = before.extended(resumed_at, 200)  # --epochs doubled
    last_old = factor(before.position(resumed_at - 1))
    first_new = factor(after.position(resumed_at))
    steps = [factor(after.position(s)) for s in range(resumed_at, 200)]
    biggest_old_change = max(abs(factor(s + 1) - factor(s)) for s in range(99))
    assert abs(first_new - last_old) <= biggest_old_change + 1e-12  # no jump at the resume
    assert max(abs(b - a) for a, b in itertools.pairwise(steps)) <= biggest_old_change + 1e-12
    assert steps[-1] == pytest.approx(factor(100), abs=0.02)  # ends where the schedule ends
    assert after.position(resumed_at) == pytest.approx(resumed_at)


def test_a_plan_survives_a_checkpoint_round_trip_and_a_second_extension():
    plan = SchedulePlan(100).extended(50, 150)
    assert SchedulePlan.from_dict(plan.to_dict()) == plan
    again = plan.extended(120, 300)
    assert again.position(120) == pytest.approx(plan.position(120))
    assert again.position(300) == pytest.approx(100)


def test_linear_falls_straight_from_the_peak_to_zero_after_its_warmup():
    factor = build_schedule(OptimConfig(schedule="linear"), total_steps=100, steps_per_epoch=10)
    assert factor(0) == 1.0 and factor(50) == pytest.approx(0.5) and factor(99) == pytest.approx(0.01)
    warmed = build_schedule(OptimConfig(schedule="linear", warmup_epochs=1), 100, 10)
    assert warmed(0) == pytest.approx(0.1) and warmed(9) == pytest.approx(1.0)
    assert warmed(10 + 45) == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (8, 4, 3, 3), (4, 200)])
def test_orthogonalise_gives_a_matrix_whose_singular_values_are_near_one(shape):
    torch.manual_seed(0)
    update = torch.randn(shape) * torch.logspace(-1, 0, shape[0]).view(-1, *[1] * (len(shape) - 1))
    result = orthogonalise(update)
    assert result.shape == update.shape and result.dtype == update.dtype
    singular = torch.linalg.svdvals(result.reshape(shape[0], -1))
    before = torch.linalg.svdvals(update.reshape(shape[0], -1))
    assert before.max() / before.min() > 10  # the update was badly conditioned ...
    assert singular.min() > 0.3 and singular.max() < 1.6  # ... its orthogonalised step is not


def _conv_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )


def test_muon_steps_the_filters_on_a_fixed_norm_and_the_rest_as_nesterov_sgd():
    torch.manual_seed(0)
    model, twin = _conv_net(), _conv_net()
    twin.load_state_dict(model.state_dict())
    cfg = OptimConfig(name="muon", lr=0.1, weight_decay=0.01, momentum=0.85, bias_lr_scale=4.0, muon_lr=0.05)
    muon = build_optimizer(model, cfg)
    kinds = sorted((g["muon"], g["weight_decay"], g["lr"]) for g in muon.param_groups)
    assert kinds == [(False, 0.0, pytest.approx(0.4)), (False, 0.01, 0.1), (True, 0.0, pytest.approx(0.05))]
    # the same non-filter parameters under torch's own Nesterov SGD, with the same groups
    sgd_groups = [
        {"params": [p for n, p in twin.named_parameters() if p.ndim == 2], "weight_decay": 0.01, "lr": 0.1},
        {"params": [p for p in twin.parameters() if p.ndim == 1], "weight_decay": 0.0, "lr": 0.4},
    ]
    sgd = torch.optim.SGD(sgd_groups, lr=0.1, momentum=0.85, nesterov=True)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 2, (32,))
    losses = []
    for _ in range(20):
        for net, opt in ((model, muon), (twin, sgd)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            if net is model:
                losses.append(float(loss.detach()))
        twin[0].weight.data.copy_(model[0].weight.data)  # the filters follow Muon in both nets
        twin[1].running_mean.copy_(model[1].running_mean)
        twin[1].running_var.copy_(model[1].running_var)
    assert losses[-1] < losses[0] * 0.8
    for (name, mine), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        if mine.ndim != 4:
            assert torch.allclose(mine, theirs, atol=1e-5), name
    # the filter bank was rescaled to norm √out before its last step, which moved it by lr × ~√out
    assert float(model[0].weight.detach().norm()) == pytest.approx(8**0.5, rel=0.2)


def _reference_muon(weight: torch.Tensor, grads: list[torch.Tensor], lr: float, momentum: float):
    """airbench94_muon.py's `Muon.step` for one filter bank, transcribed (fp32 where it uses bf16)."""

    def newton_schulz(g, steps=3, eps=1e-7):
        a, b, c = (3.4445, -4.7750, 2.0315)
        x = g.float()
        x /= x.norm() + eps
        if g.size(0) > g.size(1):
            x = x.T
        for _ in range(steps):
            m = x @ x.T
            x = a * x + (b * m + c * m @ m) @ x
        return x.T if g.size(0) > g.size(1) else x

    w, buf = weight.clone(), torch.zeros_like(weight)
    for g in grads:
        buf.mul_(momentum).add_(g)
        g = g.add(buf, alpha=momentum)
        w.mul_(len(w) ** 0.5 / w.norm())
        w.add_(newton_schulz(g.reshape(len(g), -1)).view(g.shape), alpha=-lr)
    return w


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (64, 2, 2, 2)])  # wide and tall (out > in·k²)
def test_muon_steps_a_filter_bank_as_airbench94_muon_does(shape):
    torch.manual_seed(0)
    weight = torch.randn(shape)
    grads = [torch.randn(shape) for _ in range(3)]
    param = torch.nn.Parameter(weight.clone())
    optimizer = Muon([{"params": [param], "muon": True}], lr=0.24, momentum=0.85, muon_momentum=0.6)
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
    expected = _reference_muon(weight, grads, lr=0.24, momentum=0.6)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-4, atol=1e-5)


def test_muon_leaves_convolutions_with_a_bias_to_sgd():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, bias=False),  # a BN follows: Muon
        torch.nn.BatchNorm2d(8),
        torch.nn.Conv2d(8, 4, 1),  # a gate with a bias (squeeze-excite, patch embedding): SGD
    )
    optimizer = build_optimizer(model, OptimConfig(name="muon", lr=0.1))
    muon = [p for g in optimizer.param_groups if g["muon"] for p in g["params"]]
    assert len(muon) == 1 and muon[0] is model[0].weight


def test_muon_resumes_its_moments_and_refuses_pretrained_weights():
    torch.manual_seed(0)
    model = _conv_net()
    cfg = OptimConfig(name="muon", lr=0.1)
    optimizer = build_optimizer(model, cfg)
    x = torch.randn(4, 3, 8, 8)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    twin = copy.deepcopy(model)
    restored = build_optimizer(twin, cfg)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from a file: no shared buffers
    for net, opt in ((model, optimizer), (twin, restored)):  # one more step each: the same step
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)
    for key in ("finetune", "pretrained"):
        config = RunConfig()
        config.optim.name = "muon"
        if key == "finetune":
            config.finetune.source = "timm:resnet18"
        else:
            config.model.pretrained = True
        with pytest.raises(YingsheError, match="optim.name=muon does not train pretrained weights"):
            validate(config)
