"""/docs: Swagger UI served by the api itself from the swagger-ui-bundle-v2 package (no CDN,
so nothing from another origin runs beside the console's cookies), started by a script file
of ours, so the page needs no inline script (services/api/browser_headers.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from markupsafe import escape
from swagger_ui_bundle import swagger_ui_path

HERE = Path(__file__).parent
BUNDLE = Path(str(swagger_ui_path))
# The only files /docs/static serves: Swagger UI's, by their versioned folder, and our starter.
FILES = {
    "swagger-ui.css": BUNDLE / "swagger-ui.css",
    "swagger-ui-bundle.js": BUNDLE / "swagger-ui-bundle.js",
    "favicon-32x32.png": BUNDLE / "favicon-32x32.png",
    "swagger-init.js": HERE / "swagger-init.js",
}
VERSION = BUNDLE.name  # "swagger-ui-5.31.0": in the files' URLs, so they may be cached long


def page(title: str, openapi_url: str) -> str:
    static = f"/docs/static/{VERSION}"
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{escape(title)} - Swagger UI</title>
  <link rel="stylesheet" href="{static}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body data-openapi="{escape(openapi_url)}">
  <div id="swagger-ui"></div>
  <script src="{static}/swagger-ui-bundle.js"></script>
  <script src="{static}/swagger-init.js"></script>
</body>
</html>
"""


def docs_router(*, title: str, openapi_url: str) -> APIRouter:
    """The /docs page and its files (FastAPI's own docs_url stays off)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return HTMLResponse(page(title, openapi_url))

    @router.get("/docs/static/{version}/{name}")
    async def docs_file(version: str, name: str) -> FileResponse:
        found = FILES.get(name)
        if version != VERSION or found is None:
            raise HTTPException(404, "not found")
        return FileResponse(found, headers={"Cache-Control": "public, max-age=86400"})

    return router
