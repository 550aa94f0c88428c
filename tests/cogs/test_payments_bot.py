"""/credits buy through the fake Discord, with the fake Stripe API on 127.0.0.1 (tests/fakes/stripe.py):
the buyer gets a private answer with a Stripe Checkout button per pack, each a session naming them and
their server; or, in words, why not (buying off, no packs, Stripe unreachable). What the payment then
does is tests/web/test_stripe_webhook.py's; one test here follows a purchase from /credits buy through the
bot's own web app to /credits balance, and its refund."""

from __future__ import annotations

import aiohttp
import pytest

from tests.bot_harness import bot_settings
from tests.fakes.stripe import FakeStripe, signed
from tests.web.test_api_bot import free_port

KEY = "sk_test_fake"
SECRET = "whsec_test_bot"
PACKS = {"small": {"credits": 100, "amount": 500, "currency": "usd"},
         "large": {"credits": 1200, "amount": 5000, "currency": "eur", "description": "The most for the money"}}


@pytest.fixture
async def stripe_fake():
    fake = FakeStripe(KEY)
    await fake.start()
    yield fake
    await fake.stop()


async def answer(discord_fake, interaction):
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)


async def test_buy_answers_privately_with_a_checkout_button_per_pack(tmp_path, comfy, discord_fake, running,
                                                                     stripe_fake):
    await running.start(bot_settings(tmp_path, comfy.url, credits_enabled=True, stripe_secret_key=KEY,
                                     stripe_api_base=stripe_fake.base_url, credit_packs=PACKS))
    shown = await answer(discord_fake, await discord_fake.slash("credits buy", user_id="5001"))

    assert shown.ephemeral
    [embed] = shown.embeds
    assert embed["title"] == "Buy credits"
    assert "**small**: 100 credits: 5.00 USD" in embed["description"]
    assert "**large**: 1200 credits: 50.00 EUR" in embed["description"]
    buttons = [item for row in shown.components for item in row["components"]]
    assert [(b["label"], b["style"]) for b in buttons] == [("Buy 100 credits: 5.00 USD", 5),
                                                          ("Buy 1200 credits: 50.00 EUR", 5)]
    assert [b["url"] for b in buttons] == [s["url"] for s in stripe_fake.sessions.values()]
    for sent, pack in zip(stripe_fake.requests, PACKS, strict=True):
        assert sent["client_reference_id"] == f"{discord_fake.guild_id}:5001"
        assert sent["metadata"]["pack"] == pack and sent["metadata"]["user_id"] == "5001"
        assert sent["success_url"] == f"https://discord.com/channels/{discord_fake.guild_id}/{shown.channel_id}"
    recorded = [await running.bot.store.checkout_session(s) for s in stripe_fake.sessions]
    assert [(r.user_id, r.pack, r.credits, r.amount, r.currency) for r in recorded] == [
        (5001, "small", 100, 500, "usd"), (5001, "large", 1200, 5000, "eur")]


@pytest.mark.parametrize("settings, words", [
    ({"credits_enabled": True}, "Buying credits is off on this bot"),
    ({"credits_enabled": True, "stripe_secret_key": KEY}, "There are no credit packs for sale on this bot yet"),
    ({"credits_enabled": True, "stripe_secret_key": KEY, "credit_packs": PACKS,
      "stripe_api_base": "http://127.0.0.1:9"}, "Stripe cannot be reached right now"),
])
async def test_buy_says_why_there_is_no_link(tmp_path, comfy, discord_fake, running, settings, words):
    await running.start(bot_settings(tmp_path, comfy.url, **settings))
    shown = await answer(discord_fake, await discord_fake.slash("credits buy"))
    assert shown.ephemeral and words in shown.content and not shown.components


async def test_a_paid_and_then_refunded_purchase_shows_in_credits_balance(tmp_path, comfy, discord_fake, running,
                                                                          stripe_fake):
    port = free_port()
    await running.start(bot_settings(tmp_path, comfy.url, credits_enabled=True, stripe_secret_key=KEY,
                                     stripe_webhook_secret=SECRET, stripe_api_base=stripe_fake.base_url,
                                     credit_packs={"small": PACKS["small"]}, web_port=port))
    await answer(discord_fake, await discord_fake.slash("credits buy"))
    [session_id] = stripe_fake.sessions
    completed = stripe_fake.paid(session_id)
    refund = stripe_fake.refunded(completed["data"]["object"]["payment_intent"])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def deliver(event: dict) -> int:
            body, signature = signed(event, SECRET)
            async with http.post(f"http://127.0.0.1:{port}/stripe/webhook", data=body,
                                 headers={"Stripe-Signature": signature}) as response:
                return response.status

        assert [await deliver(completed), await deliver(completed)] == [200, 200]
        balance = await answer(discord_fake, await discord_fake.slash("credits balance"))
        assert "You have **100 credits** here." in balance.content
        assert await deliver(refund) == 200
    balance = await answer(discord_fake, await discord_fake.slash("credits balance"))
    assert "You have **0 credits** here." in balance.content
