"""`yingshe serve` as a client meets it: real images through a live server, junk and bombs
refused with 4xx JSON, the service alive afterwards, and a fuzz run from its own OpenAPI schema."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

import yingshe


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_predict_real_images_multipart_and_raw_agree_with_the_run(server, real_pngs, fashion_run):
    expected = yingshe.load(fashion_run.run_dir, device="cpu").predict(real_pngs[:4], top_k=2)
    for path, want in zip(real_pngs[:4], expected, strict=True):
        multipart = httpx.post(f"{server}/v1/predict?top_k=2", files={"file": (path.name, path.read_bytes())})
        raw = httpx.post(
            f"{server}/v1/predict?top_k=2", content=path.read_bytes(), headers={"content-type": "image/png"}
        )
        for response in (multipart, raw):
            assert response.status_code == 200, response.text
            top = response.json()["top"]
            assert [t["class"] for t in top] == [c for c, _ in want.top]
            assert [t["probability"] for t in top] == pytest.approx([p for _, p in want.top], abs=1e-5)


def test_batch_endpoint_model_info_health_and_metrics(server, real_pngs):
    files = [("files", (p.name, p.read_bytes())) for p in real_pngs[:3]] + [("files", ("x.png", b"junk"))]
    response = httpx.post(f"{server}/v1/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["file"] for r in results] == [p.name for p in real_pngs[:3]] + ["x.png"]
    assert all(len(r["top"]) == 3 and r["error"] is None for r in results[:3])
    assert results[3]["top"] == [] and "not an image" in results[3]["error"]
    info = httpx.get(f"{server}/v1/model").json()
    assert (
        info["classes"][0] == "T-shirt/top"
        and info["image_size"] == info["resize"] == 28
        and len(info["sha256"]) == 64
    )
    assert info["model"] == "fashion.onnx" and "/" not in info["model"] and info["backend"] == "onnxruntime"
    assert info["task"] == "multiclass" and info["thresholds"] is None
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").status_code == 200
    text = httpx.get(f"{server}/metrics").text
    assert 'yingshe_requests_total{route="/v1/predict/batch",status="200"}' in text
    assert "yingshe_batch_size_bucket" in text and "yingshe_request_seconds_count" in text
    page = httpx.get(f"{server}/").text
    assert "<script src" not in page and "http://" not in page and "https://" not in page


def test_interactive_docs_load_nothing_from_the_internet(server):
    import re

    assets = []
    for page in ("/docs", "/redoc"):
        assets += re.findall(r'(?:src|href)="([^"]+)"', httpx.get(f"{server}{page}").text)
    assert len(assets) >= 4 and all(a.startswith("/docs-assets/") for a in assets), assets
    for asset in assets:
        response = httpx.get(f"{server}{asset}")
        assert response.status_code == 200 and len(response.content) > 500, asset
    assert httpx.get(f"{server}/openapi.json").json()["paths"]["/v1/predict"]


def test_concurrent_requests_are_batched_together(server, real_pngs):
    body = real_pngs[0].read_bytes()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(f"{server}/v1/predict", content=body, headers={"content-type": "image/png"})
                for _ in range(24)
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert len({json.dumps(r.json()["top"]) for r in responses}) == 1
    text = httpx.get(f"{server}/metrics").text
    sizes = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("yingshe_batch_size_bucket")
    }
    batches = int(
        next(line for line in text.splitlines() if line.startswith("yingshe_batch_size_count")).split()[1]
    )
    assert sizes["1"] < batches, "some forward pass held more than one image"


PNG = {"content-type": "image/png"}
BOMB = png_bytes(Image.new("L", (5000, 5000)))  # 25 M pixels in ~25 kB: decoding it would cost 25 MB


@pytest.mark.parametrize(
    ("name", "kwargs", "status", "words"),
    [
        ("empty raw body", {"content": b"", "headers": PNG}, 400, "empty"),
        (
            "text as image",
            {"content": b"hello", "headers": {"content-type": "image/jpeg"}},
            415,
            "not an image",
        ),
        (
            "wrong content type",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "content type",
        ),
        ("no file field", {"files": {"other": ("a.png", b"x")}}, 400, "field 'file'"),
        ("decompression bomb", {"content": BOMB, "headers": PNG}, 413, "pixels"),
        (
            "over the byte limit",
            {"content": b"\xff" * 1_200_000, "headers": PNG},
            413,
            "MB",
        ),
        (
            "bad top_k",
            {"params": {"top_k": "0"}, "content": b"x", "headers": PNG},
            422,
            "top_k",
        ),
        ("top_k not a number", {"params": {"top_k": "many"}, "content": b"x"}, 422, "top_k"),
    ],
)
def test_bad_input_gets_a_4xx_json_reason(server, name, kwargs, status, words):
    response = httpx.post(f"{server}/v1/predict", **kwargs)
    assert response.status_code == status, (name, response.text)
    body = response.json()
    assert words in body["error"] and "/tmp" not in response.text and "/work" not in response.text


def test_truncated_image_and_too_many_files(server, real_pngs):
    whole = real_pngs[0].read_bytes()
    truncated = httpx.post(f"{server}/v1/predict", files={"file": ("t.png", whole[: len(whole) // 2])})
    assert truncated.status_code == 422 and "could not be decoded" in truncated.json()["error"]
    files = [("files", (p.name, p.read_bytes())) for p in real_pngs[:5]]
    many = httpx.post(f"{server}/v1/predict/batch", files=files)
    assert many.status_code in (400, 413) and "files" in many.json()["error"]
    assert httpx.get(f"{server}/readyz").status_code == 200


def test_fuzz_from_the_openapi_schema_never_5xx(server):
    """Zero 5xx, and every answer has a status and a body shape the schema documents."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import response_schema_conformance as conforms
    from schemathesis.specs.openapi.checks import status_code_conformance

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    failures = []
    for operation in schema.get_all_operations():
        strategy = operation.ok().as_strategy()

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def check(case):
            response = case.call(base_url=server, timeout=10)
            if response.status_code >= 500:
                failures.append((case.path, response.status_code, response.text[:200]))
                return
            try:
                case.validate_response(response, checks=[status_code_conformance, conforms])
            except Exception as err:  # schemathesis raises a group of failed checks
                failures.append((case.path, response.status_code, str(err)[:300]))

        check()
    assert failures == []
    assert (
        httpx.get(f"{server}/healthz").status_code == 200 and httpx.get(f"{server}/readyz").status_code == 200
    )


def test_the_schema_documents_the_answers_and_refusals(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    one = spec["paths"]["/v1/predict"]["post"]["responses"]
    batch = spec["paths"]["/v1/predict/batch"]["post"]["responses"]

    def named(answer: dict) -> str:
        return answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    assert named(one["200"]) == "PredictAnswer" and named(batch["200"]) == "BatchAnswer"
    assert set(spec["components"]["schemas"]["TopClass"]["properties"]) == {"class", "probability"}
    assert {named(one[status]) for status in ("400", "413", "415", "422")} == {"Refusal"}
    refused = httpx.post(f"{server}/v1/predict", content=b"x", headers={"content-type": "text/plain"})
    assert refused.status_code == 415 and set(refused.json()) == {"error", "fix"}


def test_real_random_noise_image_is_still_an_answer(server):
    noise = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)
    response = httpx.post(
        f"{server}/v1/predict", files={"file": ("n.png", png_bytes(Image.fromarray(noise)))}
    )
    assert response.status_code == 200 and len(response.json()["top"]) == 3
