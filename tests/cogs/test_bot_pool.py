"""The pool through Discord: the Cancel button, /status, and jobs spread over two ComfyUI servers.

Fake Discord <-> real discord.py bot <-> real scheduler and pool <-> fake ComfyUI servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc

import discord
import pytest

from tests.bot_harness import Running, bot_settings, result_of
from tests.conftest import MODELS
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord
from tests.pool_harness import posted_jobs, posts_per_job, wait_until

MANAGE_MESSAGES = str(1 << 13)
ALICE, BOB, CAROL = "5001", "6001", "7001"


@pytest.fixture
async def comfies():
    """Two fake ComfyUI servers with the usual models."""
    fakes = [FakeComfyUI(name=f"comfy{i}", models={k: list(v) for k, v in MODELS.items()}) for i in range(2)]
    for fake in fakes:
        await fake.start()
    yield fakes
    for fake in fakes:
        await fake.stop()
    assert [problem for fake in fakes for problem in fake.unhandled] == []


async def start_bot(running, tmp_path, fakes, **overrides):
    settings = bot_settings(tmp_path, fakes[0].url, comfyui_urls=[fake.url for fake in fakes], **overrides)
    bot = await running.start(settings)
    await wait_until(lambda: bot.scheduler is not None and all(b.healthy for b in bot.scheduler.pool.backends),
                     10, "every ComfyUI server healthy")
    return bot


async def reply_to(discord_fake, interaction):
    """The (filled) response message of an interaction."""
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading and (m.content or m.embeds))


def job_id_of(message) -> int:
    (custom_id,) = [cid for cid in message.custom_ids if cid.startswith("cf:cancel:")]
    return int(custom_id.removeprefix("cf:cancel:"))


async def test_cancel_button_for_the_owner_a_moderator_and_nobody_else(comfies, discord_fake, running, tmp_path):
    comfy = comfies[0]
    comfy.pause()
    bot = await start_bot(running, tmp_path, [comfy], server_capacity=1, jobs_per_user=5)
    first = await discord_fake.slash("generate", {"prompt": "first", "width": 64, "height": 64})
    await wait_until(lambda: len(posted_jobs(comfy)) == 1, 5, "the first job on the (paused) server")
    slashes = [await discord_fake.slash("generate", {"prompt": name, "width": 64, "height": 64})
               for name in ("kept", "mine", "moderated")]
    waiting = [await discord_fake.wait_for_message(
        lambda m, s=s: m.id == s.original_message_id and "Waiting" in m.content and m.custom_ids) for s in slashes]
    kept, mine, moderated = waiting
    kept_id, mine_id, moderated_id = ids = [job_id_of(m) for m in waiting]  # handled concurrently: any order
    assert sorted(ids) == [2, 3, 4]
    assert kept.custom_ids == [f"cf:cancel:{kept_id}"]
    await discord_fake.wait_for_message(lambda m: m.id == kept.id and "Waiting" in m.content)

    refused = await reply_to(discord_fake, await discord_fake.click(kept.id, f"cf:cancel:{kept_id}", user_id=BOB, username="bob"))
    assert refused.ephemeral
    assert refused.content == "Only the person who started this job, or a moderator, can cancel it."
    assert (await bot.store.get_job(kept_id)).state == "waiting"

    own = await reply_to(discord_fake, await discord_fake.click(mine.id, f"cf:cancel:{mine_id}"))
    assert own.ephemeral and own.content == "Cancelled: it left the queue before it started."
    shown = await discord_fake.wait_for_message(lambda m: m.id == mine.id and "Cancelled" in m.content)
    assert shown.content == f"🚫 Cancelled by <@{ALICE}>: the image of “mine”." and shown.custom_ids == []

    by_mod = await reply_to(discord_fake, await discord_fake.click(
        moderated.id, f"cf:cancel:{moderated_id}", user_id=CAROL, username="carol", permissions=MANAGE_MESSAGES))
    assert by_mod.ephemeral and by_mod.content == "Cancelled: it left the queue before it started."
    shown = await discord_fake.wait_for_message(lambda m: m.id == moderated.id and "Cancelled" in m.content)
    assert shown.content == f"🚫 Cancelled by <@{CAROL}>: the image of “moderated”." and shown.mentions == []

    assert [(await bot.store.get_job(job_id)).state for job_id in (mine_id, moderated_id)] == ["cancelled", "cancelled"]
    comfy.resume()
    assert (await result_of(discord_fake, first)).attachments
    assert (await result_of(discord_fake, slashes[0])).attachments  # the refused click changed nothing
    assert sorted(posts_per_job(comfy)) == sorted([1, kept_id])  # the cancelled jobs never reached ComfyUI
    assert not [v for v in discord_fake.violations if not v.startswith("[429")]


async def test_status_is_ephemeral_and_shows_each_server_and_the_callers_jobs(comfies, discord_fake, running, tmp_path):
    x, y = comfies
    x.pause()
    y.pause()
    await start_bot(running, tmp_path, comfies, server_capacity=1)
    slashes = [await discord_fake.slash("generate", {"prompt": f"job {i}", "width": 64, "height": 64})
               for i in range(3)]
    await wait_until(lambda: len(posted_jobs(x)) == 1 and len(posted_jobs(y)) == 1, 5, "one job on each server")

    status = await reply_to(discord_fake, await discord_fake.slash("status"))
    assert status.ephemeral
    fields = {field["name"]: field["value"] for field in status.embeds[0]["fields"]}
    assert fields["Servers"].splitlines() == ["🟢 2 of 2 ComfyUI servers are up.", "• Server 1: up, 1 job of ours.",
                                              "• Server 2: up, 1 job of ours."]
    assert fields["Queue"] == "1 job waiting, 2 on the GPU."
    mine = fields["Your jobs"].splitlines()
    assert sorted(mine) == ["• Your image “job 0”: starting, next on the GPU.",
                            "• Your image “job 1”: starting, next on the GPU.",
                            "• Your image “job 2”: 2 jobs are ahead of yours."]  # handed to ComfyUI, not started
    waiting_message = await discord_fake.wait_for_message(  # edits are paced: the newest lands within seconds
        lambda m: m.id == slashes[2].original_message_id and "ahead" in m.content, timeout=10)
    assert waiting_message.content == "⏳ Waiting for your image: 2 jobs are ahead of yours."  # the same words

    other = await reply_to(discord_fake, await discord_fake.slash("status", user_id=BOB, username="bob"))
    assert other.ephemeral
    assert {f["name"]: f["value"] for f in other.embeds[0]["fields"]}["Your jobs"] == \
        "You have no jobs waiting or running."

    x.resume()
    y.resume()
    for slash in slashes:
        assert (await result_of(discord_fake, slash)).attachments


async def test_jobs_of_two_users_are_spread_over_two_servers_and_all_delivered(comfies, discord_fake, running, tmp_path):
    for fake in comfies:
        fake.node_delay = 0.1
    await start_bot(running, tmp_path, comfies)
    slashes = []
    for i in range(3):
        for user, name in ((ALICE, "alice"), (BOB, "bob")):
            slashes.append(await discord_fake.slash(
                "generate", {"prompt": f"{name} {i}", "width": 64, "height": 64}, user_id=user, username=name))
    results = [await result_of(discord_fake, slash, timeout=20) for slash in slashes]
    assert all(len(message.attachments) == 1 for message in results)
    assert [message.content for message in results] == [
        f"✅ <@{user}>, your image is ready." for _ in range(3) for user in (ALICE, BOB)]
    x, y = comfies
    assert posted_jobs(x) and posted_jobs(y), (posted_jobs(x), posted_jobs(y))
    assert posts_per_job(x, y) == {job_id: 1 for job_id in range(1, 7)}
    assert not [v for v in discord_fake.violations if not v.startswith("[429")]


async def test_a_job_whose_message_was_deleted_still_ends(comfies, discord_fake, running, tmp_path):
    comfy = comfies[0]
    comfy.node_delay = 0.3
    bot = await start_bot(running, tmp_path, [comfy])
    slash = await discord_fake.slash("generate", {"prompt": "deleted meanwhile", "width": 64, "height": 64})
    await wait_until(lambda: comfy.running_id(), 5, "the job running")
    discord_fake.messages[slash.original_message_id].deleted = True  # a moderator deletes the progress message
    await wait_until(lambda: comfy.running_id() is None and comfy.history_ids(), 10, "ComfyUI done")

    async def final_state() -> str | None:
        try:
            async with asyncio.timeout(5):
                while (job := await bot.store.get_job(1)).state not in ("done", "failed"):
                    await asyncio.sleep(0.02)
                return job.state
        except TimeoutError:
            return None

    ended_as = await final_state()
    # A task that died with an exception logs it when collected; collect now, not while pytest parses
    # source for its report (CPython 3.11's traceback carets re-enter ast.parse: "recursion depth mismatch").
    gc.collect()
    job = await bot.store.get_job(1)
    active = await bot.store.active_job_count(int(ALICE))
    assert ended_as is not None, (
        f"the job is left {job.state!r}: the user is never told, and it counts against their limit ({active} active)")
    assert active == 0
    assert ended_as == "done"
    posted = await discord_fake.wait_for_message(lambda m: not m.deleted and m.attachments and m.interaction_id is None)
    assert posted.content == f"✅ <@{ALICE}>, your image is ready." and posted.mentions == [ALICE]


async def test_sharded_bot_serves_commands(comfies, monkeypatch, tmp_path):
    fake = FakeDiscord(shard_count=2)
    await fake.start()
    fake.install(monkeypatch)
    harness = Running(fake)
    try:
        bot = await harness.start(bot_settings(tmp_path, comfies[0].url, discord_sharded=True))
        await asyncio.wait_for(bot.wait_until_ready(), 10)  # both shards connected
        assert isinstance(bot, discord.AutoShardedClient) and bot.shard_count == 2
        assert any(r["path"] == "/gateway/bot" for r in fake.requests)
        message = await result_of(fake, await fake.slash("generate", {"prompt": "sharded", "width": 64, "height": 64}))
        assert message.attachments
    finally:
        await harness.stop()
        await fake.stop()


async def test_a_job_moved_off_a_dead_server_shows_it_waits_again(comfies, discord_fake, running, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr("ui.delivery.TICK", 0.3)  # a run's clock ticks fast: it must stop when the run is lost
    x, y = comfies
    x.node_delay = 1.0
    await start_bot(running, tmp_path, comfies, server_capacity=1, server_grace=0.5)
    alice = await discord_fake.slash("generate", {"prompt": "moved", "width": 64, "height": 64})
    await wait_until(lambda: x.running_id(), 5, "alice's job running on x")
    y.pause()
    bob = await discord_fake.slash("generate", {"prompt": "busy", "width": 64, "height": 64}, user_id=BOB,
                                   username="bob")
    await wait_until(lambda: posted_jobs(y), 5, "bob's job holding y")
    progress = discord_fake.messages[alice.original_message_id]
    await discord_fake.wait_for(lambda: progress.content.startswith("🎨"), timeout=10)
    await x.stop()
    waiting = "⏳ Waiting for your image: 1 job is ahead of yours."  # bob's, handed to y before it
    await discord_fake.wait_for(lambda: progress.content == waiting, timeout=10)
    seen = []
    for _ in range(8):  # the lost run's clock must not paint it as running again
        seen.append(progress.content)
        await asyncio.sleep(0.2)
    assert set(seen) == {waiting}, seen
    y.resume()
    assert (await result_of(discord_fake, alice, timeout=15)).attachments
    assert (await result_of(discord_fake, bob, timeout=15)).attachments
