"""CPU levers for issue 16, each against its baseline in the same process:

  (0) training layout: one SGD step of each built-in conv net (and torchvision's MobileNetV2, for
      depthwise convolutions) with model and batch channels-last against contiguous NCHW, rounds
      interleaved; what made channels-last the CPU default (`api.uses_channels_last`);
  (1) training: one SGD step of the airbench net (batch 512, 3×32×32, channels_last) eager
      against `torch.compile` (inductor), after its compile, for --widths;
  (2) inference: resnet20 eager against conv+BN folded (`torch.fx.experimental.optimization.fuse`)
      + channels_last, at batch 1 and 32, one thread (what a serving thread gets).

    python bench/cpu_levers.py [--widths 64,256,256] [--steps 3] [--skip-layout]

The last line is key=value pairs: cl_<model>_ratio for each net of (0), eager_train_ips
compiled_train_ips compile_ratio compile_s infer_b1_ms fused_b1_ms infer_b32_ms fused_b32_ms fuse_b32_ratio.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.fx.experimental.optimization as fx_optimization

from yingshe.models import create_model
from yingshe.models.airbench import AirbenchNet


def train_rate(model: torch.nn.Module, steps: int, batch: int = 512) -> tuple[float, float]:
    """(images/s over `steps` steps after two warm-up steps, seconds of the first step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started), first


LAYOUT_NETS = (  # name, side, batch, channels, kwargs, steps per round
    ("airbench", 32, 512, 3, {"widths": [32, 64, 128]}, 4),
    ("seed-cnn", 28, 256, 1, {}, 4),
    ("resnet20", 32, 256, 3, {}, 3),
    ("se-resnet20", 32, 256, 3, {}, 3),
    ("resnet18", 64, 64, 3, {}, 2),
    ("torchvision:mobilenet_v2", 64, 64, 3, {}, 2),
    ("vit-tiny", 32, 256, 3, {}, 2),
)


def layout_step(name: str, side: int, batch: int, chans: int, kwargs: dict, channels_last: bool):
    """A warmed-up SGD step of `name` on a fixed batch, in one memory layout."""
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name, 10, chans, side, **kwargs).to(memory_format=memory)
    x = torch.randn(batch, chans, side, side).contiguous(memory_format=memory)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step()
    return step


def layout_ratios(rounds: int = 3) -> dict[str, float]:
    """channels-last over NCHW training speed per net, rounds interleaved so drift hits both."""
    ratios = {}
    for name, side, batch, chans, kwargs, steps in LAYOUT_NETS:
        seconds = {False: 0.0, True: 0.0}
        runs = {cl: layout_step(name, side, batch, chans, kwargs, cl) for cl in (False, True)}
        for _ in range(rounds):
            for cl, step in runs.items():
                started = time.perf_counter()
                for _ in range(steps):
                    step()
                seconds[cl] += time.perf_counter() - started
        images = rounds * steps * batch
        ratios[name] = seconds[False] / seconds[True]
        print(
            f"(0) {name} {side} px, batch {batch}: NCHW {images / seconds[False]:.0f} img/s, "
            f"channels-last {images / seconds[True]:.0f} img/s ({ratios[name]:.2f}x)",
            flush=True,
        )
    return ratios


def infer_ms(model: torch.nn.Module, batch: int, channels_last: bool) -> float:
    """Milliseconds per image, best of 3 rounds."""
    x = torch.randn(batch, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rounds = max(3, 200 // batch)
    best = float("inf")
    with torch.inference_mode():
        model(x)
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(rounds):
                model(x)
            best = min(best, (time.perf_counter() - started) / rounds / batch * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="64,256,256")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-layout", action="store_true", help="leave out (0)")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))

    torch.set_num_threads(2)
    layout = {} if args.skip_layout else layout_ratios()
    torch.manual_seed(0)
    net = AirbenchNet(10, 3, 32, widths=widths).to(memory_format=torch.channels_last)
    eager, _ = train_rate(net, args.steps)
    compiled, compile_s = train_rate(torch.compile(copy.deepcopy(net)), args.steps)
    print(
        f"(1) airbench {widths} train step, batch 512: eager {eager:.0f} img/s, compiled {compiled:.0f} "
        f"img/s after a {compile_s:.0f} s first step"
    )

    torch.set_num_threads(1)
    model = create_model("resnet20", 10, 3, 32).eval()
    fused = fx_optimization.fuse(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    times = {
        (b, kind): infer_ms(m, b, kind == "fused")
        for b in (1, 32)
        for kind, m in (("eager", model), ("fused", fused))
    }
    for b in (1, 32):
        print(
            f"(2) resnet20 inference, batch {b}: eager {times[b, 'eager']:.2f} ms/img, "
            f"fused + channels_last {times[b, 'fused']:.2f} ms/img"
        )
    names = {name: name.split(":")[-1].replace("-", "") for name, *_ in LAYOUT_NETS}
    print(
        "".join(f"cl_{names[name]}_ratio={ratio:.2f} " for name, ratio in layout.items())
        + f"eager_train_ips={eager:.0f} compiled_train_ips={compiled:.0f} "
        f"compile_ratio={compiled / eager:.2f} "
        f"compile_s={compile_s:.0f} infer_b1_ms={times[1, 'eager']:.2f} fused_b1_ms={times[1, 'fused']:.2f} "
        f"infer_b32_ms={times[32, 'eager']:.2f} fused_b32_ms={times[32, 'fused']:.2f} "
        f"fuse_b32_ratio={times[32, 'eager'] / times[32, 'fused']:.2f}"
    )


if __name__ == "__main__":
    main()
