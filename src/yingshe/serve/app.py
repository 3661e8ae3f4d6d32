"""The HTTP service: a FastAPI app around one loaded model and its dynamic batcher.

Routes: POST /v1/predict (multipart field `file`, or a raw image body), POST /v1/predict/batch
(multipart fields `files`), GET /v1/model, /healthz, /readyz, /metrics, the OpenAPI schema at
/openapi.json (and /docs), and a self-contained page at /. Every refusal is JSON
`{"error": ..., "fix": ...}` with a 4xx status; the body is read with a byte limit before parsing.
"""

from __future__ import annotations

import gc
import json
import os
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from yingshe._version import __version__
from yingshe.export.metadata import MULTI_LABEL, SINGLE_LABEL
from yingshe.inference import ImageClassifier
from yingshe.serve.batching import DynamicBatcher
from yingshe.serve.config import ServeConfig
from yingshe.serve.docs import offline_docs
from yingshe.serve.metrics import CountRequests, Metrics
from yingshe.serve.schemas import BatchAnswer, PredictAnswer, refusals
from yingshe.serve.validation import (
    RAW_TYPES,
    InputError,
    check_header,
    check_top_k,
    decode_checked,
    limit_png_text,
    too_large,
)

CONFIG_ENV = "YINGSHE_SERVE_CONFIG"  # how `--workers N` hands the settings to each process

IMAGE_BODY = {"type": "string", "format": "binary"}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": IMAGE_BODY}, "required": ["file"]}
            },
            "image/jpeg": {"schema": IMAGE_BODY},
            "image/png": {"schema": IMAGE_BODY},
            "application/octet-stream": {"schema": IMAGE_BODY},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": IMAGE_BODY}},
                    "required": ["files"],
                }
            }
        },
    }
}
TOP_K = Query(None, description="classes to return (default 3)")


def load_model(cfg: ServeConfig) -> ImageClassifier:
    from yingshe.api import load

    return load(cfg.model, device=cfg.device, serving=True)


def model_checksum(path: str | Path) -> str:
    """sha256 of the model file (for a run folder: its checkpoint), so clients can tell versions apart."""
    from yingshe.runs import checkpoint_in, file_sha256

    path = Path(path)
    path = checkpoint_in(path) if path.is_dir() else path
    return file_sha256(path)


