"""Payments in the store, on both engines: Checkout sessions (store/payments.py and its twins), the webhook
events noted once each, and what jobs/payments.py makes of Stripe's events against the real credits
ledger: a purchase credited once however often and in whatever order the events come, and taken back
once on a refund or a dispute."""

from __future__ import annotations

import asyncio

from jobs.payments import handle
from store import PostgresStore, Store
from store.payments import CheckoutSession
from tests.fakes.stripe import FakeStripe

GUILD, BUYER = 41, 7


def session(session_id: str = "cs_test_1", credits: int = 100) -> CheckoutSession:
    return CheckoutSession(session_id, GUILD, BUYER, "small", credits, 500, "usd")


async def test_a_session_is_recorded_once_and_completed_with_its_first_payment(
        any_store: Store | PostgresStore) -> None:
    recorded = await any_store.add_checkout_session(session())
    assert (recorded.session_id, recorded.user_id, recorded.credits, recorded.payment_id) == ("cs_test_1", BUYER, 100,
                                                                                               None)
    assert recorded.created_at > 0
    again = await any_store.add_checkout_session(session(credits=999))  # the same id: nothing changes
    assert again == recorded
    assert await any_store.checkout_session("cs_test_1") == recorded
    assert await any_store.checkout_session("cs_test_nope") is None
    assert await any_store.complete_checkout_session("cs_test_nope", "pi_1") is None

    paid = await any_store.complete_checkout_session("cs_test_1", "pi_1")
    assert paid.payment_id == "pi_1" and paid.completed_at is not None
    assert (await any_store.complete_checkout_session("cs_test_1", "pi_2")).payment_id == "pi_1"  # the first stays
    assert await any_store.checkout_session_of_payment("pi_1") == paid
    assert await any_store.checkout_session_of_payment("pi_2") is None


async def test_an_event_is_a_replay_only_once_it_was_handled(any_store: Store | PostgresStore) -> None:
    assert not await any_store.note_payment_event("evt_1", "charge.refunded", "pi_1", 100.0)
    assert not await any_store.note_payment_event("evt_1", "charge.refunded", "pi_1", 100.0)  # noted, not handled
    await any_store.finish_payment_event("evt_1")
    assert await any_store.note_payment_event("evt_1", "charge.refunded", "pi_1", 100.0)
    assert not await any_store.note_payment_event("evt_2", "charge.dispute.created", "pi_1", 90.0)
    assert not await any_store.note_payment_event("evt_3", "customer.created", None, 80.0)
    assert await any_store.payment_event_types("pi_1") == ["charge.dispute.created", "charge.refunded"]
    assert await any_store.payment_event_types("pi_9") == []


async def opened(store, fake: FakeStripe, credits: int = 100) -> str:
    """A session opened on the fake (as Checkout would) and recorded as the bot records it."""
    session_id = "cs_test_" + str(len(fake.sessions))
    fake.sessions[session_id] = {"id": session_id, "object": "checkout.session", "payment_intent": None,
                                 "amount_total": 500, "status": "open", "payment_status": "unpaid"}
    await store.add_checkout_session(session(session_id, credits))
    return session_id


