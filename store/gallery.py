"""What the store keeps for finding work again: favorites, deleted results, and a full-text index of
prompts (SQLite FTS5), for /history, /favorites and the web gallery. Part of store.Store; the tables
are its migration 6. Every call runs on the store's one worker thread.
"""

import dataclasses
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from store.records import GENERATION_COLUMNS, Generation, record

MIGRATION = """
ALTER TABLE generations ADD COLUMN deleted_at REAL;
CREATE INDEX generations_by_owner ON generations (user_id, guild_id, created_at) WHERE deleted_at IS NULL;
CREATE TABLE favorites (
    user_id INTEGER NOT NULL,
    generation_id INTEGER NOT NULL REFERENCES generations (id),
    created_at REAL NOT NULL,
    PRIMARY KEY (user_id, generation_id)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE generations_text USING fts5(prompt, negative, content='', tokenize='unicode61 remove_diacritics 2');
INSERT INTO generations_text (rowid, prompt, negative)
    SELECT id, coalesce(json_extract(params, '$.prompt'), ''), coalesce(json_extract(params, '$.negative_prompt'), '')
    FROM generations;
CREATE TABLE saved_queries (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, query TEXT NOT NULL,
                            created_at REAL NOT NULL);
CREATE TRIGGER generations_text_insert AFTER INSERT ON generations BEGIN
    INSERT INTO generations_text (rowid, prompt, negative) VALUES (new.id,
        coalesce(json_extract(new.params, '$.prompt'), ''), coalesce(json_extract(new.params, '$.negative_prompt'), ''));
END;
"""
WORDS_MAX = 12  # words of a search that count


@dataclass(frozen=True)
class Query:
    """Which results to find: one person's in one server (guild_id None: outside servers), newest first."""

    user_id: int
    guild_id: int | None
    text: str = ""  # words that must all appear in the prompt or negative prompt (the last may be a prefix)
    kind: str | None = None  # a job kind: "txt2img", "upscale" ...
    model: str | None = None  # the model name the result shows
    favorites: bool = False  # only the ones this person marked
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive


class GalleryStore:
    """The methods store.Store gains for history, favorites and deletion."""

    async def find_generations(self, query: Query, *, offset: int = 0, limit: int = 9) -> tuple[list[Generation], int]:
        """A page of the results `query` matches, newest first, never deleted ones; and how many match."""
        return await self._run(_find, query, offset, limit)

    async def set_favorite(self, user_id: int, generation_id: int, on: bool) -> None:
        await self._run(_set_favorite, user_id, generation_id, on)

    async def favorite_ids(self, user_id: int, generation_ids: list[int]) -> set[int]:
        """Which of these results the person marked as a favorite."""
        return await self._run(_favorite_ids, user_id, generation_ids)

    async def save_query(self, viewer_id: int, query: Query) -> int:
        """Keep a /history search, so its page buttons work after any restart; returns its id."""
        return await self._run(_save_query, viewer_id, query)

    async def saved_query(self, query_id: int) -> tuple[int, Query] | None:
        """Who made a saved search, and the search; None when unknown."""
        return await self._run(_saved_query, query_id)

    async def link_secret(self) -> str:
        """The key gallery links are signed with: made once per database, kept in it."""
        return await self._run(_link_secret)

    async def mark_deleted(self, generation_id: int) -> None:
        """Keep the result out of history and the gallery from now on (its files are the caller's to release)."""
        await self._run(_mark_deleted, generation_id)


def match_expression(text: str) -> str | None:
    """An FTS5 query from what a person typed: each word quoted (so no word is an operator), all of
    them required, the last also as a prefix; None when nothing searchable was typed."""
    words = ["".join(ch for ch in word if ch.isalnum()) for word in text.split()][:WORDS_MAX]
    words = [word for word in words if word]
    if not words:
        return None
    quoted = [f'"{word}"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _find(db: sqlite3.Connection, query: Query, offset: int, limit: int) -> tuple[list[Generation], int]:
    where = ["user_id = ?", "guild_id IS ?", "deleted_at IS NULL"]
    args: list[Any] = [query.user_id, query.guild_id]
    if query.kind:
        where.append("kind = ?")
        args.append(query.kind)
    if query.model:
        where.append("json_extract(params, '$.model') = ?")
        args.append(query.model)
    if query.since is not None:
        where.append("created_at >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("created_at < ?")
        args.append(query.until)
    if query.favorites:
        where.append("id IN (SELECT generation_id FROM favorites WHERE user_id = ?)")
        args.append(query.user_id)
    expression = match_expression(query.text)
    if expression is not None:
        where.append("id IN (SELECT rowid FROM generations_text WHERE generations_text MATCH ?)")
        args.append(expression)
    elif query.text.strip():
        return [], 0  # only punctuation: nothing can match
    clause = " AND ".join(where)
    total = db.execute(f"SELECT COUNT(*) FROM generations WHERE {clause}", args).fetchone()[0]
    rows = db.execute(f"SELECT {GENERATION_COLUMNS} FROM generations WHERE {clause} "
                      "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
    return [record(Generation, row) for row in rows], total


def _set_favorite(db: sqlite3.Connection, user_id: int, generation_id: int, on: bool) -> None:
    if on:
        db.execute("INSERT OR IGNORE INTO favorites (user_id, generation_id, created_at) VALUES (?, ?, ?)",
                   (user_id, generation_id, time.time()))
    else:
        db.execute("DELETE FROM favorites WHERE user_id = ? AND generation_id = ?", (user_id, generation_id))


def _favorite_ids(db: sqlite3.Connection, user_id: int, generation_ids: list[int]) -> set[int]:
    if not generation_ids:
        return set()
    marks = ", ".join("?" for _ in generation_ids)
    rows = db.execute(f"SELECT generation_id FROM favorites WHERE user_id = ? AND generation_id IN ({marks})",
                      (user_id, *generation_ids)).fetchall()
    return {row[0] for row in rows}


def _save_query(db: sqlite3.Connection, viewer_id: int, query: Query) -> int:
    cursor = db.execute("INSERT INTO saved_queries (user_id, query, created_at) VALUES (?, ?, ?)",
                        (viewer_id, json.dumps(dataclasses.asdict(query)), time.time()))
    return cursor.lastrowid


def _saved_query(db: sqlite3.Connection, query_id: int) -> tuple[int, Query] | None:
    row = db.execute("SELECT user_id, query FROM saved_queries WHERE id = ?", (query_id,)).fetchone()
    return None if row is None else (row[0], Query(**json.loads(row[1])))


def _link_secret(db: sqlite3.Connection) -> str:
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('link_secret', lower(hex(randomblob(32))))")
    return db.execute("SELECT value FROM meta WHERE key = 'link_secret'").fetchone()[0]


def _mark_deleted(db: sqlite3.Connection, generation_id: int) -> None:
    db.execute("UPDATE generations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", (time.time(), generation_id))
