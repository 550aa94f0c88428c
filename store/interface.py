"""Every method the store offers, area by area: what a second database engine implements to stand in
for the SQLite one. store.Store implements StoreInterface; tests/store/test_interface.py checks that
the two keep the same methods with the same parameters.
"""

from collections.abc import Iterable
from typing import Any, Protocol

from store.admin import Usage
from store.api import ApiKey, Delivery
from store.gallery import Query
from store.people import SavedStyle
from store.processes import ProcessRecord
from store.interface_features import (CreditsInterface, ModerationInterface, PaymentsInterface, PipelinesInterface,
                                      SharesInterface, UserWorkflowsInterface)
from store.records import Generation, Job


class JobsInterface(Protocol):
    """Jobs, from waiting to done, and the generations (results) they produce."""

    async def add_job(self, job: Job, *, active_limit: int | None = None) -> Job:
        """Store a new job, with id, created_at and updated_at set; past `active_limit`, LimitReached."""
        ...

    async def get_job(self, job_id: int) -> Job | None:
        """The job with that id, if any."""
        ...

    async def update_job(self, job_id: int, *, only_from: Iterable[str] | None = None, **changes: Any) -> Job:
        """Change some of a job's fields (only while in a state of `only_from`, when given); the job now."""
        ...

    async def jobs_in(self, states: Iterable[str]) -> list[Job]:
        """The jobs in any of `states`, oldest first."""
        ...

    async def active_job_count(self, user_id: int) -> int:
        """How many of the user's jobs are in ACTIVE_STATES."""
        ...

    async def job_counts(self) -> dict[str, int]:
        """The number of jobs in each of JOB_STATES, zero included."""
        ...

    async def add_generation(self, generation: Generation) -> Generation:
        """Store a new generation, with id and created_at set."""
        ...

    async def add_result(self, job_id: int, generation: Generation, *, only_from: Iterable[str]) -> tuple[Job, Generation]:
        """Store a job's generation and move the job to delivering with it (only from `only_from`), at once."""
        ...

    async def advance_job(self, job_id: int, next_job: Job) -> Job | None:
        """A delivering pipeline step becomes done and its next step's job is stored, at once; None if not delivering."""
        ...

    async def get_generation(self, generation_id: int) -> Generation | None:
        """The generation with that id, if any."""
        ...

    async def generation_by_message(self, message_id: int) -> Generation | None:
        """The result first posted in that message, if any."""
        ...

    async def set_generation_message(self, generation_id: int, message_id: int, attachment_urls: list[str]) -> None:
        """Record the message a generation was posted in and its files' CDN urls."""
        ...

    async def pending_files(self) -> list[str]:
        """File names of generations whose job is still delivering, oldest first."""
        ...


class PeopleInterface(Protocol):
    """People's saved defaults, and the styles people and servers saved."""

    async def preferences(self, user_id: int) -> dict[str, Any]:
        """A person's saved defaults ({} when none)."""
        ...

    async def set_preferences(self, user_id: int, prefs: dict[str, Any]) -> None:
        """Replace a person's defaults; an empty dict forgets them."""
        ...

    async def save_style(self, style: SavedStyle, *, limit: int) -> bool:
        """Save or replace a style; False when its owner already has `limit` others."""
        ...

    async def styles(self, guild_id: int, user_id: int) -> list[SavedStyle]:
        """The person's own styles and the server's, the person's first, each by name."""
        ...

    async def delete_style(self, guild_id: int, owner_id: int, name: str) -> bool:
        """Forget a style; False when there was none."""
        ...


class GalleryInterface(Protocol):
    """History, search, favorites and deleted results."""

    async def find_generations(self, query: Query, *, offset: int = 0, limit: int = 9) -> tuple[list[Generation], int]:
        """A page of the results `query` matches, newest first, never deleted ones; and how many match."""
        ...

    async def set_favorite(self, user_id: int, generation_id: int, on: bool) -> None:
        """Mark (on) or unmark a result as the person's favorite."""
        ...

    async def favorite_ids(self, user_id: int, generation_ids: list[int]) -> set[int]:
        """Which of these results the person marked as a favorite."""
        ...

    async def save_query(self, viewer_id: int, query: Query) -> int:
        """Keep a /history search for its page buttons; its id."""
        ...

    async def saved_query(self, query_id: int) -> tuple[int, Query] | None:
        """Who made a saved search, and the search; None when unknown."""
        ...

    async def link_secret(self) -> str:
        """The key gallery links are signed with, made once per database."""
        ...

    async def mark_deleted(self, generation_id: int) -> None:
        """Keep the result out of history and the gallery from now on."""
        ...


