"""The store's search over results: scoped to one person in one server, full text that treats every
word as a word, favorites, deletion and saved searches."""

from __future__ import annotations

import pytest

from store.gallery import Query, match_expression
from tests.store.test_store import db, make_generation, path  # noqa: F401 (fixtures)


async def add(db, prompt: str, **overrides):  # noqa: F811
    return await db.add_generation(make_generation(params={"prompt": prompt, "model": "sd15"}, **overrides))


async def test_search_is_scoped_ranked_newest_first_and_skips_deleted(db):  # noqa: F811
    fox = await add(db, "A red fox in snow", user_id=1, guild_id=10)
    whale = await add(db, "a blue whale", user_id=1, guild_id=10)
    await add(db, "a red fox elsewhere", user_id=1, guild_id=11)
    await add(db, "someone else's fox", user_id=2, guild_id=10)
    found, total = await db.find_generations(Query(1, 10))
    assert [g.id for g in found] == [whale.id, fox.id] and total == 2
    assert [g.id for g in (await db.find_generations(Query(1, 10, text="FOX sno")))[0]] == [fox.id]
    assert (await db.find_generations(Query(1, 10, text="fox", model="other")))[1] == 0
    await db.mark_deleted(fox.id)
    assert (await db.find_generations(Query(1, 10, text="fox")))[1] == 0
    assert (await db.get_generation(fox.id)).deleted_at is not None


@pytest.mark.parametrize("text", ['"', 'fox" OR "whale', "NEAR(fox whale)", "fox*", "-fox", "fox AND", "(", "^x",
                                  "a:b", "  ", "🦊", "x" * 500])
async def test_any_text_searches_without_an_error(db, text):  # noqa: F811
    await add(db, "a red fox", user_id=1, guild_id=None)
    found, total = await db.find_generations(Query(1, None, text=text))
    assert total == len(found) <= 1


def test_every_word_is_quoted_and_all_are_required():
    assert match_expression('red "fox" OR whale*') == '"red" "fox" "OR" "whale"*'
    assert match_expression("?!") is None


async def test_favorites_and_saved_searches_belong_to_their_people(db):  # noqa: F811
    one = await add(db, "one", user_id=1, guild_id=10)
    two = await add(db, "two", user_id=1, guild_id=10)
    await db.set_favorite(1, one.id, True)
    await db.set_favorite(1, one.id, True)  # twice is once
    await db.set_favorite(2, two.id, True)
    assert await db.favorite_ids(1, [one.id, two.id]) == {one.id}
    assert [g.id for g in (await db.find_generations(Query(1, 10, favorites=True)))[0]] == [one.id]
    await db.set_favorite(1, one.id, False)
    assert await db.favorite_ids(1, [one.id]) == set()
    saved = await db.save_query(7, Query(1, 10, text="two", favorites=True))
    assert await db.saved_query(saved) == (7, Query(1, 10, text="two", favorites=True))
    assert await db.saved_query(saved + 1) is None
    assert len(await db.link_secret()) == 64 and await db.link_secret() == await db.link_secret()
