"""The whole bot against careless users, hostile servers and crashes: every interaction and every job
ends in a message a person can read, bounded, inert, posted once.

Fake Discord <-> real discord.py bot <-> real engine <-> fake ComfyUI (with hostile switches).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import pytest

from tests.bot_harness import Running, bot_settings, custom_ids, result_of
from tests.fakes import discord_rules as rules
from tests.fakes import hostile
from tests.fakes.discord import FakeDiscord

OWNER = "5001"
NOISY = "@everyone @here <@&2001> <@9999> hi"


def everything_shown(discord_fake: FakeDiscord) -> list[dict]:
    """Every payload the bot sent to Discord: creations and edits, with their allowed_mentions."""
    return [entry["payload"] for message in discord_fake.messages.values() for entry in message.history
            if isinstance(entry.get("payload"), dict)]


def assert_only_the_owner_is_pinged(discord_fake: FakeDiscord) -> None:
    for payload in everything_shown(discord_fake):
        content = payload.get("content") or ""
        allowed = payload.get("allowed_mentions")
        users, roles, everyone = rules.compute_mentions(content, allowed)
        assert set(users) <= {OWNER} and not roles and not everyone, (content, allowed)
    for message in discord_fake.messages.values():
        assert not message.mention_everyone and not message.mention_roles and set(message.mentions) <= {OWNER}


def assert_within_discord_limits(discord_fake: FakeDiscord) -> None:
    assert not [v for v in discord_fake.violations if "50035" in v or "50006" in v], discord_fake.violations
    for payload in everything_shown(discord_fake):
        assert len(payload.get("content") or "") <= 2000


# 4. bounded and inert ------------------------------------------------------------------------------


async def test_nothing_the_bot_echoes_pings_anyone_but_the_owner(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    ok = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": NOISY, "width": 64, "height": 64}))
    assert ok.attachments and ok.mentions == [OWNER]
    comfy.fail_node("SaveImage", exception_message=f"cannot save {NOISY}")
    failed = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": NOISY, "width": 64, "height": 64}))
    assert "could not be made" in failed.content and "@everyone" not in failed.content
    assert_only_the_owner_is_pinged(discord_fake)


@pytest.mark.parametrize("fault, expected", [
    ("many-problems", "a model it needs is not installed on the server."),
    ("long-traceback", "the server hit an error while making it."),
    ("secret-500", "ComfyUI answered in a way the bot does not understand."),
], ids=["200-node-problems", "20000-line-traceback", "500-with-secrets"])
async def test_a_huge_or_leaky_comfyui_error_becomes_a_short_message(comfy, discord_fake, running, tmp_path,
                                                                     fault, expected):
    await running.start(bot_settings(tmp_path, comfy.url))
    if fault == "many-problems":
        comfy.override("/prompt", hostile.answer(hostile.node_problems(200), status=400), count=1)
    elif fault == "long-traceback":
        comfy.fail_node("SaveImage", exception_message="Traceback (most recent call last):\n" + "  frame\n" * 20_000
                        + "RuntimeError: the last line")
    else:
        page = "Authorization: Bearer sk-123456789\nupstream http://admin:pw@10.1.2.3:8188 failed\n" * 500
        comfy.override("/prompt", hostile.answer(page.encode(), status=500, content_type="text/plain"), count=1)
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    assert message.content.startswith("❌ <@5001>, your image could not be made: ") and expected in message.content
    assert len(message.content) <= 2000
    assert "sk-123456789" not in message.content and "admin:pw" not in message.content and "10.1.2.3" not in message.content
    assert_within_discord_limits(discord_fake)


async def test_an_overlong_model_name_is_clipped_in_the_reply(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    interaction = await discord_fake.slash("generate", {"prompt": "x", "model": "m" * 5000})
    await interaction.wait_acked(3)
    reply = discord_fake.messages[interaction.original_message_id]
    assert reply.ephemeral and reply.content.startswith("There is no model called `mmm") and len(reply.content) < 300
    assert_within_discord_limits(discord_fake)


# 6. every interaction ends in words; limits hold under bursts -------------------------------------------


async def test_a_command_that_crashes_is_answered_in_words(comfy, discord_fake, running, tmp_path, monkeypatch):
    bot = await running.start(bot_settings(tmp_path, comfy.url))

    async def broken(job):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bot.scheduler, "submit", broken)
    interaction = await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64})
    message = await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading and m.content)
    assert message.content.startswith("❌ Something went wrong on the bot's side; nothing was started.")


async def test_a_button_that_crashes_is_answered_privately(comfy, discord_fake, running, tmp_path, monkeypatch):
    bot = await running.start(bot_settings(tmp_path, comfy.url))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bot.get_cog("Images"), "on_image_button", broken)
    click = await discord_fake.click(first.id, "cf:up:1:0:2")
    await click.wait_acked(3)
    reply = discord_fake.messages[click.original_message_id]
    assert reply.ephemeral and reply.content.startswith("❌ Something went wrong on the bot's side")


@pytest.mark.parametrize("custom_id, answer", [
    ("cf:up:99999999999999999999:0:2", "This button is no longer supported by the bot."),
    ("cf:anim:1:999", "This button is no longer supported by the bot."),
    ("cf:cancel:-1", "This button is no longer supported by the bot."),
    ("cf:something-new:1", "This button is no longer supported by the bot."),
    ("cf:up:424242:0:2", "That result is not known to this bot any more."),
    ("cf:cancel:424242", "That job is not known to this bot."),
], ids=["id-out-of-range", "index-out-of-range", "negative", "unknown-kind", "unknown-generation", "unknown-job"])
async def test_an_old_or_forged_button_is_answered(comfy, discord_fake, running, tmp_path, custom_id, answer):
    await running.start(bot_settings(tmp_path, comfy.url))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    first.find_component("cf:up:1:0:2")["custom_id"] = custom_id  # a message from an older bot, or a forged one
    click = await discord_fake.click(first.id, custom_id)
    reply = await discord_fake.wait_for_message(
        lambda m: m.id == click.original_message_id and not m.loading and m.content)
    assert reply.content.startswith(answer) and reply.ephemeral


async def test_a_burst_of_fifty_clicks_makes_at_most_the_limit_of_jobs(comfy, discord_fake, running, tmp_path):
    bot = await running.start(bot_settings(tmp_path, comfy.url, jobs_per_user=3, commands_per_minute=600))
    first = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    comfy.pause()  # the jobs stay active while the clicks arrive
    clicks = await asyncio.gather(*(discord_fake.click(first.id, "cf:up:1:0:2") for _ in range(50)))
    for click in clicks:
        await click.wait_acked(3)
    answered = await discord_fake.wait_for(
        lambda: all(not discord_fake.messages[c.original_message_id].loading for c in clicks), 10)
    assert answered
    assert await bot.store.active_job_count(int(OWNER)) == 3
    refusals = [discord_fake.messages[c.original_message_id].content for c in clicks]
    assert sum("You already have 3 jobs waiting or running" in text for text in refusals) == 47
    comfy.resume()


# 5. downloads are bounded and checked; more than 10 files --------------------------------------------------


@pytest.mark.parametrize("answer, expected", [
    (hostile.answer(hostile.HTML_PAGE, content_type="image/png"), "the server sent a broken file instead of the result"),
    (hostile.answer(hostile.truncated_png(), content_type="image/png"), "the server sent a broken file"),
    (hostile.endless(), "the result is larger than 1.0 MiB, the most the bot downloads"),
    (hostile.answer(b"", status=302, content_type="text/plain"), "ComfyUI answered in a way the bot does not understand"),
], ids=["html-page", "truncated-png", "endless", "redirect"])
async def test_a_broken_result_fails_in_words(comfy, discord_fake, running, tmp_path, answer, expected):
    settings = bot_settings(tmp_path, comfy.url, download_limit=1024 * 1024)
    await running.start(settings)
    comfy.override("/view", answer)
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    assert message.content.startswith("❌ <@5001>, your image could not be made: ") and expected in message.content, \
        message.content
    assert not message.attachments


async def test_a_result_of_more_than_ten_files_is_split_over_messages(comfy, discord_fake, running, tmp_path):
    workflows = tmp_path / "workflows"
    shutil.copytree(running_root() / "workflows" / "selftest", workflows / "twice")
    graph = json.loads((workflows / "twice" / "txt2img.json").read_text())
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bot/second"}}
    (workflows / "twice" / "txt2img.json").write_text(json.dumps(graph))
    toml = (workflows / "twice" / "workflows.toml").read_text().replace('outputs = ["3"]\n[txt2img.params]',
                                                                       'outputs = ["3", "6"]\n[txt2img.params]')
    (workflows / "twice" / "workflows.toml").write_text(toml)
    bot = await running.start(bot_settings(tmp_path, comfy.url, workflows_dir=workflows, workflow_set="twice",
                                           max_batch=6))
    first = await result_of(discord_fake, await discord_fake.slash(
        "generate", {"prompt": "twelve", "batch": 6, "width": 64, "height": 64}))
    rest = await discord_fake.wait_for_message(lambda m: m.id != first.id and m.attachments and "(2)" in m.content)
    assert rest.content == "More of your images (2)." and rest.mentions == []
    assert [a["filename"] for a in first.attachments + rest.attachments] == [f"image-{i}.png" for i in range(1, 13)]
    assert len(first.attachments) == 10 and len(rest.attachments) == 2 and first.embeds and custom_ids(first)
    job = await _wait_job_state(bot, 1, "done")
    generation = await bot.store.get_generation(job.generation_id)
    assert len(generation.files) == 12 and len(generation.attachment_urls) == 12
    assert_within_discord_limits(discord_fake)


def running_root():
    from tests.conftest import ROOT

    return ROOT


# 3. exactly once, after the token expired ----------------------------------------------------------------


async def test_a_result_posted_while_the_bot_dies_is_posted_once(comfy, monkeypatch, tmp_path):
    fake = FakeDiscord(token_lifetime=2.0)
    await fake.start()
    fake.install(monkeypatch)
    harness = Running(fake)
    settings = bot_settings(tmp_path, comfy.url)
    try:
        await harness.start(settings, token_lifetime=2.0)
        comfy.node_delay = 1.2  # the job outlives the interaction token: the result goes to the channel
        fake.hold_channel_posts(1)
        await fake.slash("generate", {"prompt": "long", "width": 64, "height": 64})
        held = await fake.wait_for_held_post(timeout=15)
        await harness.stop()  # the bot dies with the post in flight: Discord made the message, the bot never heard
        bot = await harness.start(settings, token_lifetime=2.0)
        await fake.wait_for(lambda: fake.held_posts[0].outcome is not None, 10)
        job = await _wait_job_state(bot, 1, "done")
        posted = [m for m in fake.messages.values() if m.interaction_id is None and m.attachments]
        assert [m.id for m in posted] == [held.id], "exactly one result message"
        assert [r.get("nonce_duplicate_of") for r in fake.requests if "nonce_duplicate_of" in r] == [held.id]
        generation = await bot.store.get_generation(job.generation_id)
        assert str(generation.message_id) == held.id
    finally:
        await harness.stop()
        await fake.stop()


async def _wait_job_state(bot, job_id: int, state: str, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while (job := await bot.store.get_job(job_id)) is None or job.state != state:
            await asyncio.sleep(0.05)
    return job


# 1. a server that is not ComfyUI; 7. secrets ----------------------------------------------------------------


async def test_status_and_generate_say_why_a_server_is_unusable(comfy, discord_fake, running, tmp_path):
    comfy.override("/object_info", hostile.answer({"KSampler": "x"}))
    await running.start(bot_settings(tmp_path, comfy.url))
    await asyncio.sleep(0.5)  # setup: the pool reads the node list once the socket is up
    status = await discord_fake.slash("status")
    await status.wait_acked(3)
    (embed,) = discord_fake.messages[status.original_message_id].embeds
    (servers,) = [field["value"] for field in embed["fields"] if field["name"] == "Servers"]
    assert servers == ("⚠️ ComfyUI cannot be used: it answers, but not the way ComfyUI does; the operator can see "
                       "the details in the bot's log.")
    message = await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x"}), timeout=5)
    assert message.content == ("❌ Your image could not be made: ComfyUI is not working properly right now: it "
                               "answers, but not the way ComfyUI does. Try again later; the operator can see the "
                               "details in the bot's log.")


async def test_a_password_in_the_comfyui_url_is_never_shown_or_stored(comfy, discord_fake, running, tmp_path):
    url = comfy.url.replace("http://", "http://operator:hunter22pw@")
    settings = bot_settings(tmp_path, url)
    await running.start(settings)
    await result_of(discord_fake, await discord_fake.slash("generate", {"prompt": "x", "width": 64, "height": 64}))
    await (await discord_fake.slash("status")).wait_acked(3)
    await running.stop()
    shown = json.dumps([payload for payload in everything_shown(discord_fake)])
    assert "hunter22pw" not in shown and "operator" not in shown
    with sqlite3.connect(settings.data_dir / "bot.sqlite3") as db:
        dump = "\n".join(db.iterdump())
    assert "hunter22pw" not in dump and "127.0.0.1" in dump  # the server is known by its URL without credentials


# 5. attachment downloads: only from CDN_HOSTS (redirects too), capped, checked ----------------------------


@pytest.fixture
async def cdn(tmp_path):
    """A small web server on 127.0.0.1 standing in for Discord's CDN (and a host that is not it)."""
    from aiohttp import web

    png = hostile.png_bytes((32, 32))

    def redirect(to):
        async def handler(request):
            raise web.HTTPFound(to(request))
        return handler

    app = web.Application()
    app.router.add_get("/image.png", hostile.answer(png, content_type="image/png"))
    app.router.add_get("/hop.png", redirect(lambda request: "/image.png"))
    app.router.add_get("/away.png", redirect(lambda request: f"http://localhost:{request.url.port}/image.png"))
    app.router.add_get("/loop.png", redirect(lambda request: "/loop.png"))
    app.router.add_get("/page.png", hostile.answer(hostile.HTML_PAGE, content_type="image/png"))
    app.router.add_get("/endless.png", hostile.endless())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("path, outcome", [
    ("/image.png", None),
    ("/hop.png", None),
    ("/away.png", "that attachment is not on Discord's CDN"),
    ("/loop.png", "redirected too often"),
    ("/page.png", "is a web page, not an image"),
    ("/endless.png", "larger than 1.0 MiB"),
], ids=["direct", "redirect-on-cdn", "redirect-off-cdn", "redirect-loop", "html", "endless"])
async def test_an_attachment_is_fetched_only_from_the_cdn_within_the_cap(cdn, tmp_path, path, outcome):
    from results.folder import OutputError, OutputFolder
    from results.inputs import Inputs

    settings = bot_settings(tmp_path, "http://127.0.0.1:9", download_limit=1024 * 1024)
    outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
    await outputs.open()
    inputs = Inputs(settings, outputs)
    await inputs.open()
    try:
        if outcome is None:
            saved = await inputs.fetch(cdn + path, "input.png")
            assert saved.read_bytes() == hostile.png_bytes((32, 32))
        else:
            with pytest.raises((ValueError, OutputError), match=outcome):
                await inputs.fetch(cdn + path, "input.png")
            assert [p.name for p in settings.outputs_dir.iterdir() if not p.name.startswith(".")] == []
    finally:
        await inputs.close()


async def test_shutdown_closes_the_store_whatever_the_comfyui_clients_did(comfy, discord_fake, running, tmp_path,
                                                                         monkeypatch):
    from store import StoreError

    bot = await running.start(bot_settings(tmp_path, comfy.url))
    (client,) = bot.clients
    real_close = client.close

    async def failing_close():
        await real_close()
        raise RuntimeError("a client that fails to close")

    monkeypatch.setattr(client, "close", failing_close)
    await running.stop()
    with pytest.raises(StoreError, match="is not open"):
        await bot.store.get_job(1)
