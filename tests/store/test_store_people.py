"""Tests for what the store keeps for people (store/people.py and its twins in store/postgres/people.py):
each person's defaults and the styles people and servers saved, on both engines; and on PostgreSQL, the
limit on saved styles held across two bot processes sharing the database."""

from __future__ import annotations

import asyncio

from store import PostgresStore, SavedStyle, Store
from tests.store.test_store import WAIT, open_stores, rows, stored_text

GUILD = 1234567890123456789  # Discord ids pass 2**53: they must come back exact


def style(name: str, *, owner_id: int = 11, guild_id: int = GUILD, **overrides) -> SavedStyle:
    values = {"guild_id": guild_id, "owner_id": owner_id, "name": name, "prompt": f"{name}, detailed",
              "negative": "blurry", "nsfw": False, "created_by": owner_id or 99, **overrides}
    return SavedStyle(**values)


async def test_preferences_are_saved_replaced_and_forgotten(any_store: Store | PostgresStore) -> None:
    user = 2**63 - 1
    assert await any_store.preferences(user) == {}

    await any_store.set_preferences(user, {"model": "sdxl", "steps": 30, "cfg": 7.5, "seed": 2**62})
    await any_store.set_preferences(user, {"model": "sd15", "negative": 'no "text"'})
    await any_store.set_preferences(7, {"model": "other"})

    assert await any_store.preferences(user) == {"model": "sd15", "negative": 'no "text"'}
    assert await rows(any_store, "SELECT prefs FROM preferences WHERE user_id = $1", user) == [
        ('{"model":"sd15","negative":"no \\"text\\""}',)]
    await any_store.set_preferences(user, {})
    assert await any_store.preferences(user) == {}
    assert await rows(any_store, "SELECT user_id FROM preferences") == [(7,)]
    await any_store.set_preferences(user, {})  # forgetting nothing is no error


async def test_a_style_is_saved_replaced_listed_and_deleted(any_store: Store | PostgresStore) -> None:
    owner = 987654321098765432
    assert await any_store.save_style(style("noir", owner_id=owner), limit=2)
    assert await any_store.save_style(style("noir", owner_id=owner, prompt="film noir", nsfw=True), limit=2)
    assert await any_store.save_style(style("anime", owner_id=0, created_by=owner), limit=2)

    assert await any_store.styles(GUILD, owner) == [
        style("noir", owner_id=owner, prompt="film noir", nsfw=True), style("anime", owner_id=0, created_by=owner)]
    assert await any_store.styles(GUILD, 5) == [style("anime", owner_id=0, created_by=owner)]
    assert await any_store.styles(GUILD + 1, owner) == []
    assert await any_store.delete_style(GUILD, owner, "noir") is True
    assert await any_store.delete_style(GUILD, owner, "noir") is False
    assert await any_store.delete_style(GUILD, owner, "anime") is False  # the server's, not the person's
    assert await any_store.styles(GUILD, owner) == [style("anime", owner_id=0, created_by=owner)]


async def test_styles_come_the_persons_first_then_the_servers_each_by_code_point(
    any_store: Store | PostgresStore,
) -> None:
    for name in ("épique", "b", "Zed", "a", "B"):
        assert await any_store.save_style(style(name), limit=10)
        assert await any_store.save_style(style(name, owner_id=0), limit=10)

    listed = [(saved.owner_id, saved.name) for saved in await any_store.styles(GUILD, 11)]

    names = ["B", "Zed", "a", "b", "épique"]  # as SQLite's BINARY collation sorts, whatever the locale
    assert listed == [(11, name) for name in names] + [(0, name) for name in names]


async def test_the_style_limit_counts_the_owners_others_in_that_server(any_store: Store | PostgresStore) -> None:
    assert await any_store.save_style(style("one"), limit=2)
    assert await any_store.save_style(style("two"), limit=2)

    assert await any_store.save_style(style("three"), limit=2) is False  # nothing saved
    assert await any_store.save_style(style("two", prompt="changed"), limit=2)  # replacing is not another
    assert await any_store.save_style(style("three", owner_id=12), limit=2)  # someone else's count
    assert await any_store.save_style(style("three", guild_id=GUILD + 1), limit=2)  # another server's
    assert await any_store.save_style(style("three", owner_id=0), limit=2)  # the server's own

    assert [saved.name for saved in await any_store.styles(GUILD, 11)] == ["one", "two", "three"]
    assert (await any_store.styles(GUILD, 11))[1].prompt == "changed"


async def test_nul_characters_in_a_style_and_preferences_are_kept_as_the_engine_can(
    any_store: Store | PostgresStore,
) -> None:
    """SQLite keeps a NUL as it is; PostgreSQL's text cannot hold one, so U+FFFD is kept in its place."""
    name, prompt = "my\x00style", "a cat\x00, detailed"
    assert await any_store.save_style(style(name, prompt=prompt, negative="\x00"), limit=3)
    await any_store.set_preferences(11, {"negative": "bad\x00hands"})

    assert await any_store.styles(GUILD, 11) == [style(stored_text(any_store, name), prompt=stored_text(
        any_store, prompt), negative=stored_text(any_store, "\x00"))]
    assert await any_store.preferences(11) == {"negative": stored_text(any_store, "bad\x00hands")}
    assert await any_store.save_style(style(name, prompt="again"), limit=1)  # the same style, replaced
    assert await any_store.delete_style(GUILD, 11, name) is True
    assert await any_store.styles(GUILD, 11) == []


async def test_the_style_limit_holds_for_a_burst_of_concurrent_saves(any_store: Store | PostgresStore) -> None:
    saved = await asyncio.wait_for(asyncio.gather(*(
        any_store.save_style(style(f"style {n}"), limit=3) for n in range(50))), WAIT)

    assert sum(saved) == 3
    assert await rows(any_store, "SELECT count(*) FROM styles") == [(3,)]


async def test_the_style_limit_holds_across_two_bot_processes(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        saved = await asyncio.wait_for(asyncio.gather(*(
            stores[n % 2].save_style(style(f"style {n}", owner_id=2**62), limit=3) for n in range(50))), WAIT)

        assert sum(saved) == 3
        names = {f"style {n}" for n, accepted in enumerate(saved) if accepted}
        assert {kept.name for kept in await stores[1].styles(GUILD, 2**62)} == names
        assert await rows(stores[0], "SELECT count(*) FROM styles") == [(3,)]
    finally:
        for store in stores:
            await store.close()
