"""Public operational routes: `GET /metrics` (Prometheus), `GET /healthz` (alive) and `GET /readyz` (ready).

They need no signed link, so they show nothing secret: metric values and label values the bot chose
(kinds, server display names, error class names), ages in seconds and the bot's own short reasons.
Cheap enough to be polled every second: no store access and no network awaits, only memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

if TYPE_CHECKING:
    from metrics import Metrics

log = structlog.get_logger(__name__)

RENDER_MAX_AGE = 5.0  # seconds a /metrics text is reused while no recording method was called
STALE_AFTER = 10.0  # seconds without a loop-watcher tick before /healthz says the loop is stuck
REASON_CHARS = 200
NO_STORE = {"Cache-Control": "no-store"}

Ready = Callable[[], tuple[bool, str]]


class Health:
    """The handlers for /metrics, /healthz and /readyz."""

    def __init__(self, metrics: Metrics | None, ready: Ready | None) -> None:
        self._metrics = metrics
        self._ready = ready
        self._rendered: tuple[int, float, bytes, str] | None = None  # (metrics.changes it shows, when, body, type)
        self._rendering: asyncio.Future[tuple[int, float, bytes, str]] | None = None

    async def metrics(self, request: web.Request) -> web.Response:
        """The Prometheus text. Rendered in a thread (a few ms, more at the label bounds: not on the
        loop), only when something was recorded since the last render (or it is RENDER_MAX_AGE old);
        scrapes that arrive during a render share it, so a flood of scrapes costs at most one render
        at a time."""
        metrics = self._metrics
        if metrics is None:
            return _text("metrics are off\n", 404)
        rendered = self._rendered
        if rendered is None or rendered[0] != metrics.changes or time.monotonic() - rendered[1] > RENDER_MAX_AGE:
            if self._rendering is None or self._rendering.done():
                self._rendering = asyncio.ensure_future(self._render(metrics))
            rendered = await asyncio.shield(self._rendering)
        _, _, body, content_type = rendered
        return web.Response(body=body, headers={**NO_STORE, "Content-Type": content_type})

    async def _render(self, metrics: Metrics) -> tuple[int, float, bytes, str]:
        changes = metrics.changes
        body, content_type = await asyncio.to_thread(metrics.render)
        self._rendered = (changes, time.monotonic(), body, content_type)
        return self._rendered

    async def healthz(self, request: web.Request) -> web.Response:
        """Answering at all shows the process and its event loop run; with a loop watcher attached,
        it must also have ticked within STALE_AFTER seconds."""
        metrics = self._metrics
        age = metrics.since_tick() if metrics is not None else None
        if metrics is None or age is None:
            return _text("ok\n")
        lag = metrics.last_lag
        detail = f"loop watcher last ticked {age:.1f} s ago" + (f", lag {lag * 1000:.1f} ms" if lag is not None else "")
        if age > STALE_AFTER:
            return _text(f"stuck: {detail}\n", 503)
        return _text(f"ok: {detail}\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self._ready is None:
            return _text("ready\n")
        try:
            ready, reason = self._ready()
        except Exception as error:
            log.warning("readiness_check_failed", error=repr(error)[:300])
            return _text("not ready: the readiness check failed\n", 503)
        reason = " ".join(str(reason or "").split())[:REASON_CHARS]
        if ready:
            return _text(f"ready: {reason}\n" if reason else "ready\n")
        return _text(f"not ready: {reason or 'unknown'}\n", 503)


def add_routes(app: web.Application, metrics: Metrics | None = None, ready: Ready | None = None) -> Health:
    """Mount /metrics, /healthz and /readyz on `app` (GET, and HEAD)."""
    health = Health(metrics, ready)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    return health


def _text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain", charset="utf-8", headers=NO_STORE)
