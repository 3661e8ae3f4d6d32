"""Interactive API docs that work offline: Swagger UI at /docs and ReDoc at /redoc, their
scripts and styles served by the service itself."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

DOCS_ASSETS = "/docs-assets"


def offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from the files the `fastapi-offline` package ships
    (Swagger UI 5, which reads FastAPI's OpenAPI 3.1), so the interactive docs work where the
    service has no internet; FastAPI's own pages load them from a CDN, the fallback when that
    package is missing."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    try:
        static = resources.files("fastapi_offline").joinpath("static")
    except ModuleNotFoundError:
        static = None
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
