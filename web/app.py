"""The bot's web app: `make_app` builds the aiohttp application from the areas' routes, `WebServer` runs
it in the bot's event loop.

The gallery (web/gallery.py) is always there, with the public pages of shared results (web/shares.py);
so are the public operational routes /metrics, /healthz and /readyz (web/health.py). The admin
dashboard (web/dashboard.py) and the HTTP API (web/api.py) are mounted when the bot gives them. Every
response carries SECURITY_HEADERS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from config import Settings
from store import Store
from web import api as api_routes
from web import api_docs
from web import dashboard, health, stripe_webhook
from web import gallery as gallery_routes
from web import shares as share_routes

if TYPE_CHECKING:
    from metrics import Metrics
    from web.api import ApiService
    from web.dashboard import AdminPanel
    from web.health import Ready

log = structlog.get_logger(__name__)
HEADERS = web.AppKey("security_headers", dict)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' https://cdn.discordapp.com "
    "https://media.discordapp.net; media-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def make_app(store: Store, settings: Settings, *, clock: Callable[[], float] = time.time,
             metrics: Metrics | None = None, ready: Ready | None = None,
             admin: AdminPanel | None = None, api: ApiService | None = None, results: Any = None) -> web.Application:
    """The gallery application on `store`; `clock` gives the time links are checked against.

    Also the public /metrics (404 without `metrics`), /healthz and /readyz (`ready()` gives (ready,
    reason); ready without it): see web/health.py. With `admin`, the admin dashboard at /admin/{token}
    (web/dashboard.py); without, /admin/* is 404. With `api`, the HTTP API under /api/v1 (web/api.py)
    and its explorer at /api/docs (web/api_docs.py).
    """
    app = web.Application(middlewares=[gallery_routes.error_pages], client_max_size=64 * 1024)
    gallery = gallery_routes.add_routes(app, store, settings, clock, results)
    share_routes.add_routes(app, store, settings, results)  # public pages of shared results: /s/{token}
    app[HEADERS] = security_headers(settings)
    health.add_routes(app, metrics, ready)
    stripe_webhook.add_routes(app, store, settings)  # POST /stripe/webhook, Checkout's return pages
    if admin is not None:
        dashboard.add_routes(app, admin, store, settings, clock, gallery.templates, gallery.error_page)
    if api is not None:
        api_routes.add_routes(app, api, store, settings)
    app.on_response_prepare.append(_secure)
    if api is not None:  # after _secure: the explorer's page sets its own policy (web/api_docs.py)
        api_docs.add_routes(app)
    return app


class WebServer:
    """The app on `settings.web_host:settings.web_port` (or `port`: 0 picks a free one) in this event loop."""

    def __init__(self, store: Store, settings: Settings, *, port: int | None = None,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 ready: Ready | None = None, admin: AdminPanel | None = None, api: ApiService | None = None,
                 results: Any = None) -> None:
        self._app = make_app(store, settings, clock=clock, metrics=metrics, ready=ready, admin=admin, api=api,
                             results=results)
        self._host = settings.web_host
        self._port = settings.web_port if port is None else port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the port listened on, once started

    @property
    def url(self) -> str:
        """Where the app listens, e.g. http://127.0.0.1:8080."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        """Listen; does nothing when no port is set (the web app is off)."""
        if self._port is None or self._runner is not None:
            return
        runner = web.AppRunner(self._app, access_log=None)  # request paths hold the tokens: not logged
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("web_started", url=self.url)

    async def stop(self) -> None:
        """Stop listening and finish the requests in progress (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("web_stopped")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response."""
    response.headers.update(request.app[HEADERS])


def security_headers(settings: Settings) -> dict[str, str]:
    """SECURITY_HEADERS; with OUTPUT_STORE, images and videos may also come from the bucket, where the
    gallery's file links redirect (presigned URLs)."""
    if not settings.output_store:
        return SECURITY_HEADERS
    where = urlsplit(settings.s3_public_url or settings.s3_endpoint_url or "https://*.amazonaws.com")
    origin = f"{where.scheme}://{where.netloc.rpartition('@')[2]}"
    policy = SECURITY_HEADERS["Content-Security-Policy"].replace("media-src 'self'", f"media-src 'self' {origin}")
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy.replace("img-src 'self'", f"img-src 'self' {origin}")}
