"""A real `yingshe serve` process on 127.0.0.1, serving the session's Fashion-MNIST run exported
to ONNX, for the HTTP, fuzz and browser tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

import yingshe
from yingshe.export.parity import split_images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_onnx(fashion_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("served") / "fashion.onnx"
    return yingshe.export(fashion_run.run_dir, "onnx", out=out, dynamic_batch=True, parity_images=16).path


@pytest.fixture(scope="session")
def real_pngs(fashion_run, tmp_path_factory) -> list[Path]:
    """The run's first 8 test images as PNG files."""
    folder = tmp_path_factory.mktemp("served-pngs")
    images = split_images(yingshe.load(fashion_run.run_dir, device="cpu"), 8)
    paths = []
    for i, array in enumerate(images):
        paths.append(folder / f"item{i}.png")
        Image.fromarray(array[..., 0]).save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def server(served_onnx):
    """Base URL of a live server (max 4 files a batch request, 1 MB bodies, 1 M pixels)."""
    port = free_port()
    argv = [sys.executable, "-m", "yingshe", "serve", str(served_onnx), "--port", str(port)]
    argv += ["--max-files", "4", "--max-file-mb", "1", "--max-pixels", "1000000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded CI box: imports alone took 100+ s here
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"yingshe serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("yingshe serve did not become ready in 300 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
