"""Interactive API docs that work offline: Swagger UI at /docs and ReDoc at /redoc, their
scripts and styles served by the service itself."""

from __future__ import annotations

import importlib.util
import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

DOCS_ASSETS = "/docs-assets"
log = logging.getLogger(__name__)


def offline_assets() -> Path | None:
    """The folder of Swagger UI and ReDoc files `fastapi-offline` ships, or None (with a warning
    that /docs will need the internet) when the package or its files are missing."""
    static = None
    if importlib.util.find_spec("fastapi_offline") is not None:
        static = Path(str(resources.files("fastapi_offline").joinpath("static")))
    if static is None or not (static / "swagger-ui-bundle.js").is_file():
        log.warning("fastapi-offline is not installed: /docs and /redoc load their scripts from a CDN")
        return None
    return static


def offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from the files the `fastapi-offline` package ships
    (Swagger UI 5, which reads FastAPI's OpenAPI 3.1), so the interactive docs work where the
    service has no internet; FastAPI's own pages load them from a CDN, the fallback when that
    package is missing."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    static = offline_assets()
    swagger, redoc = {}, {}
    if static is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
        swagger = {
            "swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
            "swagger_favicon_url": f"{DOCS_ASSETS}/favicon.png",
        }
        redoc = {
            "redoc_js_url": f"{DOCS_ASSETS}/redoc.standalone.js",
            "redoc_favicon_url": f"{DOCS_ASSETS}/favicon.png",
            "with_google_fonts": False,
        }
    schema = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=schema, title="yingshe", **swagger)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return get_redoc_html(openapi_url=schema, title="yingshe", **redoc)