async def test_a_purchase_is_credited_once_however_often_stripe_sends_it(any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    completed = fake.paid(await opened(any_store, fake))
    assert await handle(any_store, completed) == "credited"
    assert await handle(any_store, completed) == "replay"
    assert await any_store.balance(GUILD, BUYER) == 100
    # the same payment in another event (checkout.session.async_payment_succeeded after completed): once still
    again = {**completed, "id": "evt_other", "type": "checkout.session.async_payment_succeeded"}
    assert await handle(any_store, again) == "credited"
    assert await any_store.balance(GUILD, BUYER) == 100
    history = await any_store.credit_history(GUILD, BUYER)
    assert [(e.kind, e.amount, e.reason) for e in history] == [("purchase", 100, "bought small (5.00 USD)")]


async def test_a_redelivery_after_a_stop_midway_is_handled_again_and_credits_once(
        any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    completed = fake.paid(await opened(any_store, fake))
    # the bot stopped after noting the event and crediting, before marking it handled
    payment = completed["data"]["object"]["payment_intent"]
    await any_store.note_payment_event(completed["id"], completed["type"], payment, completed["created"])
    await any_store.add_credits(GUILD, BUYER, "purchase", 100, "bought small", payment_id=payment)
    assert await handle(any_store, completed) == "credited"
    assert await handle(any_store, completed) == "replay"
    assert await any_store.balance(GUILD, BUYER) == 100


async def test_an_unpaid_or_unknown_session_credits_nothing(any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    pending = fake.paid(await opened(any_store, fake), status="unpaid")  # a bank transfer, still on its way
    assert await handle(any_store, pending) == "unpaid"
    fake.sessions["cs_test_other_app"] = {"id": "cs_test_other_app", "payment_intent": None}
    assert await handle(any_store, fake.paid("cs_test_other_app")) == "unknown_session"
    assert await handle(any_store, fake._event("customer.created", {"id": "cus_1"})) == "ignored"
    assert await any_store.balance(GUILD, BUYER) == 0
    # the payment arrives later: now it is credited
    assert await handle(any_store, fake.paid(pending["data"]["object"]["id"],
                                                    kind="checkout.session.async_payment_succeeded")) == "credited"
    assert await any_store.balance(GUILD, BUYER) == 100


async def test_a_paid_session_missing_from_the_store_is_credited_from_its_signed_metadata(
        any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()  # the database was restored from a backup older than the session
    fake.sessions["cs_test_lost"] = {"id": "cs_test_lost", "object": "checkout.session", "payment_intent": None,
                                     "amount_total": 5000, "currency": "eur", "metadata": {
                                         "guild_id": str(GUILD), "user_id": str(BUYER), "pack": "large",
                                         "credits": "1200"}}
    assert await handle(any_store, fake.paid("cs_test_lost")) == "credited"
    assert await any_store.balance(GUILD, BUYER) == 1200
    recorded = await any_store.checkout_session("cs_test_lost")
    assert (recorded.pack, recorded.amount, recorded.currency) == ("large", 5000, "eur")
    assert [e.reason for e in await any_store.credit_history(GUILD, BUYER)] == ["bought large (50.00 EUR)"]


async def test_a_refund_and_a_dispute_take_the_credits_back_once(any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    completed = fake.paid(await opened(any_store, fake))
    payment = completed["data"]["object"]["payment_intent"]
    await handle(any_store, completed)
    await any_store.add_credits(GUILD, BUYER, "take", -70, "spent on jobs")  # 30 left

    refund = fake.refunded(payment)
    assert await handle(any_store, refund) == "taken_back"
    assert await handle(any_store, refund) == "replay"
    assert await handle(any_store, fake.disputed(payment)) == "taken_back"  # already taken: nothing more
    assert await any_store.balance(GUILD, BUYER) == -70  # below zero: paid jobs are refused until it is not
    kinds = [(e.kind, e.amount) for e in await any_store.credit_history(GUILD, BUYER)]
    assert kinds == [("chargeback", -100), ("take", -70), ("purchase", 100)]


async def test_a_refund_before_its_purchase_takes_the_purchase_back_when_it_arrives(
        any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    completed = fake.paid(await opened(any_store, fake))
    dispute = fake.disputed(completed["data"]["object"]["payment_intent"])
    assert await handle(any_store, dispute) == "noted"
    assert await any_store.balance(GUILD, BUYER) == 0
    assert await handle(any_store, completed) == "taken_back"
    assert await handle(any_store, completed) == "replay"
    assert await handle(any_store, dispute) == "replay"
    assert await any_store.balance(GUILD, BUYER) == 0
    assert [e.kind for e in await any_store.credit_history(GUILD, BUYER)] == ["chargeback", "purchase"]


async def test_a_purchase_and_its_refund_at_the_same_time_end_at_zero(any_store: Store | PostgresStore) -> None:
    fake = FakeStripe()
    for _ in range(5):
        completed = fake.paid(await opened(any_store, fake))
        refund = fake.refunded(completed["data"]["object"]["payment_intent"])
        await asyncio.gather(handle(any_store, completed), handle(any_store, refund),
                             handle(any_store, completed))
    assert await any_store.balance(GUILD, BUYER) == 0
    kinds = sorted(e.kind for e in await any_store.credit_history(GUILD, BUYER))
    assert kinds == ["chargeback"] * 5 + ["purchase"] * 5
