"""The API explorer: Swagger UI at /api/docs, reading the document at /api/v1/openapi.json.

Swagger UI's files come from the `swagger-ui-bundle-v2` package (Swagger UI 5, which reads OpenAPI 3.1;
Apache-2.0, the Connexion maintainers' asset-only package), served under /api/docs/static/ with caching
headers: nothing is fetched from a CDN. The page has no inline script: web/static/api_docs.js starts the
explorer, so its Content-Security-Policy (EXPLORER_POLICY) allows scripts from this origin only. It
differs from the other pages' policy only where Swagger UI needs it: its own scripts, `data:` images
(its icons) and `connect-src 'self'` (the document and "Try it out" calls).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from web.api_views import API

DOCS = "/api/docs"
ASSETS = Path(str(swagger_ui_path))
VERSION = ASSETS.name.removeprefix("swagger-ui-")  # the Swagger UI release the package ships
START = Path(__file__).parent / "static" / "api_docs.js"
# the package's files the page uses, and the content type of each
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
         "favicon-32x32.png": "image/png", "favicon-16x16.png": "image/png"}
CACHE = "public, max-age=86400"  # a day: the files change only with the package
EXPLORER_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>API explorer</title>
<link rel="stylesheet" href="{DOCS}/static/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS}/static/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui" data-url="{API}/openapi.json"></div>
<script src="{DOCS}/static/swagger-ui-bundle.js"></script>
<script src="{DOCS}/static/api_docs.js"></script>
</body>
</html>
"""


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def asset(request: web.Request) -> web.StreamResponse:
    """One of FILES, or the page's own start script; anything else is 404."""
    name = request.match_info["name"]
    if name == START.name:
        path, kind = START, "text/javascript"
    elif name in FILES:
        path, kind = ASSETS / name, FILES[name]
    else:
        raise web.HTTPNotFound()
    # FileResponse answers conditional requests (ETag, Last-Modified) with 304
    return web.FileResponse(path, headers={"Cache-Control": CACHE, "Content-Type": kind})


async def _explorer_policy(request: web.Request, response: web.StreamResponse) -> None:
    """The explorer's own Content-Security-Policy, on its page only (after web/app.py's headers)."""
    if request.path == DOCS:
        response.headers["Content-Security-Policy"] = EXPLORER_POLICY


def add_routes(app: web.Application) -> None:
    """Mount the explorer; call after the app's security headers are set up (web/app.py), so its page's
    policy replaces the default one there."""
    app.router.add_get(DOCS, page)
    app.router.add_get(DOCS + "/static/{name}", asset)
    app.on_response_prepare.append(_explorer_policy)
