"""The bot split over shards, through the fake Discord and the fake ComfyUI: with SHARD_COUNT and
SHARD_IDS each bot (a separate client, as a separate process would be) serves the guilds of its own
shards only; with SHARD_COUNT alone one bot serves them all.

Each bot has its own data folder here (its own database), so which bot ran a job is told by whose
store holds it, and by the shard its "job_started" log line names.
"""

from __future__ import annotations

import discord
from structlog.testing import capture_logs

from store import JOB_STATES
from tests.bot_harness import Running, bot_settings, result_of
from tests.fakes.discord import FakeDiscord, Message

ALICE, BOB = "5001", "6001"


async def generate(discord_fake: FakeDiscord, prompt: str, channel_id: str, user_id: str) -> tuple[object, Message]:
    """/generate in a channel: the interaction and the message with its result."""
    interaction = await discord_fake.slash("generate", {"prompt": prompt, "width": 64, "height": 64},
                                           user_id=user_id, channel_id=channel_id)
    return interaction, await result_of(discord_fake, interaction)


async def healthy(discord_fake: FakeDiscord, *bots) -> None:
    await discord_fake.wait_for(lambda: all(bot.scheduler is not None and bot.scheduler.pool.any_healthy()
                                            for bot in bots), timeout=10)


async def jobs_of(bot) -> list[tuple[int, int, str]]:
    """(guild, user, prompt) of every job in the bot's own store."""
    return [(job.guild_id, job.user_id, job.request["prompt"]) for job in await bot.store.jobs_in(JOB_STATES)]


def started(logs: list[dict]) -> dict[int, int]:
    """{interaction id: the shard named by its "job_started" line}."""
    return {entry["interaction_id"]: entry["shard"] for entry in logs if entry["event"] == "job_started"}


async def test_each_bot_answers_the_guilds_of_its_own_shard(comfy, discord_fake, tmp_path):
    other = discord_fake.add_guild(shard=1, shard_count=2, name="Other")
    first, second = Running(discord_fake), Running(discord_fake)
    with capture_logs() as logs:
        try:
            bot0 = await first.start(bot_settings(tmp_path / "zero", comfy.url, shard_count=2, shard_ids=[0]))
            bot1 = await second.start(bot_settings(tmp_path / "one", comfy.url, shard_count=2, shard_ids=[1]))
            await healthy(discord_fake, bot0, bot1)
            here, here_result = await generate(discord_fake, "a fox here", discord_fake.channel_id, ALICE)
            there, there_result = await generate(discord_fake, "a fox there", other.channel_id, BOB)
            jobs = (await jobs_of(bot0), await jobs_of(bot1))
            guilds = ({g.id for g in bot0.guilds}, {g.id for g in bot1.guilds})
            assert isinstance(bot0, discord.AutoShardedClient) and (bot0.shard_ids, bot1.shard_ids) == ([0], [1])
        finally:
            await first.stop()
            await second.stop()
    assert guilds == ({int(discord_fake.guild_id)}, {int(other.id)})
    assert (here.guild_id, there.guild_id) == (discord_fake.guild_id, other.id)
    assert here.connection != there.connection
    assert started(logs) == {int(here.id): 0, int(there.id): 1}  # each job started on its guild's shard only
    assert jobs == ([(int(discord_fake.guild_id), int(ALICE), "a fox here")],
                    [(int(other.id), int(BOB), "a fox there")])
    for result, channel, user in ((here_result, discord_fake.channel_id, ALICE),
                                  (there_result, other.channel_id, BOB)):
        assert result.channel_id == channel and result.attachments and result.mentions == [user]
        assert result.content == f"✅ <@{user}>, your image is ready."
    assert not discord_fake.violations


async def test_one_bot_with_a_shard_count_serves_every_shard(comfy, discord_fake, tmp_path):
    other = discord_fake.add_guild(shard=1, shard_count=2)
    harness = Running(discord_fake)
    with capture_logs() as logs:
        try:
            bot = await harness.start(bot_settings(tmp_path, comfy.url, shard_count=2))
            await healthy(discord_fake, bot)
            here, here_result = await generate(discord_fake, "a fox here", discord_fake.channel_id, ALICE)
            there, there_result = await generate(discord_fake, "a fox there", other.channel_id, ALICE)
            assert (bot.shard_count, sorted(bot.shards)) == (2, [0, 1])
        finally:
            await harness.stop()
    assert not any(r["path"] == "/gateway/bot" for r in discord_fake.requests)  # the count is the operator's
    assert sorted(g["d"]["shard"] for g in discord_fake.gateway_received if g["op"] == 2) == [[0, 2], [1, 2]]
    assert started(logs) == {int(here.id): 0, int(there.id): 1}
    assert here_result.channel_id == discord_fake.channel_id and there_result.channel_id == other.channel_id
    assert here_result.attachments and there_result.attachments
    assert not discord_fake.violations
