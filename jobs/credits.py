"""Credits (issue 21): what a job costs, and taking it when the job queues and settling it when it ends. A part
of scheduler.Scheduler (it uses the scheduler's store and settings); the ledger is store/credits.py.

Off unless CREDITS_ENABLED: then nothing is priced, reserved or shown. On, a job's price is its kind's price in
CREDIT_PRICES times its images times its size in started megapixels (CREDIT_PIXELS; at least one): a 512×512
image at price 1 costs 1, a batch of four 4, a 2048×2048 one 4. A kind priced 0 (or not listed) is free.

The price is reserved when the job queues (refused in words, nothing queued, when the person has too few, a
debt included) and the job's message says it (wording.cost_line: "This costs 3 credits; you have 9 left."). When the job ends it
is settled once: spent when its result was made, refunded in full when it failed or was cancelled. Every step of
a pipeline is a job, priced on its own. Jobs of the HTTP API are not priced: its keys are the operator's, made
by admins, and have no person to pay. With CREDITS_DAILY_ALLOWANCE, a person's first priced job of a UTC day
in a server first receives that many free credits (once a day); what is left of an earlier day's expires then
(an "expiry" entry; free credits count as spent last, so at most the balance expires).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import structlog

from config import Settings
from image_gen import RequestError
from jobs import kinds, wording
from store import Job

log = structlog.get_logger("jobs.scheduler")


def price(settings: Settings, kind: str, request: Mapping[str, Any]) -> int:
    """The credits a job of `kind` with this request costs (0: free)."""
    base = int(settings.credit_prices.get(kind, 0))
    if not settings.credits_enabled or base <= 0:
        return 0
    images = int(request.get("batch") or len(request.get("inputs") or ()) or 1)
    width, height = int(request.get("width") or 0), int(request.get("height") or 0)
    factor = int(request.get("factor") or 1)
    pixels = width * height * factor * factor
    return base * max(1, images) * max(1, math.ceil(pixels / settings.credit_pixels))


def today() -> str:
    """The UTC day, as the allowance's entries name it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


class Credits:
    """The methods of scheduler.Scheduler that charge jobs."""

    async def _charge(self, job: Job, *, cancel: bool = True) -> Job:
        """Reserve a stored job's price; the job with its price and what is left in its request, for its
        message. RequestError in words when the person has too few: the job is never queued, and (`cancel`)
        stored as cancelled; a pipeline's next step is failed in words by its caller instead."""
        cost = price(self._settings, job.kind, job.request)
        if cost <= 0 or job.guild_id is None or not kinds.from_discord(job.channel_id):  # an API key's: free
            return job
        await self._allowance(job)
        reserved = await self._store.reserve(job.guild_id, job.user_id, job.id, cost, f"{job.kind} job {job.id}")
        if reserved.entry is None:
            if cancel:
                await self._store.update_job(job.id, only_from=("waiting",), state="cancelled",
                                             error="not enough credits")
            log.info("job_refused_credits", job_id=job.id, price=cost, balance=reserved.balance)
            raise RequestError(wording.short_of_credits(cost, reserved.balance))
        request = {**job.request, "credits": {"price": cost, "balance": reserved.balance}}
        return await self._store.update_job(job.id, request=request)

    async def _allowance(self, job: Job) -> None:
        """Today's free credits, once; first, what is left of an earlier day's expires (free credits are
        spent last: what expires is at most the balance)."""
        daily = self._settings.credits_daily_allowance
        if daily <= 0:
            return
        guild, user, day = job.guild_id, job.user_id, today()
        given = f"allowance:{guild}:{user}:{day}"
        last = await self._store.last_credit_entry(guild, user, "allowance")
        if last is not None and last.payment_id != given:
            unused = min(last.amount, await self._store.balance(guild, user))
            if unused > 0:  # once per allowance, whoever asks first
                await self._store.add_credits(guild, user, "expiry", -unused, f"{last.reason}: unused, expired",
                                              payment_id=f"expiry:{last.payment_id}")
        await self._store.add_credits(guild, user, "allowance", daily, f"daily allowance {day}", payment_id=given)

    async def _settle(self, job: Job, succeeded: bool) -> None:
        """End a priced job's reservation once (a job never priced has none: nothing happens)."""
        if not self._settings.credits_enabled:
            return
        try:
            entry = await self._store.settle(job.id, succeeded, "done" if succeeded else "refunded: it did not finish")
        except Exception:  # the ledger's own failure must not stop the job's ending; the next end retries
            log.exception("credits_not_settled", job_id=job.id)
            return
        if entry is not None:
            log.info("credits_settled", job_id=job.id, kind=entry.kind, amount=entry.amount, balance=entry.balance)
