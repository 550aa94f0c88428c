"""The bot as a service: what admins switched (paused queues, blocked members, drained servers),
quotas and blocked terms. Checked before a job queues, so a refusal is a sentence and nothing runs.
The switches live in the store (store/admin.py); the scheduler and the pool mirror the ones they act
on. Knows nothing of Discord: /admin, the dashboard and the API all go through `Limits`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import structlog

from config import Settings
from jobs import wording
from jobs.moderation import Moderation
from jobs.scheduler import Scheduler
from store import Store

log = structlog.get_logger("bot")

UNITS = {"images": "images", "gpu_seconds": "GPU seconds", "cost": "cost"}
TERM_CHECK_TIMEOUT = 1.0  # seconds a blocked-terms check may take (an admin's regular expression)
TERM_MAX = 200


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    """The start of the current UTC day or month."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1) if period == "month" else day


def period_end(period: str, now: dt.datetime) -> dt.datetime:
    start = period_start(period, now)
    if period == "month":
        return (start + dt.timedelta(days=32)).replace(day=1)
    return start + dt.timedelta(days=1)


def term_pattern(term: str, regex: bool) -> re.Pattern[str]:
    """A blocked term as a pattern: a regular expression as written, or the words, whole and in any case."""
    return re.compile(term if regex else rf"(?<!\w){re.escape(term)}(?!\w)", re.IGNORECASE)


BLOCKED = "blocked term"  # the one category TermsProvider scores


