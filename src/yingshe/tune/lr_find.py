"""The learning-rate range test (Smith 2017, fastai's `lr_find`): a short run whose learning rate
rises exponentially from `start` to `end`, recording the training loss of every step.

The loss falls once the rate is large enough to learn and blows up once it is too large; the
suggestion is the rate of the smoothed loss's minimum divided by 10 (fastai's `minimum` rule),
a rate still well inside the stable region. It is not a run: no run folder, no checkpoint, only a
plot. The model, data and augmentation are built as `yingshe.train` builds them, so the test
sees the batches the real run will see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from yingshe.config import RunConfig
from yingshe.data.augment import Normalize
from yingshe.data.crop import resolve_crop_pct
from yingshe.data.dataset import build_dataset
from yingshe.errors import YingsheError
from yingshe.runtime import resolve_device, seed_everything
from yingshe.train.balance import build_loss
from yingshe.train.optim import build_optimizer

SMOOTHING = 0.98  # exponential moving average of the loss (debiased), as fastai
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


@dataclass
class LRFind:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    plot: Path | None


def lr_find(
    config: RunConfig,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    plot: str | Path | None = None,
) -> LRFind:
    """Run the range test on `config`'s data and model; draw loss against LR into `plot`."""
    if not 0 < start < end:
        raise YingsheError(f"the range needs 0 < start < end, got {start} and {end}")
    if steps < 10:
        raise YingsheError(f"the range test needs at least 10 steps, got {steps}")
    cfg = config
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    resolve_crop_pct(cfg)  # as api.train: the data as the run would read it
    data = build_dataset(cfg.data, cfg.train.seed)
    from yingshe.api import build_model, training_batches, uses_channels_last  # api imports tune lazily

    device = resolve_device(cfg.train.device)
    channels_last = uses_channels_last(cfg, device)
    model = build_model(cfg, data, device, channels_last)
    # the batches (balance sampler, data.stream) and loss (train.balance) the real run uses
    batches = training_batches(cfg, data, device, Normalize(data.mean, data.std), channels_last)
    loss_fn = build_loss(
        cfg.train.balance,
        data.train.labels,
        data.num_classes,
        cfg.optim.label_smoothing,
        getattr(cfg.train, "multilabel_loss", "bce"),
    )
    if hasattr(model, "init_from_data"):
        from yingshe.train.trainer import init_from_data

        init_from_data(model, batches)
    optimizer = build_optimizer(model, cfg.optim)
    lrs, losses = sweep(model, optimizer, batches, start, end, steps, loss_fn)
    suggestion = suggest(lrs, losses)
    path = Path(plot) if plot else None
    if path is not None:
        draw(lrs, losses, suggestion, path)
    return LRFind(lrs, losses, suggestion, path)


def sweep(model, optimizer, batches, start: float, end: float, steps: int, loss_fn):
    """Steps at exponentially rising rates (epochs repeat if the data is short); the smoothed loss
    after each, until `steps` or divergence."""
    model.train()
    ratio = (end / start) ** (1 / (steps - 1))
    lrs, losses, average, best, step, epoch = [], [], 0.0, math.inf, 0, 0
    while step < steps:
        epoch += 1
        batches.set_epoch(epoch)
        for inputs, targets, _ in batches:
            lr = start * ratio**step
            for group in optimizer.param_groups:  # each group at its own multiple (bias_lr_scale)
                # Muon's filters keep optim.muon_lr: the sweep is over optim.lr, the SGD part's rate
                group["lr"] = group["peak_lr"] if group.get("muon") else lr * group.get("lr_scale", 1.0)
            loss = loss_fn(model(inputs).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            step += 1
            if not math.isfinite(value):
                return lrs, losses
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING**step)
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > DIVERGED * best or step >= steps:
                return lrs, losses
    return lrs, losses


def suggest(lrs: list[float], losses: list[float]) -> float:
    if len(losses) < 2:
        raise YingsheError(
            "the range test diverged at once: the loss was not finite from the first steps",
            "lower the start of the range (--start-lr) or check the data",
        )
    # the first tenth of the sweep is skipped: the debiased average of a few noisy steps can dip
    # lower than anything after it, before the rate is large enough to matter (fastai skips too)
    lowest = min(range(len(losses) // 10, len(losses)), key=losses.__getitem__)
    return float(f"{lrs[lowest] / 10:.2g}")


def draw(lrs: list[float], losses: list[float], suggestion: float, path: Path) -> None:
    """A Figure of its own (no pyplot): drawing never switches the caller's backend (Jupyter)."""
    from yingshe.evaluate.plots import new_figure, save

    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested optim.lr={suggestion:g}")
    at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / suggestion)))
    ax.plot([lrs[at]], [losses[at]], "o", color="tab:red")
    low, high = min(losses), losses[0]
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), max(high, losses[at]) + 0.5 * (high - low + 1e-9))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.legend()
    save(figure, path)
