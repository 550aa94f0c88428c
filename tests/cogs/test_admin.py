"""/admin and /usage through the fake Discord and the fake ComfyUI: each action and who may use it,
each limit at its edge, moderation both ways, and the audit log."""

from __future__ import annotations

import asyncio

from tests.bot_harness import bot_settings, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI

ALICE, BOB, CAROL = "5001", "6001", "7001"
MANAGE_GUILD, MANAGE_MESSAGES = str(1 << 5), str(1 << 13)
MODLOG = "3500"


async def said(discord_fake, interaction) -> str:
    await interaction.wait_acked(3)
    message = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading, timeout=10)
    return message.content


async def admin(discord_fake, command: str, options: dict | None = None, **who) -> str:
    who = who or {"user_id": CAROL, "username": "carol", "permissions": MANAGE_GUILD}
    return await said(discord_fake, await discord_fake.slash(f"admin {command}", options or {}, **who))


async def generate(discord_fake, prompt: str = "a cat", user_id: str = ALICE, **options):
    return await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": prompt, "width": 64, "height": 64, **options}, user_id=user_id,
        username=f"user{user_id}"), timeout=20)


async def test_only_admins_and_server_managers_steer_the_bot(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, admin_user_ids=[int(BOB)]))
    assert await admin(discord_fake, "pause", user_id=ALICE, username="alice") == \
        "Only admins of this bot, or members who may manage this server, can do that."
    assert await admin(discord_fake, "pause", {"everywhere": True}) == \
        "Only the bot's own admins (ADMIN_USER_IDS) can do that: it affects every server."
    assert await admin(discord_fake, "drain", {"server": 1}) == \
        "Only the bot's own admins (ADMIN_USER_IDS) can do that: it affects every server."
    assert await admin(discord_fake, "pause", {"everywhere": True}, user_id=BOB, username="bob") == \
        "⏸️ Paused: no new jobs start on every server; they wait, and running ones finish. /admin resume starts " \
        "them again."
    assert await admin(discord_fake, "resume", {"everywhere": True}, user_id=BOB, username="bob") == \
        "▶️ Resumed: jobs start again on every server."


async def test_a_paused_queue_holds_jobs_until_resumed_even_across_a_restart(comfy, discord_fake, running, tmp_path):
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    assert (await admin(discord_fake, "pause")).startswith("⏸️ Paused: no new jobs start on this server")
    await running.stop()
    await running.start(settings)  # the pause is in the store
    waiting = await discord_fake.slash("generate", {"prompt": "patient", "width": 64, "height": 64})
    await waiting.wait_acked(3)
    await asyncio.sleep(0.5)
    assert comfy.prompts == {} and list(running.bot.scheduler.waiting_jobs())
    assert await admin(discord_fake, "resume") == "▶️ Resumed: jobs start again on this server."
    assert (await result_of(discord_fake, waiting, timeout=20)).attachments


