"""Tests of the fake Discord's guilds and shards (tests/fakes/discord.py): what each gateway connection
is sent, the refusals of a bad or missing shard, and several bots (separate clients, as separate
processes would be) sharing one fake and its rules."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import discord
import pytest

from tests.fakes.discord import FakeDiscord, guild_id_on_shard, shard_of
from tests.fakes.test_fake_discord import PNG, FakeBot, FakeShardedBot




class QuickShardedBot(FakeShardedBot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No wait between shards: discord.py waits 5 s before each IDENTIFY but the first, for Discord's
        identify rate limit, which the fake does not enforce."""


@contextlib.asynccontextmanager
async def serving(fake: FakeDiscord, instance: str, cls=QuickShardedBot, *, ready: list[tuple[int, int]], **options):
    """A bot (its own client) running until the block ends, once the fake saw each shard of ``ready``."""
    bot = cls(instance, **options)
    task = asyncio.create_task(bot.start("fake-token"))
    try:
        for shard in ready:
            waiting = asyncio.create_task(fake.wait_ready(shard=shard))
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                waiting.cancel()
                task.result()
                raise AssertionError("bot.start() returned before the bot was ready")
            waiting.result()
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(task, 5)


async def ping(fake: FakeDiscord, channel_id: str | None = None, text: str = "hi"):
    """/ping in a channel (of any guild, or a DM): the interaction and the bot's followup with the PNG."""
    ia = await fake.slash("ping", {"text": text}, channel_id=channel_id)
    return ia, await fake.wait_for_message(lambda m: m.interaction_id == ia.id and m.attachments)


async def gateway_bot(fake: FakeDiscord) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": "Bot x"}) as http:
        async with http.get(fake.api_url + "/gateway/bot") as resp:
            assert resp.status == 200
            return await resp.json()


def sent(fake: FakeDiscord, event: str) -> list[tuple[int, tuple[int, int], str | None]]:
    """(connection, shard, guild id) of each ``event`` the fake sent."""
    def guild(d: dict) -> str | None:
        return d["id"] if event.startswith("GUILD_") else d.get("guild_id")

    return [(s["connection"], s["shard"], guild(s["d"])) for s in fake.gateway_sent if s["t"] == event]


def test_guild_ids_fall_on_the_asked_shard():
    for count in (1, 2, 3, 16):
        for shard in range(count):
            made = {guild_id_on_shard(shard, count) for _ in range(5)}
            assert len(made) == 5 and {shard_of(g, count) for g in made} == {shard}
    with pytest.raises(ValueError):
        guild_id_on_shard(2, 2)


async def test_gateway_bot_recommends_shards_and_counts_session_starts(make_fake):
    fake = await make_fake(shard_count=3, max_concurrency=2)
    before = await gateway_bot(fake)
    assert before["shards"] == 3 and before["url"] == fake.gateway_url
    assert before["session_start_limit"]["total"] == before["session_start_limit"]["remaining"] == 1000
    assert before["session_start_limit"]["max_concurrency"] == 2
    assert 0 < before["session_start_limit"]["reset_after"] <= 24 * 3600 * 1000
    async with serving(fake, "auto", ready=[(0, 3), (1, 3), (2, 3)]) as bot:
        assert bot.shard_count == 3
    assert sorted(g["d"]["shard"] for g in fake.gateway_received if g["op"] == 2) == [[0, 3], [1, 3], [2, 3]]
    assert (await gateway_bot(fake))["session_start_limit"]["remaining"] == 997


async def test_each_connection_gets_ready_with_the_guilds_of_its_shard_only(make_fake):
    fake = await make_fake(shard_count=2)
    second = fake.add_guild(shard=1, shard_count=2, name="Second")
    third = fake.add_guild(shard=1, shard_count=2)
    async with serving(fake, "bot1", ready=[(0, 2)], shard_count=2, shard_ids=[0]) as bot1, \
            serving(fake, "bot2", ready=[(1, 2)], shard_count=2, shard_ids=[1]) as bot2:
        assert {g.id for g in bot1.guilds} == {int(fake.guild_id)}
        assert {g.id for g in bot2.guilds} == {int(second.id), int(third.id)}
        assert bot2.get_guild(int(second.id)).name == "Second"
        assert [c.id for c in bot2.get_guild(int(second.id)).channels] == [int(second.channel_id)]
        assert [c.id for c in bot1.get_guild(int(fake.guild_id)).channels] == [int(fake.channel_id)]
    readies = {s["shard"]: s["d"] for s in fake.gateway_sent if s["t"] == "READY"}
    assert readies[(0, 2)]["shard"] == [0, 2] and readies[(1, 2)]["shard"] == [1, 2]
    assert [g["id"] for g in readies[(0, 2)]["guilds"]] == [fake.guild_id]
    assert [g["id"] for g in readies[(1, 2)]["guilds"]] == [second.id, third.id]
    assert sorted((shard, gid) for _, shard, gid in sent(fake, "GUILD_CREATE")) == sorted(
        [((0, 2), fake.guild_id), ((1, 2), second.id), ((1, 2), third.id)])
    assert not fake.violations


