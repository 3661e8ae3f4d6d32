"""Requests per second and latency of `yingshe serve` under N concurrent clients on 127.0.0.1,
with dynamic batching off (`--max-batch 1`) and on (`--max-batch 32 --max-wait-ms 5`), in one run.

Two models, each configuration in a fresh server process: the run folder itself (PyTorch eager,
what `yingshe serve RUN` runs) and its ONNX export (ONNX Runtime); by default the run is a
resnet20 on 32×32 CIFAR-10 trained for a few steps. N asyncio clients (one keep-alive
connection each, raw HTTP/1.1 so the load generator costs little CPU) post real test JPEGs to
/v1/predict for `--seconds` after a warm-up; every non-200 answer or dropped connection counts as
an error. Clients and server share the machine's cores.

    python bench/serve_load.py [--run RUN] [--clients 32] [--seconds 10]

The last line is key=value pairs: single_rps batched_rps batching_ratio p99_ms errors for the run
(p99_ms of the batched configuration, errors summed over both), then the same with an `onnx_`
prefix for the export.
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


async def client(
    port: int, bodies: list[bytes], first: int, step: int, stop: float, latencies: list[float]
) -> int:
    """Keep-alive HTTP/1.1 requests posting raw JPEG bodies until `stop`; returns the error
    count (non-200 answers, dropped connections, malformed answers: the client then reconnects).
    Written on asyncio streams rather than httpx, whose per-request CPU (about a millisecond)
    would take the cores the server is being measured on."""
    errors, j = 0, first
    while time.perf_counter() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # the server is gone or refuses: an error, and a short pause before retrying
            errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.perf_counter() < stop:
                body = bodies[j % len(bodies)]
                j += step
                t0 = time.perf_counter()
                writer.write(request_head(len(body)) + body)
                status, length = parse_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(length)
                if status == 200:  # only answers count towards requests/s and latency
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            errors += 1  # dropped or malformed: count it and start a fresh connection
        finally:
            writer.close()
    return errors


def request_head(length: int) -> bytes:
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def parse_head(head: bytes) -> tuple[int, int]:
    """(status, content length) of an HTTP/1.1 response head (the service always sends a
    Content-Length; a head without one is malformed here)."""
    lines = head.split(b"\r\n")
    sizes = [int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")]
    if not sizes:
        raise ValueError("no Content-Length in the answer")
    return int(lines[0].split(b" ", 2)[1]), sizes[0]


async def load(port: int, bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    errors = await asyncio.gather(
        *(client(port, bodies, i, clients, stop, latencies) for i in range(clients))
    )
    return latencies, sum(errors)


def measure(
    model: Path, bodies: list[bytes], max_batch: int, clients: int, seconds: float
) -> dict[str, float]:
    port = free_port()
    proc = start(model, port, max_batch)
    try:
        asyncio.run(load(port, bodies, clients, 1.0))  # warm-up
        latencies, errors = asyncio.run(load(port, bodies, clients, seconds))
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
        exported = yingshe.export(run, "onnx", out=Path(tmp) / "model.onnx", dynamic_batch=True).path
        bodies = jpegs(run)
        figures = {}
        for prefix, model in (("", run), ("onnx_", exported)):  # `yingshe serve RUN`, then the export
            print(f"serving {'the run (PyTorch)' if not prefix else 'the ONNX export'}", flush=True)
            single = measure(model, bodies, 1, args.clients, args.seconds)
            batched = measure(model, bodies, 32, args.clients, args.seconds)
            figures |= {
                f"{prefix}single_rps": f"{single['rps']:.0f}",
                f"{prefix}batched_rps": f"{batched['rps']:.0f}",
                f"{prefix}batching_ratio": f"{batched['rps'] / single['rps']:.2f}",
                f"{prefix}p99_ms": f"{batched['p99_ms']:.1f}",
                f"{prefix}errors": single["errors"] + batched["errors"],
            }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