def model_info(classifier: ImageClassifier, cfg: ServeConfig, checksum: str) -> dict[str, Any]:
    backend = "onnxruntime" if Path(cfg.model).suffix.lower() == ".onnx" else "pytorch"
    versions = {"yingshe": __version__, "torch": torch.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return {
        "model": classifier.source,  # a file name, never the server's path
        "backend": backend,
        "classes": classifier.classes,
        "image_size": classifier.image_size,
        "resize": classifier.resize or classifier.image_size,  # short side before the centre crop
        "channels": classifier.channels,
        **task_info(classifier),
        "tta_flip": tta_setting(classifier, "tta_flip", False),
        "tta_translate": tta_setting(classifier, "tta_translate", 0),
        "sha256": checksum,
        "versions": versions,
        "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms},
        "limits": {"max_file_mb": cfg.max_file_mb, "max_pixels": cfg.max_pixels, "max_files": cfg.max_files},
    }


def task_info(classifier: ImageClassifier) -> dict[str, Any]:
    """The task, and for a multi-label model the per-class thresholds its `labels` answers use."""
    if classifier.multilabel:
        return {"task": MULTI_LABEL, "thresholds": classifier.label_thresholds()}
    return {"task": SINGLE_LABEL, "thresholds": None}


def tta_setting(classifier: ImageClassifier, key: str, default: bool | int) -> bool | int:
    """The run's TTA setting `key` (tta_flip, tta_translate) as answers apply it: the loaded
    run's own, or an export's metadata (the views are inside its graph)."""
    meta = getattr(classifier, "meta", {})
    return type(default)(getattr(classifier, key, meta.get(key, default)))


def page() -> str:
    return resources.files("yingshe.serve").joinpath("static/index.html").read_text(encoding="utf-8")


async def read_body(request: Request, cfg: ServeConfig) -> bytes:
    """The request body, refused with 413 as soon as it passes the byte limit (a declared
    Content-Length over it is refused before reading anything)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
        raise too_large(int(declared), cfg)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cfg.max_bytes:
            raise too_large(size, cfg)
        chunks.append(chunk)
    return b"".join(chunks)


async def uploads(request: Request, cfg: ServeConfig, field: str, many: bool) -> list[tuple[str, bytes]]:
    """(client file name, bytes) of each uploaded image: from multipart field `field`, or the raw
    body when the content type is an image type."""
    body = await read_body(request, cfg)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        request._body = body  # starlette parses the form from the cached body, already size-checked
        try:
            form = await request.form(max_files=cfg.max_files + 1, max_fields=cfg.max_files + 16)
        except Exception as err:  # malformed multipart, too many parts
            raise InputError(
                400,
                f"the multipart body could not be parsed: {str(err)[:200]}",
                f"send multipart/form-data with the image(s) in field {field!r}",
            ) from err
        items = form.getlist(field)
        files = [item for item in items if hasattr(item, "read")]
        if not files:
            raise InputError(
                400,
                f"no file in multipart field {field!r}",
                f"send the image as multipart field {field!r}, e.g. curl -F {field}=@cat.jpg",
            )
        if len(files) > (cfg.max_files if many else 1):
            raise InputError(
                413,
                f"{len(files)} files in one request; at most {cfg.max_files if many else 1}",
                "split them into several requests" if many else "use /v1/predict/batch",
            )
        return [(item.filename or f"file{i}", await item.read()) for i, item in enumerate(files)]
    if many or not kind.startswith(RAW_TYPES):
        wanted = "multipart/form-data" if many else "multipart/form-data or an image/* content type"
        raise InputError(415, f"content type {kind or 'none'!r} is not accepted here", f"send {wanted}")
    return [("body", body)]


INLINE_DECODE_BYTES = 64 * 1024  # uploads at most this large and
INLINE_DECODE_PIXELS = 1 << 16  # at most this many pixels (256×256) decode on the event loop


async def decode_off_loop(data: bytes, classifier: ImageClassifier, cfg: ServeConfig) -> np.ndarray:
    """`decode`, on a worker thread unless the image is small in bytes and in pixels: a 32×32
    image decodes in a fraction of a millisecond, less than handing it to a thread costs, while a
    large one (a 35 KB PNG can hold 36 MP of one colour; 1 MP takes ~30 ms) would stall every
    other request. The header check stays on the loop: `limit_png_text` bounds what it reads."""
    width, height = check_header(data, cfg)  # the header only: cheap, and refusals come first
    if decodes_inline(len(data), width * height):
        return decode_checked(data, classifier)
    return await run_in_threadpool(decode_checked, data, classifier)


def decodes_inline(size: int, pixels: int) -> bool:
    return size <= INLINE_DECODE_BYTES and pixels <= INLINE_DECODE_PIXELS


def create_app(cfg: ServeConfig, classifier: ImageClassifier | None = None) -> FastAPI:
    """The app for `cfg` (its model is loaded now unless `classifier` is given)."""
    limit_png_text()
    classifier = classifier or load_model(cfg)
    checksum = model_checksum(cfg.model)
    metrics = Metrics()

    def infer(arrays: np.ndarray) -> np.ndarray:
        return classifier.probabilities(arrays).numpy()

    batcher = DynamicBatcher(infer, cfg.max_batch, cfg.max_wait_ms, metrics.batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        gc.collect()  # what is garbage now is not frozen with the rest
        gc.freeze()  # the model and libraries stay: full collections then skip them (no 200 ms pauses)
        yield
        gc.unfreeze()  # an app run inside another process (tests, notebooks) gives it back
        await batcher.stop()

    app = FastAPI(
        title="yingshe",
        version=__version__,
        description=f"Image classification with {classifier.source}: {len(classifier.classes)} classes.",
        lifespan=lifespan,
        docs_url=None,  # both served by `offline_docs` from local files, not FastAPI's CDN pages
        redoc_url=None,
    )
    offline_docs(app)
    app.state.classifier, app.state.batcher, app.state.metrics = classifier, batcher, metrics

    app.add_middleware(CountRequests, metrics=metrics)

    @app.exception_handler(InputError)
    async def refused(request: Request, err: InputError):
        return JSONResponse({"error": err.problem, "fix": err.fix}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": problems[:500], "fix": "see /openapi.json"}, status_code=422)

    async def classify(named: list[tuple[str, bytes]], top_k: int) -> list[dict[str, Any]]:
        decoded: list[tuple[str, np.ndarray | None, str | None]] = []
        for name, data in named:
            try:
                decoded.append((name, await decode_off_loop(data, classifier, cfg), None))
            except InputError as err:
                if len(named) == 1:
                    raise
                decoded.append((name, None, err.problem))
        good = [array for _, array, _ in decoded if array is not None]
        probs = await batcher.submit(np.stack(good)) if good else np.zeros((0, len(classifier.classes)))
        tops = iter(classifier.top(torch.from_numpy(probs), top_k) if good else [])
        multilabel = getattr(classifier, "multilabel", False)  # every label above its threshold too
        chosen = iter(classifier.above(torch.from_numpy(probs)) if good and multilabel else [])
        out = []
        for name, array, error in decoded:
            top = next(tops) if array is not None else []
            item = {"file": name, "top": [{"class": c, "probability": p} for c, p in top], "error": error}
            if multilabel:
                item["labels"] = next(chosen) if array is not None else []
            out.append(item)
        return out

    @app.post(
        "/v1/predict",
        openapi_extra=PREDICT_BODY,
        summary="top-k classes of one image",
        responses={200: {"model": PredictAnswer}, **refusals(400, 413, 415, 422)},
    )
    async def predict(request: Request, top_k: int | None = TOP_K) -> JSONResponse:
        k = cfg_top_k(top_k)
        named = await uploads(request, cfg, "file", many=False)
        (result,) = await classify(named, k)
        labels = {"labels": result["labels"]} if "labels" in result else {}  # multi-label models
        return JSONResponse({"top": result["top"], **labels, "model": classifier.source})

    @app.post(
        "/v1/predict/batch",
        openapi_extra=BATCH_BODY,
        summary="top-k classes of several images",
        responses={200: {"model": BatchAnswer}, **refusals(400, 413, 415, 422)},
    )
    async def predict_batch(request: Request, top_k: int | None = TOP_K) -> JSONResponse:
        k = cfg_top_k(top_k)
        named = await uploads(request, cfg, "files", many=True)
        return JSONResponse({"results": await classify(named, k), "model": classifier.source})

    def cfg_top_k(top_k: int | None) -> int:
        from yingshe.config import DEFAULT_TOP_K

        k = DEFAULT_TOP_K if top_k is None else top_k
        check_top_k(k, cfg)
        return k

    @app.get("/v1/model", summary="what is served: classes, input size, versions, checksum")
    async def model() -> dict[str, Any]:
        return model_info(classifier, cfg, checksum)

    @app.get("/healthz", summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and the batcher runs")
    async def readyz():
        if batcher.running:
            return {"status": "ready"}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page())

    return app


def app_from_env() -> FastAPI:
    """The app factory each `--workers N` process calls (settings come through the environment)."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))
