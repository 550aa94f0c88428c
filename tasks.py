"""Background loops that never die silently.

A loop that ends with an exception in a bare `create_task` takes its work with
it and says nothing (the reader of a websocket, the dispatcher of the queue).
`supervise` runs such a loop, logs how it ended when it should not have, and
starts it again after a short pause, so one bad input can cost at most one
iteration of work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

RESTART_DELAY = 0.5  # seconds before a crashed loop is started again: no hot loop on a persistent fault


async def supervise(name: str, loop: Callable[[], Awaitable[Any]], *, logger: Any = None,
                    restart_delay: float = RESTART_DELAY) -> None:
    """Run `loop()` until cancelled; if it returns or raises, log it and run it again."""
    logger = logger or log
    while True:
        try:
            await loop()
            logger.error("task_ended", task=name, restart_in=restart_delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("task_crashed", task=name, restart_in=restart_delay)
        await asyncio.sleep(restart_delay)


def start(name: str, loop: Callable[[], Awaitable[Any]], **options: Any) -> asyncio.Task[None]:
    """A supervised task named `name`."""
    return asyncio.create_task(supervise(name, loop, **options), name=name)
