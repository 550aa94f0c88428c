"""Buying credits (issue 21) with Stripe: Checkout Sessions for the operator's credit packs (`Checkout`, used by
/credits buy in cogs/payments.py) and what each of Stripe's webhook events does to the credits ledger (`handle`,
used by POST /stripe/webhook in web/stripe_webhook.py).

Checkout: the SDK's StripeClient runs on its aiohttp client (`stripe.AIOHTTPClient`: aiohttp is already the
bot's HTTP library, so nothing else to install), and every call is its `_async` variant: nothing blocks the
event loop. Each call is bounded (TIMEOUT seconds per try, one retry after a network error or a 5xx, which
the SDK makes safe with the idempotency key it puts on every POST) and the whole of `open_sessions` by
OVERALL. A session carries who buys
which pack three ways that all reach the webhook: `client_reference_id` ("guild:user"), `metadata`, and
the payment intent's metadata. The webhook credits from the bot's own record of it
(store.payments.CheckoutSession), or from the signed metadata when that record is missing (a database
restored from an older backup).

The events `handle` applies:

  checkout.session.completed, checkout.session.async_payment_succeeded (payment_status "paid"):
      the buyer of that session gets the pack's credits (a "purchase" entry keyed by the payment intent);
  charge.refunded, charge.dispute.created:
      the credits bought with that payment intent are taken back (a "chargeback" entry, once), and may
      leave the balance below zero: the credits ledger then refuses paid jobs until it covers them again;
  anything else: noted, nothing done.

Once, whatever Stripe does: an event is noted when it arrives and marked handled only after its work is
done, so a replay of a handled event does nothing and a redelivery of one the bot never finished (it
stopped in between) is handled again. That work is itself once-only, as the ledger credits and takes back
a payment intent at most once each. Out of order too: a refund or dispute that arrives before the
purchase is noted against its payment intent, and the purchase, when it comes, is taken back at once.
The two sides check each other after writing (the purchase after crediting, the refund after noting),
so whichever comes second sees the first, even when both run at the same time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import stripe
import structlog

from config import CreditPack, Settings
from store.payments import CheckoutSession

log = structlog.get_logger(__name__)

TIMEOUT = 15.0  # seconds for one request to Stripe
OVERALL = 40.0  # seconds for all of /credits buy's requests together
SESSION_MINUTES = 60  # a Checkout link works this long (Stripe's least is 30)


class PaymentError(Exception):
    """Buying is not possible right now; str() says why, in words for the buyer."""


@dataclass(frozen=True)
class Offer:
    """One pack's Checkout link."""

    pack: str
    credits: int
    price: str  # "5.00 USD"
    url: str


def price_text(amount: int, currency: str) -> str:
    """`amount` in the smallest unit as people read it: 500 usd -> "5.00 USD" (zero-decimal currencies whole)."""
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount / 100:.2f} {currency.upper()}"


# Stripe's zero-decimal currencies (https://docs.stripe.com/currencies#zero-decimal): amounts are whole units.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())


class Checkout:
    """Opens Checkout Sessions and records them in the store."""

    def __init__(self, settings: Settings, store) -> None:
        self.settings = settings
        self.store = store
        self._client: stripe.StripeClient | None = None
        self._http: stripe.AIOHTTPClient | None = None

    @property
    def enabled(self) -> bool:
        """Buying is on: a Stripe key, and credits on (CREDITS_ENABLED). The webhook credits either way."""
        return self.settings.stripe_secret_key is not None and self.settings.credits_enabled

    @property
    def packs(self) -> dict[str, CreditPack]:
        return self.settings.credit_packs

    def client(self) -> stripe.StripeClient:
        if self._client is None:
            key = self.settings.stripe_secret_key
            if key is None:
                raise PaymentError("Buying credits is off on this bot.")
            self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
            self._client = stripe.StripeClient(key.get_secret_value(), http_client=self._http,
                                               base_addresses={"api": self.settings.stripe_api_base},
                                               max_network_retries=1)
        return self._client

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close_async()

    async def open_sessions(self, guild_id: int, user_id: int, return_url: str,
                            packs: list[str] | None = None) -> list[Offer]:
        """A Checkout link for each pack (or those named), recorded before it is returned; PaymentError
        saying why when buying is off, there are no packs, or Stripe cannot be reached or refuses."""
        if not self.enabled:
            raise PaymentError("Buying credits is off on this bot: its operator has not set up payments.")
        chosen = list(self.packs) if packs is None else [name for name in packs if name in self.packs]
        if not chosen:
            raise PaymentError("There are no credit packs for sale on this bot yet: ask its operator.")
        try:
            async with asyncio.timeout(OVERALL):
                return list(await asyncio.gather(*(self._open(guild_id, user_id, name, return_url)
                                                   for name in chosen)))
        except TimeoutError:
            log.warning("stripe_timeout", guild_id=guild_id, user_id=user_id)
            raise PaymentError("Stripe did not answer in time. Please try again in a minute.") from None

    async def _open(self, guild_id: int, user_id: int, name: str, return_url: str) -> Offer:
        pack = self.packs[name]
        who = {"guild_id": str(guild_id), "user_id": str(user_id), "pack": name, "credits": str(pack.credits)}
        product = {"name": f"{pack.credits} credits ({name})"}
        if pack.description:
            product["description"] = pack.description
        params = {
            "mode": "payment",
            "line_items": [{"quantity": 1, "price_data": {"currency": pack.currency, "unit_amount": pack.amount,
                                                          "product_data": product}}],
            "client_reference_id": f"{guild_id}:{user_id}",
            "metadata": who,
            "payment_intent_data": {"metadata": who},
            "success_url": self._url("thanks", return_url),
            "cancel_url": self._url("cancelled", return_url),
            "expires_at": int(time.time()) + SESSION_MINUTES * 60,
        }
        try:
            session = await self.client().v1.checkout.sessions.create_async(params)
        except stripe.APIConnectionError as error:
            log.warning("stripe_unreachable", pack=name, error=str(error).splitlines()[0])
            raise PaymentError("Stripe cannot be reached right now. Please try again in a few minutes.") from None
        except stripe.StripeError as error:
            log.error("stripe_refused", pack=name, status=error.http_status, code=error.code,
                      message=error.user_message or str(error)[:300])
            raise PaymentError("Stripe refused to open a payment page; the operator can see why in the bot's "
                               "log. Please try again later.") from None
        await self.store.add_checkout_session(CheckoutSession(
            session_id=session.id, guild_id=guild_id, user_id=user_id, pack=name, credits=pack.credits,
            amount=pack.amount, currency=pack.currency))
        log.info("checkout_opened", session_id=session.id, guild_id=guild_id, user_id=user_id, pack=name)
        return Offer(name, pack.credits, price_text(pack.amount, pack.currency), session.url)

    def _url(self, outcome: str, return_url: str) -> str:
        """Where Stripe sends the buyer after paying (or not): the web app's page, else back to Discord."""
        base = self.settings.web_base_url
        return f"{base}/credits/{outcome}" if base else return_url


PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
TAKEN_BACK = {"charge.refunded": "refunded", "charge.dispute.created": "disputed"}


def _id(value: Any) -> str | None:
    """An id field that Stripe may send as a string or, expanded, as an object."""
    if value is None or isinstance(value, str):
        return value
    return value.get("id")


async def handle(store, event: Any) -> str:
    """Apply one verified event (a stripe.Event's to_dict()); what was done, in one word, for the log
    and the response: credited, taken_back, noted, replay, unpaid, unknown_session, ignored."""
    kind, obj = event["type"], event["data"]["object"]
    payment_id = _id(obj.get("payment_intent")) if kind in PAID or kind in TAKEN_BACK else None
    fields = {"event_id": event["id"], "type": kind, "payment_id": payment_id}
    if await store.note_payment_event(event["id"], kind, payment_id, float(event.get("created") or 0)):
        log.info("stripe_event", outcome="replay", **fields)
        return "replay"
    if kind in PAID and obj.get("payment_status") != "paid":
        outcome = "unpaid"  # a payment still on its way (a bank debit): its _succeeded event credits
    elif kind in PAID:
        outcome = await _credit(store, obj, payment_id, fields)
    elif kind in TAKEN_BACK:
        session = await store.checkout_session_of_payment(payment_id) if payment_id else None
        outcome = await _take_back(store, session, TAKEN_BACK[kind], fields) if session else "noted"
    else:
        outcome = "ignored"
    await store.finish_payment_event(event["id"])
    log.info("stripe_event", outcome=outcome, **fields)
    return outcome


async def _credit(store, obj: Any, payment_id: str | None, fields: dict) -> str:
    session = await store.complete_checkout_session(obj["id"], payment_id) if payment_id else None
    if session is None and payment_id and (recovered := _from_metadata(obj)) is not None:
        # the bot's record is gone (a database restored from an older backup): the signed metadata says who
        log.warning("stripe_session_from_metadata", session_id=obj["id"], **fields)
        await store.add_checkout_session(recovered)
        session = await store.complete_checkout_session(obj["id"], payment_id)
    if session is None:  # not a session this bot opened (another app on the same Stripe account)
        log.warning("stripe_unknown_session", session_id=obj.get("id"), **fields)
        return "unknown_session"
    if session.payment_id != payment_id:
        log.error("stripe_session_paid_twice", session_id=session.session_id, first=session.payment_id, **fields)
        return "unknown_session"
    entry = await store.add_credits(session.guild_id, session.user_id, "purchase", session.credits,
                                    f"bought {session.pack} ({price_text(session.amount, session.currency)})",
                                    payment_id=payment_id)
    if entry is not None:
        log.info("credits_bought", guild_id=session.guild_id, user_id=session.user_id, credits=session.credits,
                 balance=entry.balance, **fields)
    earlier = [TAKEN_BACK[kind] for kind in await store.payment_event_types(payment_id) if kind in TAKEN_BACK]
    if earlier:  # refunded or disputed before the purchase reached us
        await _take_back(store, session, earlier[0], fields)
        return "taken_back"
    return "credited"


def _from_metadata(obj: Any) -> CheckoutSession | None:
    """The session as `_open` described it in its metadata, or None when it is not one of the bot's."""
    who = obj.get("metadata") or {}
    try:
        return CheckoutSession(obj["id"], int(who["guild_id"]), int(who["user_id"]), str(who["pack"]),
                               int(who["credits"]), int(obj["amount_total"]), str(obj["currency"]))
    except (KeyError, TypeError, ValueError):
        return None


async def _take_back(store, session, why: str, fields: dict) -> str:
    entry = await store.add_credits(session.guild_id, session.user_id, "chargeback", -session.credits,
                                    f"payment {why} ({session.pack})", payment_id=session.payment_id)
    if entry is not None:
        log.warning("credits_taken_back", guild_id=session.guild_id, user_id=session.user_id,
                    credits=session.credits, balance=entry.balance, why=why, **fields)
    return "taken_back"
