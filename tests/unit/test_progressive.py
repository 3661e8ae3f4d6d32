"""Progressive resizing (train/progressive.py): the side follows the schedule, then full size."""

import json

import pytest
import torch

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.train.callbacks import Callback
from yingshe.train.progressive import resize_batch, training_side


def test_the_side_ramps_from_the_start_to_full_size_in_even_steps():
    sides = [training_side(28, 16, 0.5, f / 100) for f in range(101)]
    assert sides[0] == 16 and sides[50:] == [28] * 51  # full size from `until` to the end
    assert sides == sorted(sides) and all(s % 2 == 0 for s in sides)
    assert len(set(sides[:50])) >= 5  # a ramp, not a jump
    assert training_side(28, None, 0.5, 0.0) == 28  # off
    assert training_side(28, 32, 0.5, 0.0) == 28  # never larger than the images


def test_a_resized_batch_keeps_its_layout_and_average():
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = resize_batch(x, 16)
    assert y.shape == (4, 3, 16, 16) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y.mean((2, 3)), x.mean((2, 3)), atol=2e-3)
    # antialiased: each pixel averages a 4×4 footprint of the noise (variance × ~0.1); plain
    # bilinear would average only 2×2 (× 0.25) and alias
    assert y.var() < 0.15 * x.var()
    assert resize_batch(x, 32) is x


class RecordSides(Callback):
    """The input side of every training and every evaluation forward pass."""

    def __init__(self) -> None:
        self.train: list[int] = []
        self.eval: list[int] = []

    def on_fit_start(self, trainer) -> None:
        def record(module, args):
            (self.train if module.training else self.eval).append(args[0].shape[-1])

        trainer.model.register_forward_pre_hook(record)


def digits_run(out, model: str, side: int, *more: str) -> RunConfig:
    """An airbench-sized run on the 8-px digits with progressive resizing from `side`."""
    cfg = RunConfig()
    words = ["data.spec=digits", f"train.out={out}", f"model.name={model}", "train.plots=false"]
    apply_overrides(cfg, [*words, f"augment.progressive_min={side}", *more])
    return cfg


def test_a_run_trains_small_first_and_full_size_later_and_evaluates_full_size(tmp_path):
    cfg = digits_run(tmp_path, "airbench", 6, "train.epochs=4", "augment.progressive_until=0.5")
    sides = RecordSides()
    result = yingshe.train(cfg, callbacks=[sides], progress=False)
    half = len(sides.train) // 2
    assert sides.train[0] == 6 and set(sides.train[half + 1 :]) == {8}
    assert sides.train == sorted(sides.train) and set(sides.eval) == {8}
    assert result.accuracy > 0.5  # it still learns the digits


def test_a_first_side_the_net_cannot_take_is_refused_before_training(tmp_path):
    with pytest.raises(YingsheError, match="model airbench cannot take 4 px images") as caught:
        yingshe.train(digits_run(tmp_path, "airbench", 4), progress=False)
    assert "raise augment.progressive_min" in caught.value.fix


@pytest.mark.parametrize(
    ("model", "side", "problem"),
    [
        ("airbench", 8, "is not below the image size"),  # digits are 8 px: nothing would change
        ("resnet18", 4, "model resnet18 cannot take 4 px images"),  # would run, but on padding
    ],
)
def test_a_side_that_would_do_nothing_or_train_on_padding_is_refused(tmp_path, model, side, problem):
    with pytest.raises(YingsheError, match=problem):
        yingshe.train(digits_run(tmp_path / "run", model, side), progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder


def test_a_time_budget_plans_progressive_resizing_by_its_pixels_and_ends_inside_it(tmp_path):
    """A 12 s budget on a run that starts at 6 of 8 px: the plan counts the small steps' lower
    cost, so the run ramps up, ends full size on its planned step, inside the budget, having
    used most of it."""
    cfg = digits_run(tmp_path, "airbench", 6, "train.time_budget=12s", "augment.progressive_until=0.5")
    sides = RecordSides()
    yingshe.train(cfg, callbacks=[sides], progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    budget, training = report["time_budget"], report["training"]
    assert training["steps"] == budget["planned_steps"] == len(sides.train)
    assert sides.train[0] == 6 and sides.train[-1] == 8 and sides.train == sorted(sides.train)
    assert 12 * 0.5 <= budget["spent_seconds"] <= 12 * 1.3, budget
