"""The ComfyUI workflows people bring (/workflow list|show|share|delete|rate): each person's own, in one
Discord server, shared with the whole server by its owner or a moderator, versioned and rated. Part of
store.Store; the tables are its migration 11. Every call runs on the store's one worker thread.

Versions: every change of a workflow is a new version, numbered from 1, and never changed afterwards, so a
job that ran version 3 can be told exactly what it ran (the job's request JSON names the workflow's id and
version: jobs need no column of their own); an older version is restored by making it the newest again.
Saving what the current version already holds is not a change and makes no version.

Deleting only hides a workflow (deleted_at): old jobs and their buttons still find the versions they ran.
Saving under a deleted workflow's name brings it back, not shared, with the saved graph as a new version.

Who may share, delete or restore (the owner, a moderator) is the caller's decision; the store keeps who did.
Names and tags are searched with LIKE over `search`, the name and tags case-folded in Python when written,
so both engines match alike whatever the letters (SQLite's own LIKE folds only ASCII).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SOURCE_FORMATS = ("api", "ui", "png", "webp")  # what the person uploaded: API JSON, UI JSON, or an image holding one
STARS = range(1, 6)
TAG_CHARACTERS = 32  # a longer tag is cut
TAGS_MAX = 10  # tags kept per workflow, the first ones

MIGRATION = """
CREATE TABLE user_workflows (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,            -- 0 outside a server
    owner_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,                   -- JSON list of case-folded tags
    search TEXT NOT NULL,                 -- name and tags, case-folded, one a line: what LIKE searches
    shared INTEGER NOT NULL DEFAULT 0,
    shared_by INTEGER,
    current_version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL,
    UNIQUE (guild_id, owner_id, name)
);
CREATE INDEX user_workflows_by_guild ON user_workflows (guild_id, shared, owner_id);
CREATE TABLE workflow_versions (
    workflow_id INTEGER NOT NULL REFERENCES user_workflows (id),
    version INTEGER NOT NULL,
    graph TEXT NOT NULL,                  -- JSON: the workflow as uploaded (API or UI format)
    bindings TEXT NOT NULL,               -- JSON: which node input takes the prompt, seed, size...
    source_format TEXT NOT NULL CHECK (source_format IN ('api', 'ui', 'png', 'webp')),
    restored_from INTEGER,                -- the version this one restored, if any
    created_by INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (workflow_id, version)
);
CREATE TABLE workflow_ratings (
    workflow_id INTEGER NOT NULL REFERENCES user_workflows (id),
    user_id INTEGER NOT NULL,
    stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    created_at REAL NOT NULL,
    PRIMARY KEY (workflow_id, user_id)
);
"""

# A workflow's columns and its ratings, as both engines select them (w: user_workflows).
WORKFLOW_COLUMNS = (
    "w.id, w.guild_id, w.owner_id, w.name, w.tags, w.shared, w.shared_by, w.current_version, w.created_at, "
    "w.updated_at, w.deleted_at, (SELECT CAST(coalesce(sum(r.stars), 0) AS BIGINT) FROM workflow_ratings r "
    "WHERE r.workflow_id = w.id) AS stars, (SELECT count(*) FROM workflow_ratings r WHERE r.workflow_id = w.id) "
    "AS ratings")
VERSION_COLUMNS = "workflow_id, version, graph, bindings, source_format, restored_from, created_by, created_at"


@dataclass(frozen=True)
class UserWorkflow:
    """A workflow someone brought, at its current version."""

    id: int
    guild_id: int
    owner_id: int
    name: str
    tags: tuple[str, ...]
    shared: bool  # the whole server sees it
    shared_by: int | None  # who shared it (the owner or a moderator)
    version: int  # the current version: the one a job runs
    rating: float | None  # the average stars, None before the first rating
    ratings: int  # how many people rated it
    created_at: float
    updated_at: float
    deleted_at: float | None


@dataclass(frozen=True)
class WorkflowVersion:
    """One version of a workflow, as it was saved; never changed."""

    workflow_id: int
    version: int
    graph: dict[str, Any]  # in API format: a UI-format upload is stored converted (the column says "as uploaded")
    bindings: dict[str, Any]
    source_format: str
    restored_from: int | None  # the older version this one restored
    created_by: int
    created_at: float


class UserWorkflowsStore:
    """The methods store.Store gains for the workflows people bring."""

    async def save_workflow(self, guild_id: int, owner_id: int, name: str, graph: dict[str, Any], *,
                            bindings: dict[str, Any], source_format: str, limit: int,
                            tags: Iterable[str] | None = None, by: int | None = None) -> UserWorkflow | None:
        """Save a new workflow, or a new version of the owner's workflow of that name; the workflow now.
        None when the owner already has `limit` others in that server (nothing saved). `tags` None keeps
        the workflow's tags; `by` (default the owner) is who saved it."""
        name = check_name(name)
        if not isinstance(graph, dict) or not isinstance(bindings, dict):
            raise ValueError("a workflow's graph and bindings are JSON objects")
        if source_format not in SOURCE_FORMATS:
            raise ValueError(f"a workflow is uploaded as {', '.join(SOURCE_FORMATS)}, not {source_format!r}")
        kept = None if tags is None else normal_tags(tags)
        return await self._run(_save_workflow, guild_id, owner_id, name, kept, graph, bindings, source_format,
                               owner_id if by is None else by, limit, time.time())

    async def workflow(self, workflow_id: int) -> UserWorkflow | None:
        """The workflow with that id, a deleted one too (see deleted_at), or None."""
        return await self._run(_select_workflow, workflow_id)

    async def workflow_by_name(self, guild_id: int, owner_id: int, name: str) -> UserWorkflow | None:
        """The owner's workflow of that name in that server, not a deleted one, or None."""
        return await self._run(_select_workflow_by_name, guild_id, owner_id, name.strip())

    async def workflows_for(self, guild_id: int, user_id: int, query: str | None = None, tag: str | None = None,
                            limit: int = 25, offset: int = 0) -> list[UserWorkflow]:
        """The person's own workflows and those shared with the server, the person's first, each by name;
        only those whose name or tags hold every word of `query`, and that have the tag `tag`."""
        words = query.casefold().replace("\x00", "\ufffd").split() if query else []  # as search_text
        tags = normal_tags([tag]) if tag else ()
        if tag and not tags:
            return []
        return await self._run(_select_workflows_for, guild_id, user_id, words, tags[0] if tags else None,
                               limit, offset)

    async def versions(self, workflow_id: int) -> list[WorkflowVersion]:
        """Every version of a workflow, the newest first ([] for no such workflow)."""
        return await self._run(_select_versions, workflow_id)

    async def version(self, workflow_id: int, version: int) -> WorkflowVersion | None:
        """One version of a workflow (of a deleted one too), or None."""
        return await self._run(_select_version, workflow_id, version)

    async def restore_version(self, workflow_id: int, version: int, by: int) -> UserWorkflow | None:
        """Make version `version` the newest again, as a new version saved by `by`; the workflow now.
        None when there is no such workflow (or it was deleted) or no such version."""
        return await self._run(_restore_version, workflow_id, version, by, time.time())

    async def share(self, workflow_id: int, shared: bool, by: int) -> UserWorkflow | None:
        """Share a workflow with its server (or stop); `by` is kept as who shared it. None without it."""
        return await self._run(_share, workflow_id, bool(shared), by, time.time())

    async def delete_workflow(self, workflow_id: int) -> bool:
        """Hide a workflow from every list and name (its versions stay for old jobs); False without it."""
        return await self._run(_delete_workflow, workflow_id, time.time())

    async def rate(self, workflow_id: int, user_id: int, stars: int) -> tuple[float, int] | None:
        """Rate a workflow 1 to 5 stars, replacing the person's earlier rating; the average and the
        number of ratings now. None when there is no such workflow (or it was deleted)."""
        if isinstance(stars, bool) or not isinstance(stars, int) or stars not in STARS:
            raise ValueError(f"a rating is 1 to 5 stars, not {stars!r}")
        return await self._run(_rate, workflow_id, user_id, stars, time.time())

    async def rating(self, workflow_id: int) -> tuple[float | None, int]:
        """A workflow's average stars (None before the first rating) and how many people rated it."""
        return await self._run(_select_rating, workflow_id)


