"""`yingshe serve`: a trained or exported model behind HTTP, with dynamic batching and a page."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from yingshe.serve.config import ServeConfig


def serve(cfg: ServeConfig) -> None:
    """Load the model (a clear error before anything listens), then run uvicorn until stopped."""
    from yingshe.errors import require

    uvicorn = require("uvicorn", "deploy", "yingshe serve")
    require("fastapi", "deploy", "yingshe serve")
    from yingshe.serve.app import CONFIG_ENV, create_app, load_model

    classifier = load_model(cfg)
    if cfg.workers <= 1:
        uvicorn.run(create_app(cfg, classifier), host=cfg.host, port=cfg.port, log_level="warning")
        return
    os.environ[CONFIG_ENV] = json.dumps(asdict(cfg))
    uvicorn.run(
        "yingshe.serve.app:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level="warning",
    )


__all__ = ["ServeConfig", "serve"]
