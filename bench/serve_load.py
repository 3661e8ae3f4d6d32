"""Requests per second and latency of `yingshe serve` under N concurrent clients on 127.0.0.1,
with dynamic batching off (`--max-batch 1`) and on (`--max-batch 32 --max-wait-ms 5`), in one run.

Each configuration gets a fresh server process serving the same model (by default a resnet20
on 32×32 CIFAR-10, trained for a few steps, exported to ONNX); N asyncio clients (httpx, one
connection each) post real test JPEGs to /v1/predict for `--seconds` after a warm-up, and every
non-200 answer counts as an error. Clients and server share the machine's cores.

    python bench/serve_load.py [--run RUN] [--clients 32] [--seconds 10]

The last line is key=value pairs: single_rps batched_rps batching_ratio p99_ms errors
(p99_ms and errors of the batched configuration; errors summed over both).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import tiny_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, port: int, max_batch: int) -> subprocess.Popen:
    import httpx

    argv = [sys.executable, "-m", "yingshe", "serve", str(model), "--port", str(port)]
    argv += ["--max-batch", str(max_batch), "--max-wait-ms", "5"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready")


async def load(url: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=30) as http:
            j = i
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await http.post(
                        url, content=bodies[j % len(bodies)], headers={"content-type": "image/jpeg"}
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok
                j += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, errors


def measure(
    model: Path, bodies: list[bytes], max_batch: int, clients: int, seconds: float
) -> dict[str, float]:
    port = free_port()
    proc = start(model, port, max_batch)
    try:
        url = f"http://127.0.0.1:{port}/v1/predict"
        asyncio.run(load(url, bodies, clients, 1.0))  # warm-up
        latencies, errors = asyncio.run(load(url, bodies, clients, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    ms = np.array(latencies) * 1000
    stats = {
        "rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
    }
    print(
        f"max_batch={max_batch}: {stats['rps']:.0f} req/s, p50 {stats['p50_ms']:.1f} ms, "
        f"p99 {stats['p99_ms']:.1f} ms, {errors} errors",
        flush=True,
    )
    return stats


def jpegs(run: Path, count: int = 64) -> list[bytes]:
    """Real test images of the run, as the JPEG bytes a client would send."""
    from PIL import Image

    import yingshe
    from yingshe.export.parity import split_images

    bodies = []
    for array in split_images(yingshe.load(run, device="cpu"), count):
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, "JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a yingshe run folder (default: train a tiny resnet20)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    import yingshe

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else tiny_run(Path(tmp) / "run")
        model = yingshe.export(run, "onnx", out=Path(tmp) / "model.onnx", dynamic_batch=True).path
        bodies = jpegs(run)
        single = measure(model, bodies, 1, args.clients, args.seconds)
        batched = measure(model, bodies, 32, args.clients, args.seconds)
    ratio = batched["rps"] / single["rps"]
    print(
        f"single_rps={single['rps']:.0f} batched_rps={batched['rps']:.0f} batching_ratio={ratio:.2f} "
        f"p99_ms={batched['p99_ms']:.1f} errors={single['errors'] + batched['errors']}"
    )


if __name__ == "__main__":
    main()
