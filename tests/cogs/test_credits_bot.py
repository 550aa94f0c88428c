"""Credits through the fake Discord and the fake ComfyUI: off by default; on, a job's price is shown before it
runs, reserved when it queues and spent when it ends, refunded in full when it fails or is cancelled, refused in
words when the person has too few (nothing reaches ComfyUI); gifts, admins granting and taking back (audited),
and the daily allowance."""

from __future__ import annotations

from tests.bot_harness import bot_settings, custom_ids, result_of

ANN, BOB, ADMIN, MANAGE_GUILD = "5001", "6001", "7001", str(1 << 5)


def settings_for(tmp_path, url, **more):
    return bot_settings(tmp_path, url, credits_enabled=True, credit_pixels=64 * 64,
                        credit_prices={"txt2img": 1, "upscale": 2}, **more)


async def said(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    message = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)
    return message.content


def contents(message) -> list[str]:
    """Every text the message showed, edit by edit."""
    return [str(entry["payload"].get("content")) for entry in message.history
            if isinstance(entry.get("payload"), dict) and entry["payload"].get("content")]


async def credits(discord_fake, command: str, options: dict | None = None, user_id: str = ANN, **acting) -> str:
    return await said(discord_fake, await discord_fake.slash(f"credits {command}", options or {}, user_id=user_id,
                                                             **acting))


async def grant(discord_fake, person: str, amount: int, reason: str = "welcome") -> str:
    return await credits(discord_fake, "grant", {"person": person, "amount": amount, "reason": reason},
                         user_id=ADMIN, username="carol", permissions=MANAGE_GUILD)


async def test_credits_are_off_unless_the_operator_turns_them_on(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    assert await credits(discord_fake, "balance") == "Credits are off on this bot: every job is free."
    started = await discord_fake.slash("generate", {"prompt": "free", "width": 64, "height": 64})
    result = await result_of(discord_fake, started)
    assert result.attachments
    assert not any("credit" in text for text in contents(discord_fake.messages[started.original_message_id]))


async def test_a_job_costs_what_it_says_and_a_failed_or_cancelled_one_is_refunded(comfy, discord_fake, running,
                                                                                 tmp_path):
    await running.start(settings_for(tmp_path, comfy.url))
    assert await grant(discord_fake, ANN, 3) == f"Gave 3 credits to <@{ANN}> (welcome); their balance is 3."
    assert (await credits(discord_fake, "balance")).startswith("You have **3 credits** here.")

    comfy.node_delay = 0.3
    started = await discord_fake.slash("generate", {"prompt": "a fox", "width": 64, "height": 64})
    await started.wait_acked(3)
    await discord_fake.wait_for(
        lambda: any(text.startswith("This costs 1 credit; you have 2 left.\n")
                    for text in contents(discord_fake.messages[started.original_message_id])), timeout=10)
    assert (await result_of(discord_fake, started)).attachments
    comfy.node_delay = 0

    comfy.fail_node("ImageAddNoise", exception_message="CUDA out of memory")
    failed = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "a", "width": 64,
                                                                                 "height": 64}))
    assert failed.content.startswith(f"❌ <@{ANN}>, your image could not be made")
    assert await running.bot.store.balance(int(discord_fake.guild_id), int(ANN)) == 2  # refunded in full

    refused = await discord_fake.slash("generate", {"prompt": "many", "width": 64, "height": 64, "batch": 4})
    prompts = len(comfy.prompts)
    assert await said(discord_fake, refused) == (
        "❌ Your image could not be made: this costs 4 credits and you have 2 credits. /credits buy adds more where "
        "the operator sells them, and someone can give you theirs with /credits gift.")
    assert len(comfy.prompts) == prompts  # nothing reached ComfyUI
    comfy.node_delay = 1.0
    slow = await discord_fake.slash("generate", {"prompt": "slow", "width": 64, "height": 64})
    await slow.wait_acked(3)
    await discord_fake.wait_for(lambda: custom_ids(discord_fake.messages[slow.original_message_id]), timeout=10)
    (cancel,) = custom_ids(discord_fake.messages[slow.original_message_id])
    await said(discord_fake, await discord_fake.click(slow.original_message_id, cancel))
    await discord_fake.wait_for(
        lambda: discord_fake.messages[slow.original_message_id].content.startswith("🚫"), timeout=10)
    assert await running.bot.store.balance(int(discord_fake.guild_id), int(ANN)) == 2  # refunded in full
    comfy.node_delay = 0
    history = (await credits(discord_fake, "history")).splitlines()[2:]
    assert [line.split("> ", 1)[1] for line in history] == [
        "+1 refunded (job 2) · balance 2", "-1 job queued (job 2) · balance 1", "+0 job done (job 1) · balance 2",
        "-1 job queued (job 1) · balance 2", "+3 granted: welcome · balance 3"]


async def test_gifts_take_backs_debts_and_the_daily_allowance(comfy, discord_fake, running, tmp_path, monkeypatch):
    await running.start(settings_for(tmp_path, comfy.url, credits_daily_allowance=2))
    await grant(discord_fake, ANN, 5)
    assert await credits(discord_fake, "gift", {"person": BOB, "amount": 4}) == \
        f"Gave 4 credits to <@{BOB}>; you have 1 left."
    assert await credits(discord_fake, "gift", {"person": BOB, "amount": 9}) == \
        "You have 1 credit, fewer than 9: nothing was given."
    assert await credits(discord_fake, "gift", {"person": ANN, "amount": 1}) == \
        "Give credits to another person here (not yourself, not a bot)."
    assert await credits(discord_fake, "grant", {"person": ANN, "amount": 5, "reason": "x"}, user_id=BOB) == \
        "Only admins (Manage Server) can grant or take back credits."
    assert await credits(discord_fake, "take", {"person": ANN, "amount": 4, "reason": "spam"}, user_id=ADMIN,
                         username="carol", permissions=MANAGE_GUILD) == \
        f"Took back 4 credits from <@{ANN}> (spam); their balance is -3."
    audit = await running.bot.store.audit_log(int(discord_fake.guild_id))
    assert [(entry["action"], entry["details"]["amount"]) for entry in audit[:3]] == [
        ("credits take", 4), ("credits grant", 5)]
    assert "You owe the bot credits" in await credits(discord_fake, "balance")
    owed = await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64})
    assert "you have -1 credits (you owe the bot credits)" in await said(discord_fake, owed)  # -3 + the allowance 2
    # Bob's first paid job today brings the allowance first: 4 + 2 - 1
    assert (await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "y", "width": 64, "height": 64}, user_id=BOB))).attachments
    assert await running.bot.store.balance(int(discord_fake.guild_id), int(BOB)) == 5
    # the next day: what is left of yesterday's free credits expires (all 2: free credits are spent last),
    # then today's come
    monkeypatch.setattr("jobs.credits.today", lambda: "2999-01-01")
    assert (await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "z", "width": 64, "height": 64}, user_id=BOB))).attachments
    assert await running.bot.store.balance(int(discord_fake.guild_id), int(BOB)) == 4
    lines = [line.split("> ", 1)[1] for line in (await credits(discord_fake, "history", user_id=BOB)).splitlines()]
    assert [line for line in lines if "job done" not in line][:4] == [
        "-1 job queued (job 3) · balance 4", "+2 daily allowance · balance 5", "-2 expired · balance 3",
        "-1 job queued (job 2) · balance 5"]
