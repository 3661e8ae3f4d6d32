"""CPU levers for issue 16, each against its baseline in the same process:

  (1) training: one SGD step of the airbench net (batch 512, 3×32×32, channels_last) eager
      against `torch.compile` (inductor), after its compile, for --widths;
  (2) inference: resnet20 eager against conv+BN folded (`torch.fx.experimental.optimization.fuse`)
      + channels_last, at batch 1 and 32, one thread (what a serving thread gets).

    python bench/cpu_levers.py [--widths 64,256,256] [--steps 3]

The last line is key=value pairs: eager_train_ips compiled_train_ips compile_ratio compile_s
infer_b1_ms fused_b1_ms infer_b32_ms fused_b32_ms fuse_b32_ratio.
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
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))

    torch.set_num_threads(2)
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
    print(
        f"eager_train_ips={eager:.0f} compiled_train_ips={compiled:.0f} compile_ratio={compiled / eager:.2f} "
        f"compile_s={compile_s:.0f} infer_b1_ms={times[1, 'eager']:.2f} fused_b1_ms={times[1, 'fused']:.2f} "
        f"infer_b32_ms={times[32, 'eager']:.2f} fused_b32_ms={times[32, 'fused']:.2f} "
        f"fuse_b32_ratio={times[32, 'eager'] / times[32, 'fused']:.2f}"
    )


if __name__ == "__main__":
    main()
