"""Stripe's webhook (POST /stripe/webhook) and the two pages Checkout sends a buyer back to
(/credits/thanks, /credits/cancelled, when WEB_BASE_URL is set).

Each event is verified with the Stripe SDK (`stripe.Webhook.construct_event`: the `Stripe-Signature`
header's HMAC-SHA256 with STRIPE_WEBHOOK_SECRET, and its timestamp within TOLERANCE seconds, so an old
event replayed by someone else is refused) and answered 400 when it is not Stripe's; a verified event is
applied by jobs/payments.py (once per event id: a replay is answered 200 and does nothing) and answered
200. A store failure is answered 500, and Stripe sends the event again later.
"""

from __future__ import annotations

import html

import stripe
import structlog
from aiohttp import web

from config import Settings
from jobs import payments

log = structlog.get_logger(__name__)

TOLERANCE = 300  # seconds an event's signed timestamp may be old (Stripe's own default)
PAGE = ("<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>{title}</title><body><h1>{title}</h1><p>{text}</p></body></html>")
PAGES = {
    "thanks": ("Thank you", "Your payment went through. Your credits arrive within a minute: "
                            "/credits balance in Discord shows them. You may close this page."),
    "cancelled": ("Payment cancelled", "Nothing was charged. /credits buy in Discord opens a new payment page "
                                       "whenever you like. You may close this page."),
}


def add_routes(app: web.Application, store, settings: Settings) -> None:
    app.router.add_post("/stripe/webhook", _Webhook(store, settings).receive)
    for outcome in PAGES:
        app.router.add_get(f"/credits/{outcome}", _page)


async def _page(request: web.Request) -> web.Response:
    title, text = PAGES[request.path.rsplit("/", 1)[1]]
    return web.Response(text=PAGE.format(title=html.escape(title), text=html.escape(text)), content_type="text/html")


class _Webhook:
    def __init__(self, store, settings: Settings) -> None:
        self.store = store
        self.secret = settings.stripe_webhook_secret

    async def receive(self, request: web.Request) -> web.Response:
        if self.secret is None:
            log.warning("stripe_webhook_off")
            return web.Response(status=503, text="Stripe webhooks are off here: STRIPE_WEBHOOK_SECRET is not set.")
        payload = await request.read()
        try:
            event = stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature"),
                                                   self.secret.get_secret_value(), tolerance=TOLERANCE).to_dict()
        except stripe.SignatureVerificationError as error:
            log.warning("stripe_event_refused", reason=str(error)[:200], remote=request.remote)
            return web.Response(status=400, text="The Stripe-Signature header does not match this event, "
                                                 "or its timestamp is too old.")
        except ValueError:
            log.warning("stripe_event_refused", reason="not JSON", remote=request.remote)
            return web.Response(status=400, text="The body is not a Stripe event (not JSON).")
        try:
            outcome = await payments.handle(self.store, event)
        except Exception:
            log.exception("stripe_event_failed", event_id=event.get("id"), type=event.get("type"))
            return web.Response(status=500, text="The event could not be recorded; send it again later.")
        return web.json_response({"received": True, "outcome": outcome})
