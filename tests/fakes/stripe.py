"""A wire-level fake of the part of Stripe's API the bot uses, and of Stripe's webhook deliveries.

    fake = FakeStripe()
    await fake.start()             # 127.0.0.1, a free port; STRIPE_API_BASE=fake.base_url
    ...
    await fake.stop()

API: POST /v1/checkout/sessions, form-encoded as Stripe's SDKs send it (`line_items[0][price_data][currency]`),
with `Authorization: Bearer <key>`; answers a Checkout Session object in Stripe's documented shape
(https://docs.stripe.com/api/checkout/sessions/object: id "cs_test_…", object "checkout.session",
url, status "open", payment_status "unpaid", amount_total, currency, metadata, client_reference_id…).
A wrong key is answered 401 and a missing field 400, each with Stripe's error shape
({"error": {"type", "message", ...}}). `fail_with` makes the next requests answer that status.

Webhooks: `paid(session_id)`, `refunded(payment_intent)` and `disputed(payment_intent)` build the events
Stripe sends (https://docs.stripe.com/api/events/object: id "evt_…", object "event", type, created,
data.object, livemode, api_version), and `signed(event, secret)` gives the body and the `Stripe-Signature`
header as Stripe makes them (https://docs.stripe.com/webhooks#verify-manually: `t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<body>" keyed with the endpoint's secret>`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

API_VERSION = "2025-10-29.clover"


def _error(status: int, kind: str, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"type": kind, "message": message, **({"param": param} if param else {})}}
    return web.json_response(body, status=status, headers={"Request-Id": "req_" + secrets.token_hex(7)})


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding back to nested dicts and lists: a[b][0][c]=v -> {"a": {"b": [{"c": "v"}]}}."""
    result: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node: Any = result
        for part, following in zip(parts, parts[1:] + [None], strict=True):
            index: Any = int(part) if isinstance(node, list) else part
            if following is None:
                _put(node, index, value)
            else:
                if _get(node, index) is None:
                    _put(node, index, [] if following.isdigit() else {})
                node = _get(node, index)
    return result


def _get(node: Any, index: Any) -> Any:
    if isinstance(node, list):
        return node[index] if index < len(node) else None
    return node.get(index)


def _put(node: Any, index: Any, value: Any) -> None:
    if isinstance(node, list):
        node.extend([None] * (index + 1 - len(node)))
    node[index] = value


def signed(event: dict, secret: str, *, timestamp: int | None = None) -> tuple[bytes, str]:
    """The body Stripe posts and its Stripe-Signature header."""
    body = json.dumps(event).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={stamp},v1={digest}"


class FakeStripe:
    """Stripe's API for Checkout Sessions on 127.0.0.1, and the events its webhooks would send."""

    def __init__(self, api_key: str = "sk_test_fake") -> None:
        self.api_key = api_key
        self.sessions: dict[str, dict] = {}
        self.requests: list[dict] = []  # each decoded request body, in order
        self.fail_with: int | None = None  # answer every request with this status (500, 429…) while set
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _create_session(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided: sk_****")
        params = decode_form(await request.text())
        self.requests.append(params)
        if self.fail_with is not None:
            return _error(self.fail_with, "api_error", "Something went wrong on Stripe's end.")
        for required in ("mode", "success_url", "line_items"):
            if not params.get(required):
                return _error(400, "invalid_request_error", f"Missing required param: {required}.", required)
        items = params["line_items"]
        amount = sum(int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1)) for item in items)
        session_id = "cs_test_" + secrets.token_hex(24)
        now = int(time.time())
        session = {
            "id": session_id, "object": "checkout.session", "livemode": False, "mode": params["mode"],
            "status": "open", "payment_status": "unpaid", "payment_intent": None,
            "amount_subtotal": amount, "amount_total": amount, "currency": items[0]["price_data"]["currency"],
            "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata", {}),
            "success_url": params["success_url"], "cancel_url": params.get("cancel_url"),
            "created": now, "expires_at": int(params.get("expires_at", now + 86400)), "customer": None,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        }
        self.sessions[session_id] = session
        return web.json_response(session, headers={"Request-Id": "req_" + secrets.token_hex(7)})

    def _event(self, kind: str, obj: dict) -> dict:
        return {"id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": API_VERSION,
                "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": kind,
                "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}

    def paid(self, session_id: str, *, kind: str = "checkout.session.completed", status: str = "paid") -> dict:
        """The event of a buyer paying on a session's page: the session complete, with its payment intent."""
        session = self.sessions[session_id]
        session.update(status="complete", payment_status=status,
                       payment_intent=session["payment_intent"] or "pi_" + secrets.token_hex(12))
        return self._event(kind, dict(session))

    def refunded(self, payment_intent: str, *, amount: int | None = None) -> dict:
        """charge.refunded: the Charge of that payment intent, refunded (all of it unless `amount`)."""
        total = next((s["amount_total"] for s in self.sessions.values() if s["payment_intent"] == payment_intent), 500)
        refunded = total if amount is None else amount
        charge = {"id": "ch_" + secrets.token_hex(12), "object": "charge", "amount": total, "amount_captured": total,
                  "amount_refunded": refunded, "refunded": refunded == total, "captured": True, "paid": True,
                  "payment_intent": payment_intent, "status": "succeeded", "currency": "usd", "metadata": {}}
        return self._event("charge.refunded", charge)

    def disputed(self, payment_intent: str) -> dict:
        """charge.dispute.created: the buyer's bank disputes the charge of that payment intent."""
        dispute = {"id": "dp_" + secrets.token_hex(12), "object": "dispute", "amount": 500, "currency": "usd",
                   "charge": "ch_" + secrets.token_hex(12), "payment_intent": payment_intent,
                   "reason": "fraudulent", "status": "needs_response", "metadata": {}}
        return self._event("charge.dispute.created", dispute)
