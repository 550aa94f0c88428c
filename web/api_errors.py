"""The HTTP API's refusals: `ApiError` and its kinds, each a JSON error with the status that fits,
`{"error": {"code": "...", "message": "A sentence.", "field": "width"}}` (field only when one is wrong).

The routes (web/api.py) and the bot's ApiService (web/service.py) raise them; the routes' middleware
answers with `ApiError.response()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

NO_STORE = {"Cache-Control": "no-store"}


class ApiError(Exception):
    """A request the API refuses: becomes {"error": {"code", "message", "field"?}} with `status`.

    The ApiService raises these (or the subclasses below) to refuse a job in words."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 retry_after: float | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, _sentence(message), field
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json_response({"error": error}, self.status, headers=self.headers)


class InvalidField(ApiError):
    """400: a request field is wrong; `message` says how ("width must be at most 2048")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, "invalid_field", message, field=field)


class LimitReached(ApiError):
    """429: the key's limits are reached (its active jobs, its server's quota, ...)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(429, "limit_reached", message, retry_after=retry_after or 60)


class Unavailable(ApiError):
    """503: the bot cannot take jobs now (paused, no ComfyUI server up, shutting down)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(503, "unavailable", message, retry_after=retry_after or 30)


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """`value` as compact JSON, never cached."""
    return web.Response(body=json.dumps(value, separators=(",", ":")).encode("utf-8"), status=status,
                        content_type="application/json", headers={**NO_STORE, **(headers or {})})


def _sentence(text: str) -> str:
    """One line that ends like a sentence."""
    text = " ".join(str(text).split()) or "The request was refused"
    return text if text.endswith((".", "!", "?")) else text + "."
