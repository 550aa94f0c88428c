"""Tests for the workflows people bring (store/user_workflows.py and its twins in
store/postgres/user_workflows.py), on both engines: saving and versions, restoring, sharing with the
server, soft deletion, search by name and tag, ratings, the per-owner limit; and on PostgreSQL, new
versions saved by two bot processes at once never share a number."""

from __future__ import annotations

import asyncio

import pytest

from store import PostgresStore, Store
from store.user_workflows import UserWorkflow
from tests.store.test_store import WAIT, open_stores, rows, stored_text

GUILD = 1234567890123456789  # Discord ids pass 2**53: they must come back exact
OWNER = 987654321098765432
OTHER = 11
MODERATOR = 12


def graph(seed: int = 1, prompt: str = "a fox") -> dict:
    return {"3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 20}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt}}}


BINDINGS = {"prompt": ["6", "text"], "seed": ["3", "seed"]}


async def save(store: Store | PostgresStore, name: str, *, owner: int = OWNER, guild: int = GUILD, seed: int = 1,
               limit: int = 10, **options) -> UserWorkflow | None:
    options = {"bindings": BINDINGS, "source_format": "api", **options}
    return await store.save_workflow(guild, owner, name, graph(seed), limit=limit, **options)


async def names(store: Store | PostgresStore, user: int, guild: int = GUILD, **search) -> list[str]:
    return [found.name for found in await store.workflows_for(guild, user, **search)]


async def test_each_change_is_a_new_version_numbered_from_1(any_store: Store | PostgresStore) -> None:
    first = await save(any_store, "portrait", tags=["SDXL", " Faces ", "sdxl", ""])
    assert (first.guild_id, first.owner_id, first.name, first.version) == (GUILD, OWNER, "portrait", 1)
    assert first.tags == ("sdxl", "faces") and first.shared is False and first.deleted_at is None
    assert (first.rating, first.ratings) == (None, 0)

    second = await save(any_store, "portrait", seed=2, source_format="ui", by=MODERATOR)
    assert (second.id, second.version, second.tags) == (first.id, 2, ("sdxl", "faces"))  # tags None: kept
    same = await save(any_store, "  portrait ", seed=2, source_format="ui", tags=["new"])
    assert (same.id, same.version, same.tags) == (first.id, 2, ("new",))  # the same graph is no change

    assert await any_store.workflow(first.id) == same
    assert await any_store.workflow_by_name(GUILD, OWNER, "portrait") == same
    assert await any_store.workflow_by_name(GUILD, OTHER, "portrait") is None
    assert await any_store.workflow(first.id + 100) is None
    versions = await any_store.versions(first.id)
    assert [(v.version, v.graph, v.source_format, v.created_by) for v in versions] == [
        (2, graph(2), "ui", MODERATOR), (1, graph(1), "api", OWNER)]
    assert versions[1].bindings == BINDINGS and versions[1].restored_from is None
    assert await any_store.version(first.id, 1) == versions[1]
    assert await any_store.version(first.id, 3) is None
    assert await any_store.versions(first.id + 100) == []


async def test_restoring_an_older_version_makes_a_new_one_equal_to_it(any_store: Store | PostgresStore) -> None:
    saved = await save(any_store, "upscale")
    await save(any_store, "upscale", seed=2)

    restored = await any_store.restore_version(saved.id, 1, MODERATOR)

    assert restored.version == 3
    newest = await any_store.version(saved.id, 3)
    assert (newest.graph, newest.bindings, newest.restored_from) == (graph(1), BINDINGS, 1)
    assert newest.created_by == MODERATOR
    assert (await any_store.version(saved.id, 2)).graph == graph(2)  # history is kept
    assert await any_store.restore_version(saved.id, 9, OWNER) is None
    assert await any_store.restore_version(saved.id + 100, 1, OWNER) is None
    assert (await save(any_store, "upscale", seed=5)).version == 4


async def test_only_shared_workflows_are_seen_by_others_and_never_in_another_server(
    any_store: Store | PostgresStore,
) -> None:
    mine = await save(any_store, "mine")
    public = await save(any_store, "public")
    await save(any_store, "theirs", owner=OTHER)

    shared = await any_store.share(public.id, True, MODERATOR)
    assert (shared.shared, shared.shared_by) == (True, MODERATOR)

    assert await names(any_store, OWNER) == ["mine", "public"]
    assert await names(any_store, OTHER) == ["theirs", "public"]  # the person's own first
    assert await names(any_store, OTHER, GUILD + 1) == []
    assert await names(any_store, 5) == ["public"]

    unshared = await any_store.share(public.id, False, OWNER)
    assert (unshared.shared, unshared.shared_by) == (False, None)
    assert await names(any_store, 5) == []
    assert await any_store.share(mine.id + 100, True, OWNER) is None


async def test_a_deleted_workflow_is_hidden_but_its_versions_stay(any_store: Store | PostgresStore) -> None:
    saved = await save(any_store, "gone")
    await any_store.share(saved.id, True, OWNER)
    await any_store.rate(saved.id, OTHER, 4)

    assert await any_store.delete_workflow(saved.id) is True
    assert await any_store.delete_workflow(saved.id) is False
    assert await any_store.delete_workflow(saved.id + 100) is False

    assert await names(any_store, OWNER) == [] and await names(any_store, OTHER) == []
    assert await any_store.workflow_by_name(GUILD, OWNER, "gone") is None
    hidden = await any_store.workflow(saved.id)
    assert hidden.deleted_at is not None and hidden.shared is False
    assert (await any_store.version(saved.id, 1)).graph == graph(1)  # an old job can still be told what it ran
    assert await any_store.share(saved.id, True, OWNER) is None
    assert await any_store.rate(saved.id, OTHER, 5) is None
    assert await any_store.restore_version(saved.id, 1, OWNER) is None

    back = await save(any_store, "gone")  # the same name again brings it back, not shared, as a new version
    assert (back.id, back.version, back.shared, back.deleted_at) == (saved.id, 2, False, None)
    assert await names(any_store, OWNER) == ["gone"]


async def test_search_matches_words_of_names_and_tags_and_takes_wildcards_literally(
    any_store: Store | PostgresStore,
) -> None:
    await save(any_store, "100% Real", tags=["photo"])
    await save(any_store, "100 percent", tags=["photo", "sdxl"])
    await save(any_store, "a_b", tags=["anime"])
    await save(any_store, "axb", tags=["sd"])
    await save(any_store, "Épique", tags=["Paint"])

    assert await names(any_store, OWNER, query="%") == ["100% Real"]
    assert await names(any_store, OWNER, query="_") == ["a_b"]
    assert await names(any_store, OWNER, query="\\") == []
    assert await names(any_store, OWNER, query="100") == ["100 percent", "100% Real"]
    assert await names(any_store, OWNER, query="REAL") == ["100% Real"]
    assert await names(any_store, OWNER, query="épique") == ["Épique"]  # beyond ASCII too
    assert await names(any_store, OWNER, query="100 sdxl") == ["100 percent"]  # every word, name or tag
    assert await names(any_store, OWNER, query="paint") == ["Épique"]
    assert await names(any_store, OWNER, tag="PHOTO") == ["100 percent", "100% Real"]
    assert await names(any_store, OWNER, tag="sd") == ["axb"]  # a whole tag, not a part of one
    assert await names(any_store, OWNER, tag="%") == []
    assert await names(any_store, OWNER, query="real", tag="sdxl") == []
    assert await names(any_store, OWNER, query="   ") == await names(any_store, OWNER)
    assert await names(any_store, OWNER, limit=2, offset=1) == ["100% Real", "a_b"]  # by code point


async def test_ratings_average_and_one_per_person(any_store: Store | PostgresStore) -> None:
    saved = await save(any_store, "rated")
    assert await any_store.rating(saved.id) == (None, 0)

    assert await any_store.rate(saved.id, OTHER, 5) == (5.0, 1)
    assert await any_store.rate(saved.id, MODERATOR, 4) == (4.5, 2)
    assert await any_store.rate(saved.id, OTHER, 1) == (2.5, 2)  # replaced, not added
    await any_store.rate(saved.id, OWNER, 2)

    assert await any_store.rating(saved.id) == (7 / 3, 3)
    found = await any_store.workflow(saved.id)
    assert (found.rating, found.ratings) == (7 / 3, 3)
    assert await any_store.rate(saved.id + 100, OTHER, 3) is None
    for stars in (0, 6, -1, 2.5, True, "5"):
        with pytest.raises(ValueError, match=f"a rating is 1 to 5 stars, not {stars!r}"):
            await any_store.rate(saved.id, OTHER, stars)
    assert await any_store.rating(saved.id) == (7 / 3, 3)


async def test_the_limit_counts_the_owners_other_workflows_in_that_server(any_store: Store | PostgresStore) -> None:
    first = await save(any_store, "one", limit=2)
    await save(any_store, "two", limit=2)

    assert await save(any_store, "three", limit=2) is None  # nothing saved
    assert await any_store.workflow_by_name(GUILD, OWNER, "three") is None
    assert (await save(any_store, "two", seed=2, limit=2)).version == 2  # a new version is not another
    assert await save(any_store, "three", owner=OTHER, limit=2)  # someone else's count
    assert await save(any_store, "three", guild=GUILD + 1, limit=2)  # another server's

    await any_store.delete_workflow(first.id)
    assert await save(any_store, "three", limit=2)  # a deleted one frees its place
    assert await save(any_store, "one", limit=2) is None  # and bringing it back needs one
    assert await names(any_store, OWNER) == ["three", "two"]


async def test_bad_workflows_are_refused_in_words(any_store: Store | PostgresStore) -> None:
    with pytest.raises(ValueError, match="a workflow needs a name"):
        await save(any_store, "  ")
    with pytest.raises(ValueError, match="a workflow is uploaded as api, ui, png, webp, not 'gif'"):
        await save(any_store, "x", source_format="gif")
    with pytest.raises(ValueError, match="graph and bindings are JSON objects"):
        await any_store.save_workflow(GUILD, OWNER, "x", [1, 2], bindings={}, source_format="api", limit=3)
    assert await rows(any_store, "SELECT count(*) FROM user_workflows") == [(0,)]


async def test_nul_characters_are_kept_as_the_engine_can(any_store: Store | PostgresStore) -> None:
    name = "my\x00flow"
    saved = await any_store.save_workflow(GUILD, OWNER, name, {"1": {"inputs": {"text": "a\x00b"}}}, bindings={},
                                          source_format="png", tags=["t\x00ag"], limit=3)
    assert saved.name == stored_text(any_store, name)
    assert (await any_store.version(saved.id, 1)).graph == {"1": {"inputs": {"text": stored_text(any_store, "a\x00b")}}}
    assert await any_store.workflow_by_name(GUILD, OWNER, name) == saved
    assert await names(any_store, OWNER, query="flow") == [saved.name]


async def test_a_burst_of_saves_numbers_every_version_once(any_store: Store | PostgresStore) -> None:
    saved = await asyncio.wait_for(asyncio.gather(*(save(any_store, "busy", seed=n) for n in range(30))), WAIT)

    assert len({found.id for found in saved}) == 1
    assert sorted(found.version for found in saved) == list(range(1, 31))
    assert await rows(any_store, "SELECT count(*), count(DISTINCT version), max(version) FROM workflow_versions") == [
        (30, 30, 30)]


async def test_two_bot_processes_never_give_two_versions_one_number(pg_dsn: str) -> None:
    stores = await open_stores(pg_dsn, 2)
    try:
        first = await save(stores[0], "shared")
        work = [save(stores[n % 2], "shared", seed=n + 2) for n in range(30)]
        work += [stores[n % 2].restore_version(first.id, 1, MODERATOR) for n in range(10)]
        work += [save(stores[n % 2], f"new {n % 3}", owner=2**62, limit=2) for n in range(12)]
        done = await asyncio.wait_for(asyncio.gather(*work), WAIT)

        assert sorted(found.version for found in done[:40]) == list(range(2, 42))
        latest = await stores[1].workflow(first.id)
        assert latest.version == 41
        assert [v.version for v in await stores[0].versions(first.id)] == list(range(41, 0, -1))
        kept = {found.name for found in done[40:] if found is not None}
        assert len(kept) == 2  # the limit held, and each new name was made once
        assert await rows(stores[0], "SELECT count(*) FROM user_workflows WHERE owner_id = $1", 2**62) == [(2,)]
    finally:
        for store in stores:
            await store.close()
