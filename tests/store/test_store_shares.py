"""Shares in the store, on both engines (store/shares.py and its twins): a result's public pages, made
once per choice of prompt, and revoked for good."""

from __future__ import annotations

import asyncio

from store import Generation, PostgresStore, Store
from tests.store.test_store import WAIT, open_stores, rows

GUILD, OWNER, MODERATOR = 41, 21, 22


async def result(store: Store | PostgresStore, guild_id: int | None = GUILD) -> Generation:
    return await store.add_generation(Generation(
        id=None, job_id=None, kind="txt2img", user_id=OWNER, guild_id=guild_id, channel_id=5,
        params={"prompt": "a red fox"}, files=["fox.png"], server="s", duration=1.0))


async def test_a_result_is_shared_once_per_choice_of_prompt_and_revoked_for_good(any_store) -> None:
    made = await result(any_store)
    with_prompt = await any_store.share_result(made.id, GUILD, OWNER, True)
    assert (with_prompt.generation_id, with_prompt.guild_id, with_prompt.owner_id, with_prompt.show_prompt,
            with_prompt.revoked_at) == (made.id, GUILD, OWNER, True, None)
    assert len(with_prompt.token) == 20 and with_prompt.created_at > 0
    # sharing again with the same choice gives the same link; the other choice is another link
    assert await any_store.share_result(made.id, GUILD, OWNER, True) == with_prompt
    without = await any_store.share_result(made.id, GUILD, OWNER, False)
    assert without.token != with_prompt.token and not without.show_prompt
    assert await any_store.live_shares(made.id) == [with_prompt, without]
    assert await any_store.get_share(with_prompt.token) == with_prompt

    assert await any_store.revoke_share(with_prompt.token, MODERATOR)
    assert not await any_store.revoke_share(with_prompt.token, OWNER)  # once
    assert not await any_store.revoke_share("x" * 20, OWNER)  # unknown
    revoked = await any_store.get_share(with_prompt.token)
    assert revoked.revoked_by == MODERATOR and revoked.revoked_at >= revoked.created_at
    assert await any_store.live_shares(made.id) == [without]
    # a revoked link never comes back: sharing again makes a new one
    again = await any_store.share_result(made.id, GUILD, OWNER, True)
    assert again.token not in (with_prompt.token, without.token)
    assert await any_store.get_share("no such token here!") is None
    assert await rows(any_store, "SELECT count(*) FROM shares WHERE generation_id = $1", made.id) == [(3,)]


async def test_a_result_outside_servers_is_shared_with_no_server(any_store) -> None:
    made = await result(any_store, guild_id=None)
    share = await any_store.share_result(made.id, None, OWNER, False)
    assert share.guild_id is None and (await any_store.get_share(share.token)).guild_id is None


async def test_two_bot_processes_sharing_a_result_at_once_make_one_link(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        made = await result(stores[0])
        shares = await asyncio.wait_for(asyncio.gather(
            *(stores[n % 2].share_result(made.id, GUILD, OWNER, True) for n in range(10))), WAIT)
        assert len({share.token for share in shares}) == 1
        assert len(await stores[1].live_shares(made.id)) == 1
    finally:
        for store in stores:
            await store.close()
