"""Prometheus text exposition for `GET /metrics`, hand-written (format 0.0.4).

Three families are all the service needs, so a dependency on prometheus_client would buy little:
request counts by route and status, a request latency histogram, and a histogram of the batch
sizes the dynamic batcher ran. Updated from the event loop and the inference thread, hence a lock.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}'
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.total}"]


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batches = Histogram(BATCH_BUCKETS)
        self.images = 0

    def request(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int) -> None:
        with self.lock:
            self.batches.observe(size)
            self.images += size

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP yingshe_requests_total HTTP requests by route and status code.",
                "# TYPE yingshe_requests_total counter",
            ]
            for (route, status), count in sorted(self.requests.items()):
                lines.append(f'yingshe_requests_total{{route="{route}",status="{status}"}} {count}')
            lines += [
                "# HELP yingshe_request_seconds Request latency in seconds.",
                "# TYPE yingshe_request_seconds histogram",
            ]
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines("yingshe_request_seconds", f'route="{route}"')
            lines += [
                "# HELP yingshe_batch_size Images per forward pass of the dynamic batcher.",
                "# TYPE yingshe_batch_size histogram",
                *self.batches.lines("yingshe_batch_size"),
                "# HELP yingshe_images_total Images classified.",
                "# TYPE yingshe_images_total counter",
                f"yingshe_images_total {self.images}",
            ]
        return "\n".join(lines) + "\n"


class CountRequests:
    """Pure ASGI middleware feeding /metrics: requests by route and status, and their latency.
    (Starlette's `@app.middleware("http")` wraps every request in a task and a stream, which costs
    more than the rest of a small prediction.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request(name, status, time.perf_counter() - start)
