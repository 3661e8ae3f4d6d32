"""Settings of `yingshe serve`: where it listens, how it batches, what input it accepts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    model: str = ""  # run folder, checkpoint or exported .onnx
    host: str = "127.0.0.1"  # loopback by default: exposing a service is a decision, not a default
    port: int = 8000
    max_batch: int = 32  # images gathered into one forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    workers: int = 1  # uvicorn processes, each with its own model and batcher
    max_file_mb: float = 10.0  # largest request body; beyond it 413 before decoding anything
    max_pixels: int = 40_000_000  # largest width × height, read from the header before decoding
    max_files: int = 64  # files in one /v1/predict/batch request
    max_top_k: int = 100
    device: str = "cpu"  # for a run or checkpoint; an .onnx always runs on ONNX Runtime's CPU

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