class TermsProvider:
    """The blocked words and phrases of /admin terms as a moderation provider (the Provider protocol of
    jobs/moderation_providers.py, beside the OpenAI-compatible endpoint): a text holding one scores 1.0 in
    BLOCKED, which it flags itself; images are not its to judge. Limits.refusal runs it first, without the
    network, and its refusal has its own sentence."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def scores(self, guild_id: int, texts: list[str], images: list[bytes]) -> tuple[dict[str, float], set[str]]:
        terms = [(scope.split(":", 1)[1], value.get("regex", False)) for scope, value in
                 (await self.store.controls("term")).items() if scope.split(":", 1)[0] == str(guild_id)]
        if not terms:
            return {}, set()

        def check() -> bool:
            return any(term_pattern(term, regex).search(text) for term, regex in terms for text in texts if text)

        try:  # in a thread, bounded: an admin's regular expression must never stall the bot
            hit = await asyncio.wait_for(asyncio.to_thread(check), TERM_CHECK_TIMEOUT)
        except TimeoutError:
            log.warning("blocked_terms_check_timed_out", guild_id=guild_id)
            hit = True
        return ({BLOCKED: 1.0}, {BLOCKED}) if hit else ({}, set())


class Limits:
    """The checks before a job queues, and the switches admins turn, each written to the audit log."""

    def __init__(self, store: Store, settings: Settings, scheduler: Scheduler) -> None:
        self.store = store
        self.settings = settings
        self.scheduler = scheduler
        self.terms = TermsProvider(store)

    # the actions /admin, the mod-log and the dashboard share; each is written to the audit log -----

    async def pause(self, guild: int, actor_id: int, everywhere: bool, on: bool) -> str:
        scope = "all" if everywhere else str(guild)
        await self.store.set_control("pause", scope, {"by": actor_id} if on else None)
        self.scheduler.set_paused(set(await self.store.controls("pause")))
        await self.scheduler.tell_leader("switches", "pause")
        await self.audited(guild, actor_id, "pause" if on else "resume", scope=scope)
        where = "every server" if everywhere else "this server"
        return (f"⏸️ Paused: no new jobs start on {where}; they wait, and running ones finish. /admin resume "
                "starts them again.") if on else f"▶️ Resumed: jobs start again on {where}."

    async def block(self, guild: int, actor_id: int, user_id: int, reason: str, on: bool) -> str:
        changed = await self.store.set_control("block", f"{guild}:{user_id}",
                                               {"reason": reason, "by": actor_id} if on else None)
        await self.audited(guild, actor_id, "block" if on else "unblock", user_id=user_id,
                            **({"reason": reason} if on else {}))
        if on:
            return f"⛔ <@{user_id}> can no longer use the bot here."
        return f"<@{user_id}> can use the bot here again." if changed else f"<@{user_id}> was not blocked."

    async def drain(self, guild: int, actor_id: int, number: int, on: bool) -> str:
        """Raises ValueError for a server number the pool does not have."""
        backends = self.scheduler.pool.backends
        if not 1 <= number <= len(backends):
            raise ValueError(f"There is no server {number}; /status lists {wording.plural(len(backends), 'server')}.")
        backend = backends[number - 1]
        await self.store.set_control("drain", backend.name, {"by": actor_id} if on else None)
        backend.drained = on
        self.scheduler.set_paused(self.scheduler.paused)  # wakes the dispatcher
        await self.scheduler.tell_leader("switches", "drain")
        await self.audited(guild, actor_id, "drain" if on else "undrain", server=number)
        return (f"Server {number} gets no new jobs; {wording.plural(len(backend.jobs), 'job')} on it will finish."
                if on else f"Server {number} takes jobs again.")

    async def audited(self, guild: int, actor_id: int, action: str, **details) -> None:
        await self.store.audit(guild, actor_id, action, **details)
        log.info("admin_action", action=action, by=actor_id, guild_id=guild, **details)

    async def usage_today(self, guild_id: int | None, user_id: int) -> str:
        """/status' line on cost: what the person and this server used today (UTC)."""
        since = period_start("day", dt.datetime.now(dt.timezone.utc)).timestamp()
        mine = await self.store.usage(guild_id, user_id, since)
        here = await self.store.usage(guild_id, None, since)
        currency = self.settings.cost_currency
        return f"You: {usage_line(mine, currency)}. This server: {usage_line(here, currency)}."

    moderation: Moderation | None = None  # the moderation provider's check (MODERATION_URL), set by the bot

    async def refusal(self, guild_id: int | None, user_id: int, request: dict, images: int,
                      channel_id: int | None = None) -> str | None:
        """Why this job may not queue (blocked member, blocked term, flagged by moderation, a quota reached), as a
        sentence; None if it may. `channel_id` (when known) picks the age-restricted channels' thresholds."""
        guild = guild_id or 0
        blocks = await self.store.controls("block")
        if f"{guild}:{user_id}" in blocks:
            return "a moderator blocked you from using this bot here"
        texts = [str(request.get(key) or "") for key in ("prompt", "negative_prompt", "style_prompt", "style_negative")]
        if await self._has_blocked_term(guild, texts):
            return "your prompt has a word or phrase this server does not allow; change it and try again"
        if self.moderation is not None and (flagged := await self.moderation.prompt_refusal(
                guild, user_id, texts, channel_id, request)) is not None:
            return flagged
        return await self._quota_refusal(guild_id, user_id, images)

    async def _has_blocked_term(self, guild: int, texts: list[str]) -> bool:
        _, flagged = await self.terms.scores(guild, texts, [])
        return bool(flagged)

    async def _quota_refusal(self, guild_id: int | None, user: int, images: int) -> str | None:
        guild = guild_id or 0
        quotas = await self.store.controls("quota")
        now = dt.datetime.now(dt.timezone.utc)
        for scope, value in sorted(quotas.items()):
            who, quota_guild, quota_user, period, unit = scope.split(":")
            if int(quota_guild) != guild or (who == "user" and int(quota_user) not in (0, user)):
                continue
            if who == "user" and quota_user == "0" and f"user:{guild}:{user}:{period}:{unit}" in quotas:
                continue  # this person has a limit of their own
            used = await self.store.usage(guild_id, user if who == "user" else None,
                                          period_start(period, now).timestamp())
            limit = float(value["limit"])
            amount = {"images": used.images, "gpu_seconds": used.gpu_seconds, "cost": used.cost}[unit]
            if (amount + images > limit) if unit == "images" else amount >= limit:
                return quota_sentence(who, period, unit, amount, limit, period_end(period, now) - now,
                                      self.settings.cost_currency)
        return None


def quota_sentence(who: str, period: str, unit: str, used: float, limit: float, left: dt.timedelta,
                   currency: str) -> str:
    """Which limit was reached and when it resets: "you have made 20 of your 20 images today; ...". """
    whose = "you have" if who == "user" else "this server has"
    span = "today" if period == "day" else "this month"
    amount = {"images": f"made {used:g} of {limit:g} images",
              "gpu_seconds": f"used {used:.1f} of {limit:g} GPU seconds",
              "cost": f"used {used:.2f} of {limit:.2f} {currency}"}[unit]
    resets = "at 00:00 UTC" if period == "day" else "on the 1st at 00:00 UTC"
    return (f"{whose} {amount} allowed {span}{'' if who == 'user' else ' for everyone here'}; "
            f"the limit resets {resets}, in {wording.seconds(left.total_seconds())}")


def usage_line(used, currency: str) -> str:
    """"3 images, 12.5 GPU seconds, 0.40 USD" (no cost while no server has a price)."""
    cost = f", {used.cost:.2f} {currency}" if used.cost else ""
    return f"{wording.plural(used.images, 'image')}, {used.gpu_seconds:.1f} GPU seconds{cost}"
