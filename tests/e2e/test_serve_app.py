"""The service's app in this process (FastAPI's TestClient): what /metrics counts for refused and
unknown requests, how ONNX Runtime is set up for serving, where uploads are decoded, and the
offline docs' fallback."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import yingshe
from yingshe.serve import ServeConfig
from yingshe.serve.app import create_app, decodes_inline
from yingshe.serve.validation import InputError, check_header


@pytest.fixture(scope="module")
def client(served_onnx):
    cfg = ServeConfig(model=str(served_onnx), max_wait_ms=1, max_pixels=50_000_000)
    with TestClient(create_app(cfg)) as test_client:
        yield test_client


def counted(client: TestClient, route: str, status: int) -> int:
    line = f'yingshe_requests_total{{route="{route}",status="{status}"}} '
    found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
    return int(found[0].split()[-1]) if found else 0


def test_metrics_count_refusals_and_unknown_routes_by_their_status(client):
    before = counted(client, "/v1/predict", 415), counted(client, "unmatched", 404)
    refused = client.post("/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
    missing = client.get("/no-such-route")
    assert refused.status_code == 415 and missing.status_code == 404
    assert (counted(client, "/v1/predict", 415), counted(client, "unmatched", 404)) == (
        before[0] + 1,
        before[1] + 1,
    )


def test_a_served_onnx_model_lets_idle_threads_sleep(served_onnx):
    def spinning(classifier) -> str:
        options = classifier.session.get_session_options()
        return options.get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning(yingshe.load(served_onnx, serving=True)) == "0"
    with pytest.raises(RuntimeError):  # never set: ONNX Runtime's default (spinning) applies
        spinning(yingshe.load(served_onnx))


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, "PNG")
    return buffer.getvalue()


def test_only_uploads_small_in_bytes_and_pixels_decode_on_the_event_loop():
    cfg = ServeConfig(model="unused.onnx", max_pixels=50_000_000)
    small, flat_huge = png((28, 28)), png((6000, 6000))  # one colour: 6000×6000 compresses to KBs
    flat_mp = png((1024, 1024))  # ~1 MP in a few KB: ~30 ms to decode, too long for the loop
    assert len(flat_huge) < 64 * 1024 and len(flat_mp) < 8 * 1024
    named = (("small", small), ("huge", flat_huge), ("mp", flat_mp))
    sizes = {name: check_header(data, cfg) for name, data in named}
    assert decodes_inline(len(small), int(np.prod(sizes["small"])))
    assert not decodes_inline(len(flat_huge), int(np.prod(sizes["huge"])))
    assert not decodes_inline(len(flat_mp), int(np.prod(sizes["mp"])))
    with pytest.raises(InputError, match="not an image"):
        check_header(b"certainly not an image", cfg)


def png_with_text(chunks: int, text_bytes: int) -> bytes:
    """A 32×32 PNG carrying `chunks` zTXt chunks of `text_bytes` each (zeros: tiny compressed)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for i in range(chunks):
        info.add_text(f"k{i}", "0" * text_bytes, zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_png_text_metadata_cannot_make_the_server_inflate_megabytes(client):
    bomb = png_with_text(60, 1_000_000)  # ~60 KB on the wire, 60 MB of text once inflated
    assert len(bomb) < 200_000
    refused = client.post("/v1/predict", content=bomb, headers={"content-type": "image/png"})
    assert refused.status_code == 422 and "text metadata" in refused.json()["error"]
    assert "strip" in refused.json()["fix"]
    modest = png_with_text(2, 1_000)  # ordinary metadata still passes
    answer = client.post("/v1/predict", content=modest, headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text


def test_a_huge_flat_png_is_still_answered(client):
    answer = client.post("/v1/predict", content=png((6000, 6000)), headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["top"]) == 3


def test_docs_fall_back_to_the_cdn_with_a_warning_when_the_files_are_missing(monkeypatch, caplog):
    import importlib.util

    from fastapi import FastAPI

    from yingshe.serve.docs import offline_docs

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fastapi_offline" else real_find_spec(name, *a),
    )
    app = FastAPI(docs_url=None, redoc_url=None)
    with caplog.at_level(logging.WARNING, logger="yingshe.serve.docs"):
        offline_docs(app)
    assert "CDN" in caplog.text
    page = TestClient(app).get("/docs").text
    assert "swagger-ui-bundle.js" in page and "https://" in page
