"""PostgreSQL twins of store/gallery.py's queries (see store/postgres/twins.py): the same rows, return values
and errors as the SQLite functions they stand in for.

Search. SQLite matches gallery.match_expression's FTS5 query: every word quoted, all required, the last
also as a prefix. Here the same words (read back from that very expression, so both engines always
search for the same ones) become a tsquery against generations.prompt_search: each word is handed to
phraseto_tsquery with the store_search configuration, which reads it as plain text (an operator, a quote
or a colon in it is never tsquery syntax, so no input can raise), lowercases it and drops its accents as
the column did; the last word's query, as PostgreSQL printed it, gains `:*` (a prefix match); the words'
queries are ANDed. A word PostgreSQL's parser would split or drop (it holds a character the parser does
not count as part of a word, such as "²" or "½", which FTS5 keeps inside the word), or a word too long to
index, cannot be in the column as FTS5 would require it, so the search then finds nothing.

What still differs is how the two engines split the stored prompts, which the schema fixes: PostgreSQL
keeps "3.14", "example.com", "a@b.org" and a URL's parts as whole lexemes (FTS5 splits them at the
punctuation), keeps "red-fox" as well as "red" and "fox", drops "²" and "½", and unaccent also turns
letters that have no accent to drop into plain ones, on both sides of the search ("ß" is "ss", "ł" is "l",
"ø" is "o", "œ" is "oe"), where FTS5 keeps them: "strasse" finds "straße" here, not there. Words of letters
and digits, accented or not, in any case, are found alike on both engines.

The count and the page are read in one REPEATABLE READ transaction, so they agree as SQLite's one thread
made them agree. The link secret is inserted (ON CONFLICT DO NOTHING) and then read back in a second
statement, whose snapshot sees whichever process's secret won: every process signs with the same one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from typing import Any

import asyncpg

from store import gallery as sqlite_gallery
from store.gallery import Query, match_expression
from store.postgres.text import clean
from store.postgres.twins import twin_of
from store.records import GENERATION_COLUMNS, Generation, record

SEARCH_CONFIG = "store_search"  # the text search configuration of generations.prompt_search (schema.py)
_QUOTED = re.compile(r'"([^"]*)"')


def search_words(text: str) -> list[str]:
    """The words SQLite's FTS5 query for `text` requires, in order (the last one is also a prefix)."""
    expression = match_expression(text)
    return [] if expression is None else _QUOTED.findall(expression)


async def tsquery_of(conn: asyncpg.Connection, words: list[str]) -> str | None:
    """The tsquery text requiring every word (the last also as a prefix); None when a word cannot be found."""
    rows = await conn.fetch(
        f"SELECT query::text AS query, numnode(query) AS nodes, EXISTS (SELECT FROM ts_debug('{SEARCH_CONFIG}', word) "
        f"WHERE alias = 'blank') AS split FROM unnest($1::text[]) WITH ORDINALITY AS t(word, n), "
        f"phraseto_tsquery('{SEARCH_CONFIG}', word) AS query ORDER BY n", words)
    if any(row["nodes"] == 0 or row["split"] for row in rows):
        return None
    parts = [row["query"] for row in rows]
    parts[-1] += ":*"  # PostgreSQL's own printing of the phrase: the suffix makes its last lexeme a prefix
    return " & ".join(f"({part})" for part in parts)


@twin_of(sqlite_gallery._find)
async def _find(conn: asyncpg.Connection, query: Query, offset: int, limit: int) -> tuple[list[Generation], int]:
    args: list[Any] = [query.user_id]
    where = ["user_id = $1", "deleted_at IS NULL"]

    def add(condition: str, value: Any) -> None:
        args.append(value)
        where.append(condition.replace("?", f"${len(args)}"))

    if query.guild_id is None:
        where.append("guild_id IS NULL")
    else:
        add("guild_id = ?", query.guild_id)
    if query.kind:
        add("kind = ?", clean(query.kind))
    if query.model:
        add("(params::json ->> 'model') = ?", clean(query.model))
    if query.since is not None:
        add("created_at >= ?", query.since)
    if query.until is not None:
        add("created_at < ?", query.until)
    if query.favorites:
        add("id IN (SELECT generation_id FROM favorites WHERE user_id = ?)", query.user_id)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        words = search_words(query.text)
        if words:
            tsquery = await tsquery_of(conn, words)
            if tsquery is None:
                return [], 0
            add("prompt_search @@ ?::tsquery", tsquery)
        elif query.text.strip():
            return [], 0  # only punctuation: nothing can match
        clause = " AND ".join(where)
        total = await conn.fetchval(f"SELECT COUNT(*) FROM generations WHERE {clause}", *args)
        rows = await conn.fetch(f"SELECT {GENERATION_COLUMNS} FROM generations WHERE {clause} "
                                f"ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
                                *args, limit, offset)
    return [record(Generation, row) for row in rows], total


@twin_of(sqlite_gallery._set_favorite)
async def _set_favorite(conn: asyncpg.Connection, user_id: int, generation_id: int, on: bool) -> None:
    if on:
        await conn.execute("INSERT INTO favorites (user_id, generation_id, created_at) VALUES ($1, $2, $3) "
                           "ON CONFLICT (user_id, generation_id) DO NOTHING", user_id, generation_id, time.time())
    else:
        await conn.execute("DELETE FROM favorites WHERE user_id = $1 AND generation_id = $2", user_id, generation_id)


@twin_of(sqlite_gallery._favorite_ids)
async def _favorite_ids(conn: asyncpg.Connection, user_id: int, generation_ids: list[int]) -> set[int]:
    if not generation_ids:
        return set()
    rows = await conn.fetch("SELECT generation_id FROM favorites "
                            "WHERE user_id = $1 AND generation_id = ANY($2::bigint[])", user_id, list(generation_ids))
    return {row[0] for row in rows}


@twin_of(sqlite_gallery._save_query)
async def _save_query(conn: asyncpg.Connection, viewer_id: int, query: Query) -> int:
    return await conn.fetchval("INSERT INTO saved_queries (user_id, query, created_at) "
                               "VALUES ($1, $2, $3) RETURNING id", viewer_id,
                               json.dumps(clean(dataclasses.asdict(query))), time.time())


@twin_of(sqlite_gallery._saved_query)
async def _saved_query(conn: asyncpg.Connection, query_id: int) -> tuple[int, Query] | None:
    row = await conn.fetchrow("SELECT user_id, query FROM saved_queries WHERE id = $1", query_id)
    return None if row is None else (row[0], Query(**json.loads(row[1])))


@twin_of(sqlite_gallery._link_secret)
async def _link_secret(conn: asyncpg.Connection) -> str:
    # 32 random bytes as 64 lowercase hex digits, as SQLite's lower(hex(randomblob(32))). Two statements:
    # the read's snapshot is taken after the insert has waited out any other process's insert of the key.
    await conn.execute("INSERT INTO meta (key, value) VALUES ('link_secret', $1) ON CONFLICT (key) DO NOTHING",
                       secrets.token_hex(32))
    return await conn.fetchval("SELECT value FROM meta WHERE key = 'link_secret'")


@twin_of(sqlite_gallery._mark_deleted)
async def _mark_deleted(conn: asyncpg.Connection, generation_id: int) -> None:
    await conn.execute("UPDATE generations SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL",
                       time.time(), generation_id)
