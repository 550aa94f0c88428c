"""Answers a hostile ComfyUI (or a proxy in front of one) gives, for `FakeComfyUI.override`.

Each function returns an aiohttp handler. Every stream is bounded in bytes and
stops when the client goes away.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from aiohttp import web
from PIL import Image

HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>\n")


def answer(body: Any, *, status: int = 200, content_type: str = "application/json"):
    """A fixed answer: JSON for anything that is not bytes."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=data, headers={"Content-Type": content_type})

    return handler


def endless(*, chunk: int = 256 * 1024, limit: int = 1 << 30, content_type: str = "image/png",
            sent: list[int] | None = None):
    """A chunked body with no Content-Length that goes on until the client hangs up (at most `limit`).
    `sent`, if given, gets the number of bytes written appended when the stream ends."""
    block = b"\x89PNG\r\n\x1a\n" + bytes(chunk - 8)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        written = 0
        try:
            while written < limit:
                await response.write(block)
                written += len(block)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            if sent is not None:
                sent.append(written)
        return response

    return handler


def png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A real PNG cut in the middle of its image data."""
    data = png_bytes((256, 256))
    return data[: len(data) // 2]


def node_problems(count: int) -> dict[str, Any]:
    """A 400 body from POST /prompt with `count` nodes each failing validation."""
    node_errors = {
        str(index): {
            "errors": [{"type": "value_not_in_list", "message": "Value not in list",
                        "details": f"ckpt_name: 'x{index}.safetensors' not in []",
                        "extra_info": {"input_name": "ckpt_name", "input_config": [[]],
                                       "received_value": f"x{index}.safetensors"}}],
            "dependent_outputs": ["9"], "class_type": "CheckpointLoaderSimple"}
        for index in range(count)
    }
    return {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}}, "node_errors": node_errors}
