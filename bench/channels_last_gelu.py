"""GELU on channels-last CPU maps: torch's `nn.GELU` against `models.layers.GELU`, which hands the
map to `F.gelu` as its contiguous NHWC view (oneDNN's kernel) instead of ATen's loop.

Both on the `fast:grey-28` net's four map shapes at batch 500 (forward, and forward + backward
with a channels-last incoming gradient), median of --reps calls each, then whole training steps
of that net (SGD, batch 500, channels-last) with either activation, two models in this one
process alternating --rounds times. The last line:
gelu_fwd_ratio_min gelu_fwd_ratio_max gelu_fwdbwd_ratio_min gelu_fwdbwd_ratio_max step_ratio
(old time / new time; step_ratio is the median of the rounds' ratios).

    .venv/bin/python bench/channels_last_gelu.py [--reps 30] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from yingshe.models import create_model
from yingshe.models.layers import GELU
from yingshe.runtime import reuse_cpu_memory

SHAPES = [(500, 8, 27, 27), (500, 24, 13, 13), (500, 64, 6, 6), (500, 128, 3, 3)]
CL = torch.channels_last


def median_ms(fn, reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def forward_backward(act: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = None
    act(x).backward(grad)


def op_ratios(reps: int) -> tuple[list[float], list[float]]:
    fwd, both = [], []
    for shape in SHAPES:
        x = torch.randn(*shape).contiguous(memory_format=CL).requires_grad_()
        grad = torch.randn(*shape).contiguous(memory_format=CL)
        timings = {}
        for name, act in (("old", nn.GELU()), ("new", GELU())):
            with torch.no_grad():
                forward = median_ms(lambda act=act, x=x: act(x), reps)
            backward = median_ms(lambda act=act, x=x, g=grad: forward_backward(act, x, g), reps)
            timings[name] = (forward, backward)
        (of, ob), (nf, nb) = timings["old"], timings["new"]
        print(f"{shape[1:]!s:>16}  forward {of:.2f} → {nf:.2f} ms   forward+backward {ob:.2f} → {nb:.2f} ms")
        fwd.append(of / nf)
        both.append(ob / nb)
    return fwd, both


def recipe_net(plain: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = create_model("airbench", 10, 1, 28, widths=[24, 64, 128]).to(memory_format=CL)
    if plain:
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, GELU):
                    setattr(module, name, nn.GELU())
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def step_ratio(rounds: int, steps: int = 12) -> float:
    x = torch.randn(500, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (500,))
    nets = {"old": recipe_net(True), "new": recipe_net(False)}
    ratios = []
    for r in range(rounds):
        seconds = {}
        for name, (model, optimizer) in nets.items():
            times = []
            for _ in range(steps):
                started = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - started)
            seconds[name] = statistics.median(times[2:])
        ratios.append(seconds["old"] / seconds["new"])
        print(f"round {r + 1}: step {1000 * seconds['old']:.1f} → {1000 * seconds['new']:.1f} ms")
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    reuse_cpu_memory()  # as `yingshe train` does on a CPU
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    fwd, both = op_ratios(args.reps)
    steps = step_ratio(args.rounds)
    print(
        f"gelu_fwd_ratio_min={min(fwd):.2f} gelu_fwd_ratio_max={max(fwd):.2f} "
        f"gelu_fwdbwd_ratio_min={min(both):.2f} gelu_fwdbwd_ratio_max={max(both):.2f} step_ratio={steps:.3f}"
    )


if __name__ == "__main__":
    main()