# --- shared by both engines ------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """The name without its outer spaces; an empty one is refused in words."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a workflow needs a name")
    return name.strip()


def normal_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags case-folded, trimmed, without quotes, backslashes or control characters (so a tag is found
    exactly in the JSON list), without repeats, at most TAGS_MAX."""
    kept: list[str] = []
    for tag in tags:
        text = "".join(c for c in str(tag).casefold() if c not in '"\\' and c.isprintable())
        text = " ".join(text.split())[:TAG_CHARACTERS].strip()
        if text and text not in kept:
            kept.append(text)
    return tuple(kept[:TAGS_MAX])


def search_text(name: str, tags: Iterable[str]) -> str:
    """What LIKE searches; NUL as U+FFFD, since SQLite's LIKE stops at a NUL (and PostgreSQL keeps none)."""
    return "\n".join([name.casefold().replace("\x00", "\ufffd"), *tags])


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def like_escape(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\': its % and _ are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(text: str) -> str:
    return f"%{like_escape(text)}%"


def workflow(row: Mapping[str, Any]) -> UserWorkflow:
    count = row["ratings"]
    return UserWorkflow(row["id"], row["guild_id"], row["owner_id"], row["name"], tuple(json.loads(row["tags"])),
                        bool(row["shared"]), row["shared_by"], row["current_version"],
                        row["stars"] / count if count else None, count, row["created_at"], row["updated_at"],
                        row["deleted_at"])


def version(row: Mapping[str, Any]) -> WorkflowVersion:
    return WorkflowVersion(row["workflow_id"], row["version"], json.loads(row["graph"]), json.loads(row["bindings"]),
                           row["source_format"], row["restored_from"], row["created_by"], row["created_at"])


# --- SQLite, on the worker thread ------------------------------------------------------------------------


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")  # read and written in one step
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _save_workflow(db: sqlite3.Connection, guild_id: int, owner_id: int, name: str, tags: tuple[str, ...] | None,
                   graph: dict[str, Any], bindings: dict[str, Any], source_format: str, by: int, limit: int,
                   now: float) -> UserWorkflow | None:
    with _transaction(db):
        row = db.execute("SELECT id, tags, deleted_at FROM user_workflows WHERE guild_id = ? AND owner_id = ? "
                         "AND name = ?", (guild_id, owner_id, name)).fetchone()
        if row is None or row["deleted_at"] is not None:
            others = db.execute("SELECT count(*) FROM user_workflows WHERE guild_id = ? AND owner_id = ? AND "
                                "deleted_at IS NULL AND name <> ?", (guild_id, owner_id, name)).fetchone()[0]
            if others >= limit:
                return None
        tags = tags if tags is not None else () if row is None else tuple(json.loads(row["tags"]))
        if row is None:
            workflow_id = db.execute(
                "INSERT INTO user_workflows (guild_id, owner_id, name, tags, search, current_version, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (guild_id, owner_id, name, dumps(tags), search_text(name, tags), now, now)).lastrowid
        else:
            workflow_id = row["id"]
            db.execute("UPDATE user_workflows SET tags = ?, search = ?, updated_at = ? WHERE id = ?",
                       (dumps(tags), search_text(name, tags), now, workflow_id))
            if row["deleted_at"] is not None:
                db.execute("UPDATE user_workflows SET deleted_at = NULL, shared = 0, shared_by = NULL WHERE id = ?",
                           (workflow_id,))
        content = (dumps(graph), dumps(bindings), source_format)
        current = db.execute("SELECT graph, bindings, source_format FROM workflow_versions JOIN user_workflows w "
                             "ON w.id = workflow_id AND w.current_version = version WHERE workflow_id = ?",
                             (workflow_id,)).fetchone()
        if current is None or tuple(current) != content or row["deleted_at"] is not None:
            _add_version(db, workflow_id, *content, None, by, now)
        return _select_workflow(db, workflow_id)


def _add_version(db: sqlite3.Connection, workflow_id: int, graph: str, bindings: str, source_format: str,
                 restored_from: int | None, by: int, now: float) -> None:
    number = db.execute("SELECT current_version + 1 FROM user_workflows WHERE id = ?", (workflow_id,)).fetchone()[0]
    db.execute(f"INSERT INTO workflow_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (workflow_id, number, graph, bindings, source_format, restored_from, by, now))
    db.execute("UPDATE user_workflows SET current_version = ?, updated_at = ? WHERE id = ?", (number, now, workflow_id))


def _select_workflow(db: sqlite3.Connection, workflow_id: int) -> UserWorkflow | None:
    row = db.execute(f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.id = ?", (workflow_id,)).fetchone()
    return None if row is None else workflow(row)


def _select_workflow_by_name(db: sqlite3.Connection, guild_id: int, owner_id: int, name: str) -> UserWorkflow | None:
    row = db.execute(f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.guild_id = ? AND w.owner_id = ? "
                     "AND w.name = ? AND w.deleted_at IS NULL", (guild_id, owner_id, name)).fetchone()
    return None if row is None else workflow(row)


def _select_workflows_for(db: sqlite3.Connection, guild_id: int, user_id: int, words: list[str], tag: str | None,
                          limit: int, offset: int) -> list[UserWorkflow]:
    matches = "".join(" AND w.search LIKE ? ESCAPE '\\'" for _ in words)
    patterns = [contains(word) for word in words]
    if tag is not None:
        matches += " AND w.tags LIKE ? ESCAPE '\\'"
        patterns.append(contains(dumps(tag)))
    rows = db.execute(
        f"SELECT {WORKFLOW_COLUMNS} FROM user_workflows w WHERE w.guild_id = ? AND w.deleted_at IS NULL "
        f"AND (w.owner_id = ? OR w.shared = 1){matches} ORDER BY w.owner_id <> ?, w.name, w.id LIMIT ? OFFSET ?",
        (guild_id, user_id, *patterns, user_id, limit, offset)).fetchall()
    return [workflow(row) for row in rows]


def _select_versions(db: sqlite3.Connection, workflow_id: int) -> list[WorkflowVersion]:
    rows = db.execute(f"SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = ? ORDER BY version DESC",
                      (workflow_id,)).fetchall()
    return [version(row) for row in rows]


def _select_version(db: sqlite3.Connection, workflow_id: int, number: int) -> WorkflowVersion | None:
    row = db.execute(f"SELECT {VERSION_COLUMNS} FROM workflow_versions WHERE workflow_id = ? AND version = ?",
                     (workflow_id, number)).fetchone()
    return None if row is None else version(row)


def _restore_version(db: sqlite3.Connection, workflow_id: int, number: int, by: int, now: float) -> UserWorkflow | None:
    with _transaction(db):
        old = db.execute("SELECT graph, bindings, source_format FROM workflow_versions JOIN user_workflows w "
                         "ON w.id = workflow_id WHERE workflow_id = ? AND version = ? AND w.deleted_at IS NULL",
                         (workflow_id, number)).fetchone()
        if old is None:
            return None
        _add_version(db, workflow_id, *old, number, by, now)
        return _select_workflow(db, workflow_id)


def _share(db: sqlite3.Connection, workflow_id: int, shared: bool, by: int, now: float) -> UserWorkflow | None:
    changed = db.execute("UPDATE user_workflows SET shared = ?, shared_by = ?, updated_at = ? WHERE id = ? "
                         "AND deleted_at IS NULL", (int(shared), by if shared else None, now, workflow_id)).rowcount
    return _select_workflow(db, workflow_id) if changed else None


def _delete_workflow(db: sqlite3.Connection, workflow_id: int, now: float) -> bool:
    return db.execute("UPDATE user_workflows SET deleted_at = ?, shared = 0, shared_by = NULL WHERE id = ? "
                      "AND deleted_at IS NULL", (now, workflow_id)).rowcount > 0


def _rate(db: sqlite3.Connection, workflow_id: int, user_id: int, stars: int, now: float) -> tuple[float, int] | None:
    with _transaction(db):
        found = db.execute("SELECT 1 FROM user_workflows WHERE id = ? AND deleted_at IS NULL", (workflow_id,))
        if found.fetchone() is None:
            return None
        db.execute("INSERT INTO workflow_ratings (workflow_id, user_id, stars, created_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (workflow_id, user_id) DO UPDATE SET stars = excluded.stars, "
                   "created_at = excluded.created_at", (workflow_id, user_id, stars, now))
        average, count = _select_rating(db, workflow_id)
        return average or 0.0, count


def _select_rating(db: sqlite3.Connection, workflow_id: int) -> tuple[float | None, int]:
    total, count = db.execute("SELECT CAST(coalesce(sum(stars), 0) AS BIGINT), count(*) FROM workflow_ratings "
                              "WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return (total / count if count else None), count
