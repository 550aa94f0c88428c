"""Moderation of prompts and results (issue 21), with the providers in jobs/moderation_providers.py.

The checks around a job: its prompt before it queues (`prompt_refusal`, called by jobs/limits.py), its
result after it is stored and before it is posted (`holds`, called by jobs/endings.py), and a moderator's
decision on a held result (`release`, `delete`, from the mod-log's buttons and the dashboard).

A held result's job stays `delivering` with its files pinned, so a restart neither posts it nor loses it;
the hold is in the store (store/moderation.py), and each decision is taken once and written to the audit
log. When the provider is down or slow, MODERATION_ON_ERROR says what happens: "hold" (a moderator decides)
or "post" (fail open); either way the log line names the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from config import Settings
from jobs.moderation_providers import ModerationUnavailable, Provider, judge
from results.folder import OutputError
from store import Generation, Job
from store.moderation import Hold

log = structlog.get_logger("moderation")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what is checked; videos are posted unchecked
UNAVAILABLE = "the moderation check could not run"
PROMPT_UNAVAILABLE = "the moderation check could not run, so nothing was queued; try again in a minute"
PENDING_SHOWN = 25
NEVER_SHOWN = ("sexual/minors",)  # a result flagged for these is not shown again, not even to moderators


def shown_to_moderators(hold: Hold) -> bool:
    """Whether a held result's images may go on its mod-log card."""
    return not any(category in hold.reason for category in NEVER_SHOWN)


