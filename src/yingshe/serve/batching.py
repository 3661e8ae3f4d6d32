"""Dynamic batching: concurrent requests gathered into one forward pass, run off the event loop.

The first waiting request opens a batch; more join until `max_batch` images are in it or
`max_wait_ms` has passed. The forward pass runs on one dedicated thread, so the event loop keeps
accepting, decoding and answering while the model works; requests that arrive meanwhile form the
next batch. `max_batch=1` turns batching off (one request per forward pass), the baseline of
bench/serve_load.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, C) → probabilities (N, K)


@dataclass
class _Job:
    arrays: np.ndarray  # (n, H, W, C)
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    def __init__(
        self,
        infer: Infer,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.infer = infer
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="yingshe-infer")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, arrays: np.ndarray) -> np.ndarray:
        """Probabilities for `arrays` (n, H, W, C), computed in whichever batch they land in."""
        if not self.running or self.queue is None:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(arrays, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.queue is not None
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].arrays)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = self.queue.get_nowait()  # already waiting: no reason to sleep
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self.queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                jobs.append(job)
                size += len(job.arrays)
            await self._run(loop, jobs)

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        try:
            arrays = np.concatenate([job.arrays for job in jobs])
            probs = await loop.run_in_executor(self.executor, self.infer, arrays)
            if self.on_batch is not None:
                self.on_batch(len(arrays))
        except Exception as err:  # handed to every waiting request; the loop itself goes on
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        start = 0
        for job in jobs:
            end = start + len(job.arrays)
            if not job.future.done():  # a client that went away cancelled its future
                job.future.set_result(probs[start:end])
            start = end