async def test_interactions_and_guild_events_go_to_the_shard_of_their_guild(make_fake):
    fake = await make_fake(shard_count=2)
    other = fake.add_guild(shard=1, name="Other")
    async with serving(fake, "bot1", ready=[(0, 2)], shard_count=2, shard_ids=[0]) as bot1, \
            serving(fake, "bot2", ready=[(1, 2)], shard_count=2, shard_ids=[1]) as bot2:
        first, second = fake.connections()
        ia1, msg1 = await ping(fake)
        ia2, msg2 = await ping(fake, other.channel_id)
        await fake.click(msg2.id, "ping:1")  # a click in the other guild, on its message
        reply = await fake.wait_for_message(lambda m: m.content.startswith("clicked 1"))
        dm, in_dm = await ping(fake, fake.dm_channel("5001"), "in a DM")
        update = dict(fake._guild_payload(other.id), name="Renamed")
        assert await fake.dispatch("GUILD_UPDATE", update) == second[0]
        await fake.wait_for(lambda: bot2.get_guild(int(other.id)).name == "Renamed")
        assert bot1.get_guild(int(other.id)) is None and bot2.get_guild(int(fake.guild_id)) is None
    assert (ia1.connection, ia1.guild_id) == (first[0], fake.guild_id)
    assert (ia2.connection, ia2.guild_id) == (second[0], other.id)
    assert (msg1.channel_id, msg2.channel_id) == (fake.channel_id, other.channel_id)
    assert reply.content == f"clicked 1 by alice on bot2: pong.png {len(PNG)} bytes 4x3"
    assert bot2.events == [("click", 1, True)] and bot1.events == []
    assert dm.connection == first[0] and dm.guild_id is None and "guild_id" not in dm.payload
    assert in_dm.content == "pong: in a DM" and dm.payload["user"]["id"] == "5001"
    shards = {conn: shard for conn, shard, _ in sent(fake, "INTERACTION_CREATE")}
    assert shards == {first[0]: (0, 2), second[0]: (1, 2)}
    assert [(shard, gid) for _, shard, gid in sent(fake, "INTERACTION_CREATE")] == [
        ((0, 2), fake.guild_id), ((1, 2), other.id), ((1, 2), other.id), ((0, 2), None)]
    assert not fake.violations


@pytest.mark.parametrize("cls, options, shard", [
    (FakeShardedBot, {"shard_count": 2, "shard_ids": [2]}, [2, 2]),  # id >= count
    (FakeBot, {"shard_id": 0, "shard_count": 0}, [0, 0]),  # count < 1
])
async def test_an_invalid_shard_is_closed_with_4010(make_fake, cls, options, shard):
    fake = await make_fake()
    bot = cls("bad", **options)
    with pytest.raises(discord.ConnectionClosed) as closed:
        await asyncio.wait_for(bot.start("fake-token"), 5)
    await bot.close()
    assert closed.value.code == 4010
    assert fake.violations == [f"[4010 invalid-shard] IDENTIFY with shard {shard!r}"]
    assert not [s for s in fake.gateway_sent if s["t"] == "READY"]


async def test_sharding_is_required_when_one_shard_would_hold_too_many_guilds(make_fake):
    fake = await make_fake(shard_count=2, guilds_per_shard=1)
    fake.add_guild(shard=1, shard_count=2)
    bot = FakeBot("unsharded")
    with pytest.raises(discord.ConnectionClosed) as closed:
        await asyncio.wait_for(bot.start("fake-token"), 5)
    await bot.close()
    assert closed.value.code == 4011
    assert fake.violations == ["[4011 sharding-required] IDENTIFY with shard [0, 1] would hold 2 guilds (at most 1 "
                               "per shard)"]
    fake.violations.clear()
    async with serving(fake, "sharded", ready=[(0, 2), (1, 2)]) as sharded:  # the recommended count: accepted
        assert len(sharded.guilds) == 2
    assert not fake.violations


async def test_rules_hold_across_bots(make_fake):
    """One interaction, one response, one token lifetime and one edit budget, whichever client calls."""
    fake = await make_fake(shard_count=2, edit_limit=(3, 60.0))
    other = fake.add_guild(shard=1)
    async with serving(fake, "bot1", ready=[(0, 2)], shard_count=2, shard_ids=[0]) as bot1, \
            serving(fake, "bot2", ready=[(1, 2)], shard_count=2, shard_ids=[1]):
        ia, _ = await ping(fake, other.channel_id)  # bot2 answered, with 2 edits
        callback = discord.http.Route("POST", "/interactions/{iid}/{token}/callback", iid=ia.id, token=ia.token)
        with pytest.raises(discord.HTTPException) as twice:  # bot1's own HTTP client answers it too
            await asyncio.wait_for(bot1.http.request(callback, json={"type": 4, "data": {"content": "me too"}}), 5)
        assert (twice.value.status, twice.value.code) == (400, 40060)
        original = f"{fake.api_url}/webhooks/{fake.app_id}/{ia.token}/messages/@original"
        async with aiohttp.ClientSession() as third_process:
            statuses = []
            for n in range(2):
                async with third_process.patch(original, json={"content": f"edit {n}"}) as resp:
                    statuses.append(resp.status)
            fake.token_lifetime = 0.0  # the token's 15 minutes are over
            async with third_process.post(f"{fake.api_url}/webhooks/{fake.app_id}/{ia.token}",
                                          json={"content": "late"}) as resp:
                expired = (resp.status, (await resp.json())["code"])
    assert statuses == [200, 429]  # bot2 made two edits of the budget of three
    assert expired == (401, 50027)
    assert [v.split("]")[0] + "]" for v in fake.violations] == ["[40060 double-ack]", "[429 edit-rate]",
                                                                 "[50027 token-expired]"]