async def test_blocked_members_and_blocked_terms_are_refused_in_words(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    assert await admin(discord_fake, "block", {"member": ALICE, "reason": "spam"}) == \
        f"⛔ <@{ALICE}> can no longer use the bot here."
    refused = await generate(discord_fake)
    assert refused.content == "❌ Your image could not be made: a moderator blocked you from using this bot here."
    assert await admin(discord_fake, "unblock", {"member": ALICE}) == f"<@{ALICE}> can use the bot here again."
    assert (await generate(discord_fake)).attachments

    assert await admin(discord_fake, "terms add", {"term": "Forbidden Fruit"}) == \
        "Added: prompts with it are refused here, without quoting it."
    assert (await admin(discord_fake, "terms add", {"term": r"w[a@]rez\d+", "regex": True})).startswith("Added")
    assert (await admin(discord_fake, "terms add", {"term": "([", "regex": True})).startswith(
        "That is not a regular expression Python reads")
    sentence = ("❌ Your image could not be made: your prompt has a word or phrase this server does not allow; "
                "change it and try again.")
    for prompt, options in [("a FORBIDDEN fruit bowl", {}), ("a cat", {"negative_prompt": "warez42"})]:
        assert (await generate(discord_fake, prompt, **options)).content == sentence
    assert (await generate(discord_fake, "forbidden fruitcake")).attachments  # whole words only
    listed = await admin(discord_fake, "terms list")
    assert listed == "• `Forbidden Fruit`\n• `w[a@]rez\\d+` (regular expression)"
    assert await admin(discord_fake, "terms remove", {"term": "Forbidden Fruit"}) == "Removed."
    assert (await generate(discord_fake, "a forbidden fruit bowl")).attachments


async def test_quotas_refuse_at_their_edge_and_say_when_they_reset(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, server_prices={comfy.url: 3600.0}))
    assert await admin(discord_fake, "quota", {"period": "day", "unit": "images", "limit": 3}) == \
        "Limit set: each member, 3 images per day."
    await generate(discord_fake, batch=2)
    edge = await generate(discord_fake, batch=2)  # 2 made + 2 asked > 3
    assert edge.content.startswith("❌ Your image could not be made: you have made 2 of 3 images allowed today; "
                                   "the limit resets at 00:00 UTC, in ")
    assert (await generate(discord_fake)).attachments  # 2 + 1 = 3: still allowed
    assert (await generate(discord_fake)).content.startswith("❌ Your image could not be made: you have made 3 of 3")
    assert (await generate(discord_fake, user_id=BOB)).attachments  # each member has their own

    assert await admin(discord_fake, "quota", {"period": "month", "unit": "images", "limit": 4, "server": True}) == \
        "Limit set: this server, 4 images per month."
    whole = await generate(discord_fake, user_id=BOB)
    assert whole.content.startswith("❌ Your image could not be made: this server has made 4 of 4 images allowed "
                                    "this month for everyone here; the limit resets on the 1st at 00:00 UTC")
    assert await admin(discord_fake, "quota", {"period": "month", "unit": "images", "limit": 0, "server": True}) == \
        "Limit removed: this server, images per month."

    comfy.node_delay = 0.2
    assert await admin(discord_fake, "quota", {"period": "day", "unit": "cost", "limit": 0.01, "member": BOB}) == \
        f"Limit set: <@{BOB}>, 0.01 USD per day."  # 3,600 per GPU-hour: one job costs more than that
    assert (await generate(discord_fake, user_id=BOB)).attachments
    spent = await generate(discord_fake, user_id=BOB)
    assert spent.content.startswith("❌ Your image could not be made: you have used ") and " USD allowed today" in \
        spent.content
    usage = await said(discord_fake, await discord_fake.slash("usage", user_id=BOB, username="bob"))
    assert usage.startswith("**Today**: 2 images, ") and " USD\n**This month**: 2 images" in usage
    assert usage.endswith("**Limits here**: 3 images per day, 0.01 USD per day")
    status = await discord_fake.slash("status", user_id=BOB, username="bob")
    await status.wait_acked(3)
    today = next(field["value"] for field in discord_fake.messages[status.original_message_id].embeds[0]["fields"]
                 if field["name"] == "Today")
    assert today.startswith("You: 2 images, ") and " USD. This server: 5 images, " in today
    everyone = await admin(discord_fake, "usage")
    assert everyone.startswith("**Today here**: 5 images, ") and f"• <@{BOB}>: 2 images" in everyone


async def test_a_drained_server_takes_no_new_jobs(discord_fake, running, tmp_path):
    first, second = (FakeComfyUI(models={k: list(v) for k, v in MODELS.items()}) for _ in range(2))
    for fake in (first, second):
        await fake.start()
    try:
        await running.start(bot_settings(tmp_path, first.url, comfyui_urls=[first.url, second.url],
                                         admin_user_ids=[int(CAROL)]))
        await discord_fake.wait_for(lambda: all(b.healthy for b in running.bot.scheduler.pool.backends), timeout=5)
        assert await admin(discord_fake, "drain", {"server": 1}) == "Server 1 gets no new jobs; 0 jobs on it will finish."
        for _ in range(3):
            await generate(discord_fake)
        assert first.prompts == {} and len(second.prompts) == 3
        assert await admin(discord_fake, "drain", {"server": 3}) == "There is no server 3; /status lists 2 servers."
        assert await admin(discord_fake, "undrain", {"server": 1}) == "Server 1 takes jobs again."
        assert not running.bot.scheduler.pool.backends[0].drained
    finally:
        for fake in (first, second):
            await fake.stop()


async def test_reports_reach_the_mod_log_where_moderators_delete_and_block(comfy, discord_fake, running, tmp_path):
    discord_fake.channels[MODLOG] = dict(discord_fake.channels[discord_fake.channel_id], id=MODLOG, name="mod-log")
    await running.start(bot_settings(tmp_path, comfy.url))
    posted = await generate(discord_fake, "a questionable quokka")
    assert await said(discord_fake, await discord_fake.click(posted.id, "cf:report:1", user_id=BOB)) == \
        "This server has no mod-log channel yet; a moderator can set one with /admin modlog."
    assert await admin(discord_fake, "modlog", {"channel": MODLOG}) == f"Reports now go to <#{MODLOG}>."
    assert await said(discord_fake, await discord_fake.click(posted.id, "cf:report:1", user_id=BOB)) == \
        "🚩 Thank you: the moderators have it."
    report = await discord_fake.wait_for_message(lambda m: m.channel_id == MODLOG, timeout=10)
    assert report.content == (f"🚩 <@{BOB}> reported a result by <@{ALICE}>: "
                              f"https://discord.com/channels/{discord_fake.guild_id}/{posted.channel_id}/{posted.id}")
    assert report.mentions == [] and report.embeds[0]["description"] == "a questionable quokka"
    assert [c["custom_id"] for row in report.components for c in row["components"]] == ["cf:mod:1:delete",
                                                                                         "cf:mod:1:block"]
    assert await said(discord_fake, await discord_fake.click(report.id, "cf:mod:1:block", user_id=BOB)) == \
        "Only moderators can do that."
    mod = {"user_id": CAROL, "permissions": MANAGE_MESSAGES}
    assert await said(discord_fake, await discord_fake.click(report.id, "cf:mod:1:block", **mod)) == \
        f"<@{ALICE}> can no longer use the bot here."
    assert await said(discord_fake, await discord_fake.click(report.id, "cf:mod:1:delete", **mod)) == "🗑️ Deleted."
    assert discord_fake.messages[posted.id].deleted
    assert (await generate(discord_fake)).content.endswith("a moderator blocked you from using this bot here.")
    log = await admin(discord_fake, "audit")
    lines = log.splitlines()
    assert lines[0].endswith(f"<@{CAROL}> delete_reported: generation_id 1")
    assert lines[1].endswith(f"<@{CAROL}> block: user_id <@{ALICE}>, reason reported result")
    assert f"<@{BOB}> report: generation_id 1, author_id {ALICE}, link https://discord.com/" in lines[2]
    assert lines[3].endswith(f"<@{CAROL}> modlog: channel_id {MODLOG}")