class AdminInterface(Protocol):
    """Admin switches, the audit log, and GPU time, cost and usage."""

    async def audit(self, guild_id: int, actor_id: int, action: str, **details: Any) -> None:
        """Record an admin action in a server's audit log."""
        ...

    async def audit_log(self, guild_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The newest admin actions in a server, newest first."""
        ...

    async def set_control(self, kind: str, scope: str, value: dict[str, Any] | None) -> bool:
        """Set a switch (value) or clear it (None); True when something changed."""
        ...

    async def controls(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every switch of a kind, by scope."""
        ...

    async def record_cost(self, job_id: int, gpu_seconds: float, cost: float) -> None:
        """Record a job's GPU time and cost."""
        ...

    async def gpu_history(self, limit: int = 500) -> list[tuple[str, str, dict[str, Any], float]]:
        """The latest jobs with a measured GPU time, oldest first: (server, kind, request, seconds)."""
        ...

    async def usage_by_day(self, guild_id: int | None, since: float) -> list[dict[str, Any]]:
        """Images, GPU seconds and cost per UTC day since `since`, oldest first."""
        ...

    async def recent_failures(self, guild_id: int | None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest failed jobs of a server: when, kind, who, and the sentence they were told."""
        ...

    async def usage(self, guild_id: int | None, user_id: int | None, since: float) -> Usage:
        """Results, GPU seconds and cost since `since`, of a person in a server or of the server."""
        ...

    async def usage_by_person(self, guild_id: int | None, since: float, limit: int = 15) -> list[tuple[int, Usage]]:
        """The people of a server who used the most GPU time since `since`."""
        ...


class ApiInterface(Protocol):
    """API keys, the jobs each key started, and webhook deliveries."""

    async def create_key(self, guild_id: int | None, name: str, created_by: int) -> tuple[int, str]:
        """Make a key for `guild_id`: (key id, the key), the key shown once and only its hash kept."""
        ...

    async def revoke_key(self, key_id: int, guild_id: int | None = None) -> bool:
        """Revoke a key and drop its pending deliveries; False when there is no such active key."""
        ...

    async def key_by_plaintext(self, plaintext: str) -> ApiKey | None:
        """The key row for a presented key (revoked ones too), or None."""
        ...

    async def key(self, key_id: int) -> ApiKey | None:
        """The key row with that id, or None."""
        ...

    async def keys(self, guild_id: int | None) -> list[ApiKey]:
        """A server's keys, revoked ones too, newest first."""
        ...

    async def set_webhook(self, key_id: int, url: str | None, secret: str | None) -> bool:
        """Set (or, with url None, remove) a key's webhook and secret; False without such a key."""
        ...

    async def add_api_job(self, key_id: int, job_id: int) -> None:
        """Record that `key_id` started job `job_id`."""
        ...

    async def api_job_key(self, job_id: int) -> int | None:
        """The key that started a job, or None for a job started in Discord."""
        ...

    async def api_job_ids(self, key_id: int, limit: int, before: int | None = None) -> list[int]:
        """The ids of the jobs a key started, newest first, below `before` when given."""
        ...

    async def queue_delivery(self, key_id: int, event: str, payload: dict[str, Any], now: float | None = None) -> int:
        """Queue a webhook delivery, due at once; its id."""
        ...

    async def due_deliveries(self, now: float, limit: int = 20) -> list[Delivery]:
        """Deliveries due at `now`, the longest-waiting first, claimed: not due again for CLAIM_LEASE
        seconds (store/api.py) unless mark_delivery says so sooner, so two senders never take one."""
        ...

    async def mark_delivery(self, delivery_id: int, *, delivered: bool, now: float, next_at: float | None = None,
                            error: str | None = None) -> None:
        """Record an attempt: delivered, or failed with `error` and the next attempt at `next_at`."""
        ...

    async def deliveries(self, key_id: int, limit: int = 10) -> list[dict[str, Any]]:
        """A key's newest deliveries, as dicts for the API."""
        ...

    async def prune_deliveries(self, before: float) -> int:
        """Forget finished deliveries made before `before`; how many."""
        ...


class ProcessesInterface(Protocol):
    """The bot processes sharing the database, and the rate limit they share."""

    async def heartbeat(self, name: str, info: dict[str, Any], now: float, *, started_at: float | None = None) -> None:
        """Record that process `name` is alive at `now`; a new one starts at `started_at` (default `now`)."""
        ...

    async def processes(self, seen_since: float) -> list[ProcessRecord]:
        """The processes seen at or after `seen_since`, the most recently started first."""
        ...

    async def forget_process(self, name: str) -> None:
        """Remove a process (one that stopped)."""
        ...

    async def hit_rate(self, user_id: int, count: int, per: float, now: float) -> float:
        """0.0 when the user's hit is allowed (and counted), else the seconds until the next one is."""
        ...


class StoreInterface(JobsInterface, PeopleInterface, GalleryInterface, AdminInterface, ApiInterface,
                     ProcessesInterface, UserWorkflowsInterface, PipelinesInterface, CreditsInterface,
                     PaymentsInterface, ModerationInterface, SharesInterface, Protocol):
    """The whole store: the areas' methods, and opening, closing and the installation's id."""

    async def open(self) -> None:
        """Connect and bring the schema up to date; a newer schema is refused."""
        ...

    async def close(self) -> None:
        """Finish the calls already made, then disconnect; idempotent."""
        ...

    async def instance_id(self) -> str:
        """A random id made once per database, that the bot's ComfyUI client ids derive from."""
        ...
