"""The API explorer's routes (web/api_docs.py) over HTTP: its page, its own Content-Security-Policy
(scripts from this origin only, no inline script) while every other page keeps the default one, and
Swagger UI's files served from the installed package with caching headers. The page in a browser:
tests/web/test_api_docs_browser.py."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import make_settings
from tests.web.test_api import FakeService, open_store
from web import api_docs
from web.app import SECURITY_HEADERS, make_app


@pytest.fixture
async def explorer(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, web_secret="docs-test-secret")
    settings.outputs_dir.mkdir(parents=True)
    store = await open_store(settings.data_dir / "bot.sqlite3", monkeypatch)
    client = TestClient(TestServer(make_app(store, settings, api=FakeService(settings.outputs_dir)), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()
    await store.close()


async def test_the_page_loads_swagger_ui_from_this_site_under_its_own_policy(explorer):
    answer = await explorer.get("/api/docs")
    page = await answer.text()
    assert answer.status == 200 and answer.content_type == "text/html"
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy and "http" not in policy  # no inline or eval'd script, no other origin
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [src for src, _ in scripts] == [' src="/api/docs/static/swagger-ui-bundle.js"',
                                           ' src="/api/docs/static/api_docs.js"']
    assert all(body.strip() == "" for _, body in scripts)
    assert 'data-url="/api/v1/openapi.json"' in page and "http" not in page and "//" not in page


async def test_other_pages_keep_the_default_policy(explorer):
    for path in ("/api/v1/openapi.json", "/healthz", "/api/docs/static/swagger-ui.css"):
        answer = await explorer.get(path)
        assert answer.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"], path


async def test_swagger_ui_files_are_served_with_caching_headers(explorer):
    assert api_docs.VERSION.split(".")[0] == "5"  # Swagger UI 5 reads OpenAPI 3.1
    script = await explorer.get("/api/docs/static/swagger-ui-bundle.js")
    body = await script.read()
    assert script.status == 200 and script.content_type == "text/javascript" and b"SwaggerUIBundle" in body
    assert script.headers["Cache-Control"] == "public, max-age=86400" and script.headers["ETag"]
    again = await explorer.get("/api/docs/static/swagger-ui-bundle.js",
                               headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304
    style = await explorer.get("/api/docs/static/swagger-ui.css")
    assert style.status == 200 and style.content_type == "text/css"
    start = await explorer.get("/api/docs/static/api_docs.js")
    assert start.status == 200 and "SwaggerUIBundle(" in await start.text()


@pytest.mark.parametrize("path", ["/api/docs/static/index.html", "/api/docs/static/swagger-ui-bundle.js.map",
                                  "/api/docs/static/..%2F..%2F__init__.py", "/api/docs/static/"])
async def test_nothing_else_of_the_package_is_served(explorer, path):
    assert (await explorer.get(path)).status == 404


async def test_without_the_api_there_is_no_explorer(tmp_path):
    settings = make_settings(tmp_path)
    client = TestClient(TestServer(make_app(None, settings), host="127.0.0.1"))  # the store is never read here
    await client.start_server()
    try:
        assert (await client.get("/api/docs")).status == 404
    finally:
        await client.close()
