"""Stripe's webhook on the web app (web/stripe_webhook.py) and Checkout (jobs/payments.py), against the
fake Stripe API on 127.0.0.1 (tests/fakes/stripe.py) that the SDK is pointed at with STRIPE_API_BASE.

Events are signed with a test secret the way Stripe signs them; forged, tampered, old, replayed,
duplicated and reordered ones are posted as Stripe (or an attacker) would, and what a buyer ends up
with is read from the real credits ledger, also after the bot restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jobs.payments import Checkout, PaymentError
from store import Store
from tests.conftest import make_settings
from tests.fakes.stripe import FakeStripe, signed
from web.app import make_app

SECRET = "whsec_test_0123456789abcdef"
KEY = "sk_test_fake"
GUILD, BUYER = 5001, 1001
PACKS = {"small": {"credits": 100, "amount": 500, "currency": "usd", "description": "A hundred credits"},
         "large": {"credits": 1200, "amount": 5000, "currency": "usd"}}


class Site:
    """The web app on a real store, the fake Stripe, and Checkout pointed at it; `restart` reopens
    the store and the app on the same file, as a restarted bot does."""

    def __init__(self, tmp_path: Path, fake: FakeStripe, **overrides) -> None:
        self.fake = fake
        values = {"credits_enabled": True, "stripe_secret_key": KEY, "stripe_webhook_secret": SECRET,
                  "stripe_api_base": fake.base_url, "credit_packs": PACKS, **overrides}
        self.settings = make_settings(tmp_path, **values)
        self.store: Store | None = None
        self.client: TestClient | None = None

    async def start(self) -> None:
        self.store = Store(self.settings.data_dir / "bot.sqlite3")
        await self.store.open()
        self.client = TestClient(TestServer(make_app(self.store, self.settings), host="127.0.0.1"))
        await self.client.start_server()
        self.checkout = Checkout(self.settings, self.store)

    async def stop(self) -> None:
        await self.checkout.close()
        await self.client.close()
        await self.store.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def post(self, event: dict, *, secret: str = SECRET, timestamp: int | None = None,
                   body: bytes | None = None, header: str | None = None) -> tuple[int, str]:
        signed_body, signature = signed(event, secret, timestamp=timestamp)
        response = await self.client.post("/stripe/webhook", data=signed_body if body is None else body,
                                          headers={"Stripe-Signature": signature if header is None else header,
                                                   "Content-Type": "application/json"})
        return response.status, await response.text()

    async def bought(self) -> dict:
        """The buyer opens the small pack's page and pays: the event Stripe then sends."""
        [offer] = await self.checkout.open_sessions(GUILD, BUYER, "https://discord.com/channels/5001/9", ["small"])
        return self.fake.paid(offer.url.rsplit("/", 1)[1].split("#")[0])

    async def balance(self) -> int:
        return await self.store.balance(GUILD, BUYER)


@pytest.fixture
async def site(tmp_path: Path):
    fake = FakeStripe(KEY)
    await fake.start()
    opened = Site(tmp_path, fake)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.stop()
        await fake.stop()


async def test_checkout_asks_stripe_for_a_payment_page_per_pack_naming_the_buyer(site: Site) -> None:
    offers = await site.checkout.open_sessions(GUILD, BUYER, "https://discord.com/channels/5001/9")
    assert [(o.pack, o.credits, o.price) for o in offers] == [("small", 100, "5.00 USD"), ("large", 1200, "50.00 USD")]
    assert all(o.url.startswith("https://checkout.stripe.com/c/pay/cs_test_") for o in offers)
    sent = site.fake.requests[0]
    assert sent["mode"] == "payment" and sent["client_reference_id"] == f"{GUILD}:{BUYER}"
    assert sent["line_items"] == [{"quantity": "1", "price_data": {
        "currency": "usd", "unit_amount": "500",
        "product_data": {"name": "100 credits (small)", "description": "A hundred credits"}}}]
    who = {"guild_id": str(GUILD), "user_id": str(BUYER), "pack": "small", "credits": "100"}
    assert sent["metadata"] == who and sent["payment_intent_data"] == {"metadata": who}
    assert sent["success_url"] == sent["cancel_url"] == "https://discord.com/channels/5001/9"  # no WEB_BASE_URL
    assert int(sent["expires_at"]) > time.time() + 3000
    recorded = await site.store.checkout_session(offers[0].url.rsplit("/", 1)[1].split("#")[0])
    assert (recorded.guild_id, recorded.user_id, recorded.pack, recorded.credits) == (GUILD, BUYER, "small", 100)


async def test_a_paid_session_credits_the_buyer_once_also_across_a_restart(site: Site) -> None:
    event = await site.bought()
    status, text = await site.post(event)
    assert status == 200 and '"credited"' in text
    assert await site.balance() == 100
    assert (await site.post(event))[0] == 200  # Stripe sends it again
    await site.restart()
    status, text = await site.post(event)  # and again, to the restarted bot
    assert status == 200 and '"replay"' in text
    assert await site.balance() == 100
    assert [e.kind for e in await site.store.credit_history(GUILD, BUYER)] == ["purchase"]


