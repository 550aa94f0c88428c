"""Moderation of prompts and results through the real bot, the fake Discord, the fake ComfyUI and the fake
moderation endpoint (tests/fakes/moderation.py): a flagged prompt is refused in words that do not quote it;
a flagged result is held (its owner told, a card in the mod-log), released or deleted by a moderator once,
audited, and still held after a restart; a provider that is down holds or posts as the operator chose."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot_harness import bot_settings, result_of
from tests.cogs.test_admin import ALICE, BOB, CAROL, MANAGE_MESSAGES, MODLOG, admin, said
from tests.fakes.moderation import FakeModeration

MOD = {"user_id": CAROL, "permissions": MANAGE_MESSAGES, "channel_id": MODLOG}
WAITING = ("⏳ Your image is waiting for a moderator before it is posted ({}). It is posted here if they "
           "release it; either way you will be told.")


@pytest.fixture
async def endpoint():
    fake = FakeModeration(key="sk-test")
    await fake.start()
    yield fake
    await fake.stop()


def settings(tmp_path, comfy, endpoint, **overrides):
    return bot_settings(tmp_path, comfy.url, moderation_url=endpoint.base_url, moderation_api_key="sk-test",
                        moderation_timeout=2.0, **overrides)


async def with_modlog(discord_fake) -> None:
    discord_fake.channels[MODLOG] = dict(discord_fake.channels[discord_fake.channel_id], id=MODLOG, name="mod-log")


async def start_held(discord_fake, prompt: str = "a cat"):
    """/generate whose result the endpoint flags: the progress message once it says it waits."""
    started = await discord_fake.slash("generate", {"prompt": prompt, "width": 64, "height": 64}, user_id=ALICE)
    await started.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == started.original_message_id and m.content.startswith("⏳ Your image is waiting"), timeout=20)


def card(discord_fake):
    return discord_fake.wait_for_message(lambda m: m.channel_id == MODLOG and m.content.startswith("🛑"), timeout=10)


def results_posted(discord_fake) -> list:
    return [m for m in discord_fake.messages.values() if str(m.nonce or "").endswith(".0")]


async def test_a_flagged_prompt_is_refused_without_quoting_it(comfy, discord_fake, running, tmp_path, endpoint):
    endpoint.text_scores["gory"] = {"violence/graphic": 0.95}
    await running.start(settings(tmp_path, comfy, endpoint))
    refused = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a gory scene", "width": 64, "height": 64}), timeout=20)
    assert refused.content == ("❌ Your image could not be made: the moderation check flagged your prompt "
                               "(violence/graphic); change it and try again.")
    assert comfy.prompts == {}
    assert endpoint.requests[0]["body"]["input"] == [{"type": "text", "text": "a gory scene"}]


async def test_a_flagged_result_is_held_then_released_by_a_moderator_once(comfy, discord_fake, running, tmp_path,
                                                                           endpoint):
    await with_modlog(discord_fake)
    endpoint.image_scores = {"sexual": 0.9}
    await running.start(settings(tmp_path, comfy, endpoint))
    assert await admin(discord_fake, "modlog", {"channel": MODLOG}) == f"Reports now go to <#{MODLOG}>."
    progress = await start_held(discord_fake)
    assert progress.content == WAITING.format("flagged: sexual")
    held = await card(discord_fake)
    assert held.content == (f"🛑 Held for review: a result by <@{ALICE}> for <#{discord_fake.channel_id}> "
                            "(flagged: sexual).\nPrompt: ||a cat||\nRelease posts it; Delete removes it.")
    assert [a["filename"] for a in held.attachments] == ["SPOILER_held-1.png"] and held.mentions == []
    assert held.custom_ids == ["cf:hold:1:release", "cf:hold:1:delete"]
    assert results_posted(discord_fake) == []

    assert await said(discord_fake, await discord_fake.click(held.id, "cf:hold:1:release", user_id=BOB)) == \
        "Only moderators (members who may manage messages) can do that."
    assert await said(discord_fake, await discord_fake.click(held.id, "cf:hold:1:release", **MOD)) == \
        f"✅ Released: the result by <@{ALICE}> is posted."
    (posted,) = results_posted(discord_fake)
    assert posted.attachments and posted.mentions == [ALICE] and discord_fake.messages[progress.id].deleted
    assert discord_fake.messages[held.id].content.endswith(f"\n**Released** by <@{CAROL}>.")
    assert discord_fake.messages[held.id].components == []
    audit = (await admin(discord_fake, "audit")).splitlines()
    assert audit[0].endswith(f"<@{CAROL}> moderation_release: hold_id 1, job_id 1, generation_id 1, "
                             f"author_id {ALICE}")
    assert (await running.bot.store.get_job(1)).state == "done"


async def test_a_held_result_stays_held_across_a_restart_and_is_deleted_there(comfy, discord_fake, running, tmp_path,
                                                                               endpoint):
    await with_modlog(discord_fake)
    endpoint.image_scores = {"violence/graphic": 0.8}
    config = settings(tmp_path, comfy, endpoint)
    await running.start(config)
    await admin(discord_fake, "modlog", {"channel": MODLOG})
    await start_held(discord_fake)
    held = await card(discord_fake)
    generation = await running.bot.store.get_generation(1)
    await running.stop()
    checks = len(endpoint.requests)
    await running.start(config)  # the job is still delivering: the hold, not a new check, decides
    await asyncio.sleep(0.5)
    assert results_posted(discord_fake) == [] and len(endpoint.requests) == checks
    assert all((config.outputs_dir / name).exists() for name in generation.files)
    assert await said(discord_fake, await discord_fake.click(held.id, "cf:hold:1:delete", **MOD)) == \
        f"🗑️ Deleted: the result by <@{ALICE}> is gone, and they were told."
    told = await discord_fake.wait_for_message(lambda m: str(m.nonce or "").endswith(".99"), timeout=10)
    assert told.content == (f"❌ <@{ALICE}>, your image could not be made: a moderator removed the result, so it "
                            "was not posted.")
    assert results_posted(discord_fake) == []
    assert (await running.bot.store.get_generation(1)).deleted_at is not None
    assert not any((config.outputs_dir / name).exists() for name in generation.files)
    card_now = discord_fake.messages[held.id]
    assert card_now.components == [] and card_now.attachments == []
    assert card_now.content.endswith(f"\n**Deleted** by <@{CAROL}>.")
    assert await running.bot.scheduler.moderation.release(1, int(discord_fake.guild_id), int(CAROL)) == \
        "That result is no longer held: a moderator decided already."
    audit = (await admin(discord_fake, "audit")).splitlines()
    assert audit[0].endswith(f"<@{CAROL}> moderation_delete: hold_id 1, job_id 1, generation_id 1, author_id {ALICE}")


async def test_a_provider_that_is_down_holds_or_posts_as_the_operator_chose(comfy, discord_fake, running, tmp_path,
                                                                            endpoint):
    endpoint.status = 503
    await running.start(settings(tmp_path, comfy, endpoint, moderation_on_error="post"))
    posted = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a cat", "width": 64, "height": 64}), timeout=20)
    assert posted.attachments  # fail open: the prompt and the result were posted unchecked
    await running.stop()
    await running.start(settings(tmp_path, comfy, endpoint, moderation_on_error="hold"))
    refused = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a dog", "width": 64, "height": 64}), timeout=20)
    assert refused.content == ("❌ Your image could not be made: the moderation check could not run, so nothing was "
                               "queued; try again in a minute.")


async def test_a_result_is_held_when_the_check_fails_and_the_operator_holds(comfy, discord_fake, running, tmp_path,
                                                                            endpoint, capsys):
    await running.start(settings(tmp_path, comfy, endpoint))
    endpoint.image_delay = 3.0  # the prompt passes; the image's check takes longer than MODERATION_TIMEOUT
    started = await discord_fake.slash("generate", {"prompt": "a cat", "width": 64, "height": 64})
    await started.wait_acked(3)
    progress = await discord_fake.wait_for_message(
        lambda m: m.id == started.original_message_id and m.content.startswith("⏳ Your image is"), timeout=30)
    assert progress.content == WAITING.format("the moderation check could not run")
    assert results_posted(discord_fake) == []
    (held,) = await running.bot.store.pending_holds(int(discord_fake.guild_id), 10)
    assert held.reason == "the moderation check could not run" and held.scores == {}
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "moderation_unavailable" in line]
    assert "checked=result" in line and "job_id=1" in line and "on_error=hold" in line
    assert "error='no answer within 2 seconds'" in line


async def test_age_restricted_channels_have_their_own_thresholds(comfy, discord_fake, running, tmp_path, endpoint):
    discord_fake.channels[discord_fake.channel_id]["nsfw"] = True
    endpoint.image_scores = {"sexual": 0.9}
    await running.start(settings(tmp_path, comfy, endpoint))
    posted = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "a cat", "width": 64, "height": 64}), timeout=20)
    assert posted.attachments and len(endpoint.requests) == 2  # the prompt, then the image: both checked


async def test_the_dashboard_lists_held_results_and_releases_them(comfy, discord_fake, running, tmp_path, endpoint):
    import re
    import socket

    import aiohttp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await with_modlog(discord_fake)
    endpoint.image_scores = {"sexual": 0.9}
    await running.start(settings(tmp_path, comfy, endpoint, web_port=port, web_base_url=f"http://127.0.0.1:{port}"))
    await admin(discord_fake, "modlog", {"channel": MODLOG})
    await start_held(discord_fake)
    held = await card(discord_fake)
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/admin/\S+", await admin(discord_fake, "dashboard"))
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as page:
            html = await page.text()
        assert page.status == 200 and "Held results" in html and "flagged: sexual" in html
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]
        async with session.post(f"{url}/act", data={"action": "release", "value": "x1", "csrf": csrf},
                                allow_redirects=False) as refused:
            assert "err=1" in refused.headers["Location"]
        async with session.post(f"{url}/act", data={"action": "release", "value": "1", "csrf": csrf},
                                allow_redirects=False) as acted:
            assert acted.status == 303 and "err=1" not in acted.headers["Location"]
        async with session.get(url) as page:
            assert "No result is held for review." in await page.text()
    (posted,) = results_posted(discord_fake)
    assert posted.attachments and posted.mentions == [ALICE]
    assert discord_fake.messages[held.id].content.endswith(f"\n**Released** by <@{CAROL}>.")
    assert discord_fake.messages[held.id].components == []

