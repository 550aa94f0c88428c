"""What the store hands out for jobs: the Job and Generation records, the job states, the store's
errors, and how a record's fields become columns and back. Imports nothing else of the store, so
every part of it (and a second database engine) can use these.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

JOB_STATES = ("waiting", "submitted", "running", "delivering", "done", "failed", "cancelled")
ACTIVE_STATES = ("waiting", "submitted", "running", "delivering")


class StoreError(Exception):
    """The database cannot do what was asked; str() is a sentence for logs and operators."""


class LimitReached(Exception):
    """add_job refused: the user already has `count` active jobs."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the user already has {count} active jobs")
        self.count = count


@dataclass
class Job:
    """A user's request and how far it got."""

    id: int | None  # assigned by add_job
    kind: str  # "txt2img" | "upscale" | "animate"
    user_id: int
    channel_id: int
    guild_id: int | None
    request: dict[str, Any]  # JSON-able parameters of the request
    state: str = "waiting"
    # Edits the deferred response and sends followups for 15 minutes; a secret, so not in repr.
    interaction_token: str | None = field(default=None, repr=False)
    application_id: int | None = None
    interaction_created: float | None = None  # epoch seconds; the token expires 900 s later
    message_id: int | None = None  # the message that shows this job's progress
    prompt_id: str | None = None  # ComfyUI prompt id once submitted
    server: str | None = None  # which ComfyUI server runs it
    error: str | None = None  # the user-facing failure text
    generation_id: int | None = None  # set when done
    source_generation_id: int | None = None  # upscale/animate: where the input image came from
    source_index: int | None = None
    priority: int = 0
    attempts: int = 0  # runs that may have happened on a server (started, or posted twice), for at most two
    handovers: int = 0  # hand-overs to a server that ended without a result, started or not
    created_at: float = 0.0  # epoch seconds, set by add_job
    updated_at: float = 0.0


@dataclass
class Generation:
    """A finished result, and the Discord message it was posted in."""

    id: int | None
    job_id: int | None
    kind: str
    user_id: int
    guild_id: int | None
    channel_id: int
    params: dict[str, Any]  # everything shown in the embed
    files: list[str]  # file names inside the output folder, never paths
    server: str
    duration: float  # seconds
    message_id: int | None = None
    attachment_urls: list[str] = field(default_factory=list)  # one per file, same order
    created_at: float = 0.0
    deleted_at: float | None = None  # removed by its owner or a moderator: out of history and the gallery


R = TypeVar("R", Job, Generation)

# The columns of the jobs and generations tables, named after the records' fields.
JOB_COLUMNS = ", ".join(f.name for f in fields(Job))
GENERATION_COLUMNS = ", ".join(f.name for f in fields(Generation))
UPDATABLE = frozenset(f.name for f in fields(Job)) - {"id", "created_at", "updated_at"}
_JSON_FIELDS = frozenset({"request", "params", "files", "attachment_urls"})


def encode(name: str, value: Any) -> Any:
    """The column value of a field: compact JSON text for the JSON fields."""
    return json.dumps(value, separators=(",", ":")) if name in _JSON_FIELDS else value


def decode(name: str, value: Any) -> Any:
    """The field value of a column: the inverse of encode."""
    return json.loads(value) if name in _JSON_FIELDS else value


def record(cls: type[R], row: Mapping[str, Any]) -> R:
    """The record of a row whose columns are named after its fields (a sqlite3.Row, or a mapping)."""
    return cls(**{name: decode(name, row[name]) for name in row.keys()})


def check_states(states: Iterable[str]) -> None:
    """Refuse any state that is not one of JOB_STATES."""
    for state in states:
        if state not in JOB_STATES:
            raise StoreError(f"{state!r} is not a job state (one of {', '.join(JOB_STATES)})")