async def test_reload_reads_the_presets_again_without_a_restart(comfy, discord_fake, running, tmp_path, monkeypatch):
    await running.start(bot_settings(tmp_path, comfy.url, admin_user_ids=[int(CAROL)], workflow_set="default"))
    monkeypatch.setenv("MODEL_PRESETS", '{"fresh": {"checkpoint": "sdxl.safetensors"}}')
    assert await admin(discord_fake, "reload") == "Reloaded 13 workflows, 1 model preset and 20 built-in styles."
    assert running.bot.settings.model_presets["fresh"].checkpoint == "sdxl.safetensors"
    monkeypatch.setenv("MODEL_PRESETS", "not json")
    assert (await admin(discord_fake, "reload")).startswith("Nothing was reloaded: config error: MODEL_PRESETS")
    assert "fresh" in running.bot.settings.model_presets


async def test_the_dashboard_link_opens_this_servers_dashboard_and_its_forms_act(comfy, discord_fake, running,
                                                                                 tmp_path):
    import re
    import socket

    import aiohttp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await running.start(bot_settings(tmp_path, comfy.url, web_port=port, web_base_url=f"http://127.0.0.1:{port}"))
    await generate(discord_fake, "a dashboard dahlia")
    assert await admin(discord_fake, "block", {"member": BOB, "reason": "spam"}) == \
        f"⛔ <@{BOB}> can no longer use the bot here."
    answer = await admin(discord_fake, "dashboard")
    assert answer.startswith("The dashboard for this server, for the next 24 hours")
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/admin/\S+", answer)
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as page:
            html = await page.text()
        assert page.status == 200 and "spam" in html and "ComfyUI" in html
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]
        async with session.post(f"{url}/act", data={"action": "pause", "value": "", "csrf": csrf},
                                allow_redirects=False) as acted:
            assert acted.status == 303
        async with session.post(f"{url}/act", data={"action": "drain", "value": "1", "csrf": csrf},
                                allow_redirects=False) as refused:
            assert "err=1" in refused.headers["Location"]  # drain is for the bot's own admins
    assert running.bot.scheduler.paused == {discord_fake.guild_id}
    log = await admin(discord_fake, "audit")
    assert log.splitlines()[0].endswith(f"<@{CAROL}> pause: scope {discord_fake.guild_id}")


async def test_a_gpu_seconds_quota_counts_the_time_comfyui_measured(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    comfy.node_delay = 0.1
    assert (await generate(discord_fake)).attachments
    used = (await running.bot.store.usage(int(discord_fake.guild_id), int(ALICE), 0)).gpu_seconds
    assert used > 0.05  # measured from ComfyUI's execution events
    limit = round(used * 1.5, 2)
    assert await admin(discord_fake, "quota", {"period": "day", "unit": "gpu_seconds", "limit": limit}) == \
        f"Limit set: each member, {limit:g} GPU seconds per day."
    for attempt in range(8):  # jobs run while the time used is under the limit; the first one past it is refused
        before = (await running.bot.store.usage(int(discord_fake.guild_id), int(ALICE), 0)).gpu_seconds
        made = await generate(discord_fake, f"job {attempt}", seed=attempt)
        if not made.attachments:
            break
        assert before < limit
    assert before >= limit and attempt >= 1
    assert made.content.startswith(f"❌ Your image could not be made: you have used {before:.1f} of {limit:g} GPU "
                                   "seconds allowed today; the limit resets at 00:00 UTC")


def test_readiness_says_what_is_missing(tmp_path):
    from bot import ComfyBot

    bot = ComfyBot(bot_settings(tmp_path, "http://127.0.0.1:9"))
    assert bot.ready() == (False, "starting")
