"""Logs: even at LOG_LEVEL=debug no line holds a token, an auth header or a URL password."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time

import pytest
import structlog

from comfy import client as comfyui
import logs
from tests.conftest import make_client, make_settings

TOKEN, PASSWORD = "sup3r-secret-token", "pa55-word"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()  # what basic auth puts on the wire


@pytest.fixture
def log_text(monkeypatch):
    """A stream to configure the logs into; the process-wide logging state is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET}
    # configure() caches loggers on first use: give comfyui a fresh proxy so the cache dies with the test
    monkeypatch.setattr(comfyui, "log", structlog.get_logger("comfyui"))
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    structlog.reset_defaults()


@pytest.mark.parametrize("header, userinfo", [("Authorization", ""), ("X-Api-Key", f"user:{PASSWORD}@")])
async def test_a_real_client_at_debug_logs_no_secret(comfy, tmp_path, log_text, header, userinfo):
    url = comfy.url.replace("http://", f"http://{userinfo}")
    settings = make_settings(tmp_path, comfyui_url=url, comfyui_auth_header=header,
                             comfyui_auth_token=f"Bearer {TOKEN}" if header == "Authorization" else TOKEN)
    logs.configure("debug", secrets=settings.secrets(), stream=log_text)
    headers = settings.comfyui_headers()
    structlog.get_logger("test").debug("debug_is_on", url=url, headers=headers)
    async with make_client(url, headers=headers) as client:
        await client.wait_connected(5)
        await client.queue()
    text = log_text.getvalue()
    assert "debug_is_on" in text and "websocket_connected" in text
    assert f"'{header}': '***'" in text
    if userinfo:
        assert f"url=http://user:***@127.0.0.1:{comfy.port}" in text
    for secret in (TOKEN, PASSWORD, BASIC):
        assert secret not in text


def test_the_redactor_masks_secrets_in_nested_fields():
    redactor = logs.Redactor(["abc.def.ghi", "hunter22", "ab"])
    error = ValueError("cannot reach http://bob:pw-in-url@gpu1:8188")
    event = {
        "event": "GET http://bob:pw-in-url@gpu1:8188/queue failed",
        "headers": {"Authorization": "Bearer abc123", "Host": "gpu1"},
        "lines": ["> Authorization: Basic Ym9iOmh1bnRlcjIy", "> Host: gpu1"],
        "nested": {"deep": ("the token abc.def.ghi and hunter22", 3)},
        "url": "https://discord.com/api/v10/interactions/123456/aW50ZXJhY3Rpb246MTIz/callback",
        "note": "sent Bearer xyz.987",
        "payload": '{"op": 0, "d": {"token": "aW50ZXJhY3Rpb24", "id": "1"}}',
        "error": error,
        "count": 3, "ok": True, "missing": None, "plain": "nothing secret at http://gpu1:8188/ws",
    }
    assert redactor(None, "debug", event) == {
        "event": "GET http://bob:***@gpu1:8188/queue failed",
        "headers": {"Authorization": "***", "Host": "gpu1"},
        "lines": ["> Authorization: ***", "> Host: gpu1"],
        "nested": {"deep": ("the token *** and ***", 3)},
        "url": "https://discord.com/api/v10/interactions/123456/***/callback",
        "note": "sent Bearer ***",
        "payload": '{"op": 0, "d": {"token": "***", "id": "1"}}',
        "error": "ValueError('cannot reach http://bob:***@gpu1:8188')",
        "count": 3, "ok": True, "missing": None, "plain": "nothing secret at http://gpu1:8188/ws",
    }  # "ab" is too short to mask everywhere: "abc123" would not survive otherwise


def test_library_debug_lines_with_credentials_are_not_emitted(log_text):
    logs.configure("debug", stream=log_text)
    logging.getLogger("websockets.client").debug("> %s: %s", "Authorization", f"Bearer {TOKEN}")
    logging.getLogger("websockets").debug("> GET /ws?clientId=1 HTTP/1.1")
    logging.getLogger("discord.http").debug("POST %s has returned 204", "https://discord.com/api/v10/interactions/1/tok/callback")
    logging.getLogger("discord.gateway").debug("For Shard ID %s: WebSocket Event: %s", None, {"d": {"token": TOKEN}})
    logging.getLogger("some.library").debug("> %s: %s", "Authorization", f"Basic {BASIC}")
    logging.getLogger("websockets.client").info("connection closed")
    lines = log_text.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "> Authorization: ***" in lines[0] and "[some.library]" in lines[0]
    assert "connection closed" in lines[1]


def test_quiet_loggers_follow_a_stricter_level(log_text):
    logs.configure("warning", stream=log_text)
    logging.getLogger("websockets.client").info("connection closed")
    logging.getLogger("websockets.client").warning("connection lost")
    lines = log_text.getvalue().splitlines()
    assert len(lines) == 1 and "connection lost" in lines[0], lines


@pytest.mark.parametrize("as_json", [False, True])
def test_exception_text_is_masked(log_text, as_json):
    logs.configure("info", as_json, secrets=[TOKEN], stream=log_text)
    try:
        raise RuntimeError(f"refused http://user:{PASSWORD}@gpu1:8188 with {TOKEN}")
    except RuntimeError:
        structlog.get_logger("test").exception("request_failed")
        logging.getLogger("some.library").exception("failed too")
    text = log_text.getvalue()
    assert text.count("RuntimeError: refused http://user:***@gpu1:8188 with ***") == 2
    assert PASSWORD not in text and TOKEN not in text
    if as_json:
        assert [json.loads(line)["event"] for line in text.splitlines()] == ["request_failed", "failed too"]


async def _send_raw(port: int, data: bytes) -> bytes:
    """`data` over a plain socket to 127.0.0.1:`port`; what came back (bounded in size and time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/g/{gallery}?page={filler}", "/admin/{admin}/users?q={filler}",
                                  "/g/x?token={gallery}&q={filler}", "/api/v1/generations?key={key}&q={filler}"])
async def test_a_request_line_too_long_logs_no_link_token(tmp_path, log_text, path):
    from store import Store
    import links
    from web.app import WebServer

    settings = make_settings(tmp_path, web_secret="log-test-secret")
    logs.configure("info", secrets=settings.secrets(), stream=log_text)
    expires = time.time() + 3600
    tokens = {"gallery": links.sign("log-test-secret", 42, 7, expires),
              "admin": links.sign_admin("log-test-secret", 42, 7, expires),
              "key": "cfb_" + "K" * 43}
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    server = WebServer(store, settings, port=0)
    await server.start()
    try:
        line = path.format(filler="a" * 9000, **tokens)
        answer = await _send_raw(server.port, f"GET {line} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    finally:
        await server.stop()
        await store.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    text = log_text.getvalue()
    assert "Error handling request from 127.0.0.1" in text and "LineTooLong" in text  # still says what happened
    for token in tokens.values():
        assert token not in text
    assert "***" in text
