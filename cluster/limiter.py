"""A rate limit shared by every process of the bot: at most `count` commands per `per` seconds for each
person, counted in the store (store.hit_rate: atomic across processes on PostgreSQL), so a person
cannot go faster by landing on several shards. The same answers as cogs/common.py's RateLimiter.hit.
When the store fails or is slow, the command is allowed (and the failure logged): the bot stays usable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from store.records import StoreError

log = structlog.get_logger(__name__)

TIMEOUT = 3.0  # seconds a check may take before the command is let through


class SharedRateLimiter:
    """At most `count` hits per `per` seconds for each user, across the processes sharing `store`."""

    def __init__(self, store: Any, count: int, per: float, *, timeout: float = TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.count, self.per = store, count, per
        self._timeout, self._clock = timeout, clock

    async def hit(self, user_id: int) -> float:
        """0.0 when allowed (and counted); otherwise the seconds until the next hit is allowed."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self.store.hit_rate(user_id, self.count, self.per, self._clock())
        except (StoreError, asyncio.TimeoutError) as exc:
            log.warning("rate_limit_unavailable", user_id=user_id, error=str(exc) or exc.__class__.__name__)
            return 0.0
