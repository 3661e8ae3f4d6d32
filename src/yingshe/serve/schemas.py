"""The shapes of the service's JSON answers, for the OpenAPI schema only.

The handlers build plain dicts and return them as `JSONResponse` (no per-request validation on
the hot path); these models are what `/openapi.json`, `/docs` and generated clients see. The fuzz
test checks every answer against them, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TopClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class", description="class name")
    probability: float = Field(ge=0, le=1, description="softmax probability (sigmoid score if multi-label)")


class PredictAnswer(BaseModel):
    top: list[TopClass] = Field(description="the top-k classes, most probable first")
    labels: list[str] | None = Field(None, description="multi-label models: every label above its threshold")
    model: str = Field(description="the served model's file name")


class BatchItem(BaseModel):
    file: str = Field(description="the uploaded file's name")
    top: list[TopClass] = Field(description="empty when this file could not be read")
    error: str | None = Field(description="why this file could not be read, or null")
    labels: list[str] | None = None


class BatchAnswer(BaseModel):
    results: list[BatchItem] = Field(description="one per uploaded file, in order")
    model: str


class Refusal(BaseModel):
    error: str = Field(description="what is wrong with the request")
    fix: str = Field(description="what to send instead")


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the 4xx answers a route gives, all of them a `Refusal`."""
    reasons = {
        400: "malformed request",
        413: "too large",
        415: "unsupported content type",
        422: "unreadable image or bad parameter",
    }
    return {status: {"model": Refusal, "description": reasons[status]} for status in statuses}