class Moderation:
    """The moderation of one bot. `provider` None: no check (MODERATION_URL unset). The bot sets the
    callbacks: `announce(hold, job, files)` tells the owner and posts the mod-log card, `decided(hold)` marks
    the card decided (from Discord or the dashboard), `deliver(job)` posts a released result as the job would
    have been, `fail(job, reason)` ends a job whose result was deleted,
    `age_restricted(channel_id)` says whether a channel is."""

    def __init__(self, store: Any, settings: Settings, outputs: Any, provider: Provider | None) -> None:
        self.store, self.settings, self.outputs, self.provider = store, settings, outputs, provider
        self.announce: Callable[[Hold, Job, list[Path]], Awaitable[None]] | None = None
        self.decided: Callable[[Hold], Awaitable[None]] | None = None
        self.deliver: Callable[[Job], Awaitable[None]] | None = None
        self.fail: Callable[[Job, str], Awaitable[None]] | None = None
        self.age_restricted: Callable[[int], bool] = lambda channel_id: False

    def thresholds(self, channel_id: int | None, request: Mapping[str, Any]) -> Mapping[str, float | None]:
        """MODERATION_NSFW_THRESHOLDS where the result goes to an age-restricted channel, else MODERATION_THRESHOLDS."""
        nsfw = bool(request.get("deliver_to")) or (channel_id is not None and self.age_restricted(channel_id))
        return self.settings.moderation_nsfw_thresholds if nsfw else self.settings.moderation_thresholds

    # before a job queues ---------------------------------------------------------------------

    async def prompt_refusal(self, guild_id: int, user_id: int, texts: list[str], channel_id: int | None,
                             request: Mapping[str, Any]) -> str | None:
        """Why the prompt may not queue, in words that never quote it; None when it may."""
        if self.provider is None or not any(texts):
            return None
        try:
            scores, flags = await self.provider.scores(guild_id, texts, [])
        except ModerationUnavailable as error:
            log.warning("moderation_unavailable", checked="prompt", user_id=user_id, guild_id=guild_id,
                        error=str(error), on_error=self.settings.moderation_on_error)
            return None if self.settings.moderation_on_error == "post" else PROMPT_UNAVAILABLE
        verdict = judge(scores, flags, self.thresholds(channel_id, request))
        if not verdict.flagged:
            return None
        log.info("prompt_flagged", user_id=user_id, guild_id=guild_id, categories=verdict.flagged)
        return f"the moderation check flagged your prompt ({verdict.reason()}); change it and try again"

    # before a result is posted ---------------------------------------------------------------

    async def holds(self, job: Job, generation: Generation, files: list[Path], jlog: Any) -> bool:
        """True when the result must not be posted now: it is (or was just) held, or deleted by a moderator.
        A held result's files stay pinned (the caller releases the pins it took for the delivery)."""
        existing = await self.store.hold_of_job(job.id)
        if existing is not None and existing.state == "released":
            return False
        if existing is None:
            existing = await self._check(job, generation, files, jlog)
            if existing is None:
                return False
        else:
            jlog.info("result_still_held", hold_id=existing.id, state=existing.state)
        if existing.state == "held":
            self._pin(generation)
        return True

    async def _check(self, job: Job, generation: Generation, files: list[Path], jlog: Any) -> Hold | None:
        """Score the result's images; a new hold when they are flagged (or the provider failed and the
        operator chose to hold), else None."""
        images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
        if self.provider is None or not images:
            return None
        began = time.monotonic()
        try:
            data = [await asyncio.to_thread(path.read_bytes) for path in images]
            scores, flags = await self.provider.scores(job.guild_id or 0, [], data)
        except ModerationUnavailable as error:
            policy = self.settings.moderation_on_error
            jlog.warning("moderation_unavailable", checked="result", error=str(error), on_error=policy,
                         generation_id=generation.id)
            if policy == "post":
                return None
            reason, scores = UNAVAILABLE, {}
        else:
            verdict = judge(scores, flags, self.thresholds(generation.channel_id, job.request))
            jlog.info("result_moderated", flagged=verdict.flagged, seconds=round(time.monotonic() - began, 3))
            if not verdict.flagged:
                return None
            reason = f"flagged: {verdict.reason()}"
        hold = await self.store.add_hold(Hold(
            id=None, job_id=job.id, generation_id=generation.id, guild_id=job.guild_id or 0, user_id=job.user_id,
            channel_id=generation.channel_id, reason=reason, scores=scores))
        jlog.warning("result_held", hold_id=hold.id, reason=reason)
        if self.announce is not None:
            try:
                await self.announce(hold, job, files)
            except Exception:  # the hold is kept and listed on the dashboard either way
                jlog.exception("hold_not_announced", hold_id=hold.id)
        return hold

    def _pin(self, generation: Generation) -> None:
        for name in generation.files:
            try:
                self.outputs.pin(self.settings.outputs_dir / name)
            except OutputError:
                log.warning("held_file_missing", generation_id=generation.id, file=name)

    # a moderator's decision ------------------------------------------------------------------

    async def release(self, hold_id: int, guild_id: int, actor_id: int) -> str:
        """Post the held result as its job would have been; what happened, in words."""
        hold = await self._decide(hold_id, guild_id, "released", actor_id)
        if isinstance(hold, str):
            return hold
        job = await self.store.get_job(hold.job_id)
        if job is None or job.state != "delivering":
            return "Released, but its job has ended meanwhile: nothing was posted."
        if self.deliver is not None:
            await self.deliver(job)
        return f"✅ Released: the result by <@{hold.user_id}> is posted."

    async def delete(self, hold_id: int, guild_id: int, actor_id: int) -> str:
        """Remove the held result (its files, and from history) and tell its owner; what happened, in words."""
        hold = await self._decide(hold_id, guild_id, "deleted", actor_id)
        if isinstance(hold, str):
            return hold
        generation = await self.store.get_generation(hold.generation_id)
        if generation is not None:
            await self.store.mark_deleted(generation.id)
            for name in generation.files:
                self.outputs.release(self.settings.outputs_dir / name)  # the pin the hold kept
                try:  # from the bucket too with OUTPUT_STORE; if that fails, retention takes it later
                    await self.outputs.remove(name)
                except OutputError as error:
                    log.warning("result_file_not_removed", file=name, error=str(error))
        job = await self.store.get_job(hold.job_id)
        if job is not None and job.state == "delivering" and self.fail is not None:
            await self.fail(job, "a moderator removed the result, so it was not posted")
        return f"🗑️ Deleted: the result by <@{hold.user_id}> is gone, and they were told."

    async def _decide(self, hold_id: int, guild_id: int, state: str, actor_id: int) -> Hold | str:
        """The hold, decided now and audited; a sentence when it is not this server's or not held any more."""
        hold = await self.store.get_hold(hold_id)
        if hold is None or hold.guild_id != guild_id:
            return "That held result is not known here."
        decided = await self.store.decide_hold(hold_id, state, actor_id)
        if decided is None:
            return "That result is no longer held: a moderator decided already."
        action = "moderation_release" if state == "released" else "moderation_delete"
        await self.store.audit(guild_id, actor_id, action, hold_id=hold_id, job_id=hold.job_id,
                               generation_id=hold.generation_id, author_id=hold.user_id)
        log.info("hold_decided", hold_id=hold_id, job_id=hold.job_id, state=state, by=actor_id)
        if self.decided is not None:
            try:
                await self.decided(decided)
            except Exception:  # the decision stands; only its card is out of date
                log.exception("hold_card_not_updated", hold_id=hold_id)
        return decided

    async def pending(self, guild_id: int) -> list[Hold]:
        """The results still held in a server, oldest first (for the dashboard)."""
        return await self.store.pending_holds(guild_id, PENDING_SHOWN)