async def test_forged_tampered_and_old_events_are_refused_and_change_nothing(site: Site) -> None:
    event = await site.bought()
    assert (await site.post(event, secret="whsec_someone_else"))[0] == 400
    body, signature = signed(event, SECRET)
    tampered = body.replace(b'"livemode": false', b'"livemode": true')
    assert (await site.post(event, body=tampered, header=signature))[0] == 400
    assert (await site.post(event, header=""))[0] == 400
    assert (await site.post(event, header="t=1,v1=00"))[0] == 400
    status, text = await site.post(event, timestamp=int(time.time()) - 600)  # signed, but ten minutes old
    assert status == 400 and "too old" in text
    assert await site.balance() == 0
    assert (await site.post(event))[0] == 200  # the genuine delivery still counts
    assert await site.balance() == 100


async def test_a_refund_and_a_dispute_take_the_credits_back_once(site: Site) -> None:
    event = await site.bought()
    await site.post(event)
    payment = event["data"]["object"]["payment_intent"]
    refund = site.fake.refunded(payment)
    assert (await site.post(refund))[0] == 200
    assert (await site.post(refund))[0] == 200
    assert (await site.post(site.fake.disputed(payment)))[0] == 200
    assert await site.balance() == 0
    assert [(e.kind, e.amount) for e in await site.store.credit_history(GUILD, BUYER)] == [("chargeback", -100),
                                                                                           ("purchase", 100)]


async def test_a_dispute_arriving_before_the_payment_leaves_nothing_credited(site: Site) -> None:
    event = await site.bought()
    dispute = site.fake.disputed(event["data"]["object"]["payment_intent"])
    status, text = await site.post(dispute)
    assert status == 200 and '"noted"' in text
    await site.restart()
    status, text = await site.post(event)
    assert status == 200 and '"taken_back"' in text
    assert await site.balance() == 0


async def test_events_that_are_not_json_or_not_handled(site: Site) -> None:
    body = b"not json"
    _, signature = signed({}, SECRET)
    stamp = signature.split(",")[0][2:]
    header = f"t={stamp},v1=" + hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    status, text = await site.post({}, body=body, header=header)
    assert status == 400 and "not JSON" in text
    status, text = await site.post(site.fake._event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert status == 200 and '"ignored"' in text


async def test_the_webhook_is_off_without_its_secret(tmp_path: Path) -> None:
    fake = FakeStripe(KEY)
    await fake.start()
    site = Site(tmp_path, fake, stripe_webhook_secret=None)
    await site.start()
    try:
        status, text = await site.post(await site.bought())
        assert status == 503 and "STRIPE_WEBHOOK_SECRET" in text
        assert await site.balance() == 0
    finally:
        await site.stop()
        await fake.stop()


async def test_checkout_returns_to_the_web_apps_pages(tmp_path: Path) -> None:
    fake = FakeStripe(KEY)
    await fake.start()
    site = Site(tmp_path, fake, web_base_url="https://bot.example.org")
    await site.start()
    try:
        await site.bought()
        assert fake.requests[0]["success_url"] == "https://bot.example.org/credits/thanks"
        assert fake.requests[0]["cancel_url"] == "https://bot.example.org/credits/cancelled"
        for path, words in (("/credits/thanks", "/credits balance"), ("/credits/cancelled", "Nothing was charged")):
            response = await site.client.get(path)
            assert response.status == 200 and words in await response.text()
    finally:
        await site.stop()
        await fake.stop()


async def test_checkout_says_why_when_stripe_refuses_or_cannot_be_reached(site: Site) -> None:
    site.fake.fail_with = 500
    with pytest.raises(PaymentError, match="Stripe refused to open a payment page"):
        await site.bought()
    site.fake.api_key = "sk_test_another"
    with pytest.raises(PaymentError, match="Stripe refused"):
        await site.bought()
    await site.fake.stop()  # nothing listens there now
    with pytest.raises(PaymentError, match="Stripe cannot be reached right now"):
        await site.bought()
    assert await site.store.balance(GUILD, BUYER) == 0


async def test_checkout_says_why_when_buying_is_off_or_there_are_no_packs(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.sqlite3")
    off = Checkout(make_settings(tmp_path, credit_packs=PACKS, credits_enabled=True), store)
    with pytest.raises(PaymentError, match="Buying credits is off on this bot"):
        await off.open_sessions(GUILD, BUYER, "https://discord.com/channels/5001/9")
    no_credits = Checkout(make_settings(tmp_path, stripe_secret_key=KEY, credit_packs=PACKS), store)
    with pytest.raises(PaymentError, match="Buying credits is off on this bot"):
        await no_credits.open_sessions(GUILD, BUYER, "https://discord.com/channels/5001/9")
    empty = Checkout(make_settings(tmp_path, stripe_secret_key=KEY, credits_enabled=True), store)
    with pytest.raises(PaymentError, match="There are no credit packs for sale"):
        await empty.open_sessions(GUILD, BUYER, "https://discord.com/channels/5001/9")
