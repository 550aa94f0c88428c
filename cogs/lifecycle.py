"""The bot's life: whether its connection to Discord is up right now, a stop that is always quick, and
a start that cannot work ending in one line that says what to do.

discord.py's `is_ready()` stays true while it reconnects after the gateway dropped (only `close()`
clears it), so the connection is followed through its events instead: `connect` (READY came),
`ready` and `resumed` (per shard for a sharded bot) mean connected, `disconnect` means not. A stop
runs each part under a time bound, lets a result being posted finish and be recorded first, and
cancels discord.py's reconnect backoff (up to minutes) instead of waiting it out.

`Gateway` is the bot's `gateway`; `stop` is its close(); `run` runs it as a process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import structlog
from discord.gateway import ReconnectWebSocket

from cluster import ClusterError
from jobs import wording
from store import StoreError

log = structlog.get_logger("bot")

STOP_BOUND = 8.0  # seconds a whole stop may take (docker compose waits 30 before it kills)
STEP_BOUND = 3.0  # seconds each part of a stop may take, within STOP_BOUND
POSTING_BOUND = 5.0  # seconds a result being posted may take to be posted and recorded during a stop
GATEWAY_EVENTS = ("connect", "ready", "resumed", "disconnect")


class Gateway:
    """Follows the gateway connection of `bot` through discord.py's events (bot.dispatch hands each one here)."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self._shards_up: set[int | None] = set()
        self._shards_down: set[int | None] = set()
        self._dropped_at: float | None = None
        self.failed: BaseException | None = None  # the first connection failed: the bot gives up
        self.gave_up = asyncio.Event()

    def saw(self, event_name: str, args: tuple[Any, ...]) -> None:
        """Called synchronously by bot.dispatch, inside discord.py's `except` for a disconnect: the error
        is at hand."""
        sharded = isinstance(self.bot, discord.AutoShardedClient)
        name = event_name.removeprefix("shard_") if sharded else event_name
        if name in GATEWAY_EVENTS and event_name.startswith("shard_") == sharded:
            shard = args[0] if sharded and args else None
            if name == "disconnect":
                self._lost(shard, sys.exception())
            else:
                self._up(shard)

    @property
    def connected(self) -> bool:
        bot = self.bot
        shards = (bot.shard_count or 1) if isinstance(bot, discord.AutoShardedClient) else 1
        return len(self._shards_up) >= shards and not self._shards_down and not bot.is_closed()

    def problem(self) -> str | None:
        """Why the bot is not connected to Discord now, in words; None when it is."""
        if self.connected:
            return None
        if self.bot.is_closed():
            return "the bot is stopping"
        if self._dropped_at is None or not self._shards_up:
            return "not connected to Discord yet"
        dropped = wording.seconds(time.monotonic() - self._dropped_at)
        return f"the connection to Discord dropped {dropped} ago; the bot is reconnecting"

    def _up(self, shard: int | None) -> None:
        if self._shards_down:
            log.info("discord_reconnected", shard=shard,
                     after=round(time.monotonic() - (self._dropped_at or time.monotonic()), 1))
        self._shards_down.discard(shard)
        self._shards_up.add(shard)
        if not self._shards_down:
            self._dropped_at = None
        self.bot.metrics.discord(self.connected)

    def _lost(self, shard: int | None, error: BaseException | None) -> None:
        closed = self.bot.is_closed()
        if shard in self._shards_up:
            if shard not in self._shards_down and not closed:
                self._dropped_at = self._dropped_at or time.monotonic()
                self._shards_down.add(shard)
                log.info("discord_disconnected", shard=shard, error=_short(error))
        elif (error is not None and not isinstance(error, (ReconnectWebSocket, asyncio.CancelledError))
              and not isinstance(self.bot, discord.AutoShardedClient) and not closed):
            self.failed = error  # never connected: retrying forever would hide a setup problem
            self.gave_up.set()
        self.bot.metrics.discord(self.connected)


# stopping -------------------------------------------------------------------------------------------


async def stop(bot: Any, close_discord: Callable[[], Awaitable[None]]) -> None:
    """Stop everything, each part within a bound and all within STOP_BOUND; the store is closed
    whatever the other parts did, and discord.py last."""
    deadline = time.monotonic() + STOP_BOUND
    try:
        for task in bot.background:
            task.cancel()
        await _bounded("webhooks", bot.webhooks.close(), deadline)
        if bot.scheduler is not None:
            await _bounded("scheduler", bot.scheduler.close(), deadline)
        if bot.heartbeat is not None:
            await _bounded("heartbeat", bot.heartbeat.stop(), deadline)
        if bot.cluster is not None:  # the lease goes: another process takes up the jobs at once
            await _bounded("cluster", bot.cluster.close(), deadline)
        await _bounded("results being posted", bot.delivery.settle(), deadline, POSTING_BOUND)
        bot.delivery.close()
        await _bounded("comfyui", _close_clients(bot.clients), deadline)
        await _bounded("downloads", bot.inputs.close(), deadline)
        if bot.web is not None:
            await _bounded("web", bot.web.stop(), deadline)
    finally:
        await _bounded("store", bot.store.close(), deadline)
        await _bounded("discord", close_discord(), deadline)


async def _close_clients(clients: list[Any]) -> None:
    results = await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    for client, result in zip(clients, results):
        if isinstance(result, Exception):
            log.error("comfyui_close_failed", server=client.name, error=repr(result))


async def _bounded(step: str, work: Awaitable[Any], deadline: float, bound: float = STEP_BOUND) -> None:
    """One part of a stop: it may fail or take too long (`bound`, and never past `deadline` by more than
    a moment), the next part runs anyway."""
    seconds = max(0.1, min(bound, deadline - time.monotonic()))
    try:
        await asyncio.wait_for(work, seconds)
    except TimeoutError:
        log.warning("stop_step_timed_out", step=step, after=round(seconds, 1))
    except Exception as error:
        log.error("stop_step_failed", step=step, error=repr(error)[:300])


def _short(error: BaseException | None) -> str | None:
    if isinstance(error, ReconnectWebSocket):
        return f"the connection closed; the bot will {error.op.lower()}"
    return None if error is None else f"{type(error).__name__}: {error}"[:300]


# running --------------------------------------------------------------------------------------------


async def run(bot: Any, token: str) -> int:
    """Run until Discord refuses the token, the first gateway connection fails, or SIGINT/SIGTERM asks
    for a stop (jobs resume next start). A problem ends in one line on stderr and a non-zero status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    quiet = _QuietAfterGivingUp(bot)
    logging.getLogger("discord.client").addFilter(quiet)
    running = asyncio.create_task(bot.start(token))
    waits = {asyncio.create_task(stop.wait()), asyncio.create_task(bot.gateway.gave_up.wait())}
    try:
        await asyncio.wait({running, *waits}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("bot_stopping")
    finally:
        for task in waits:
            task.cancel()
        await bot.close()
        if not running.done():  # discord.py may be sleeping before its next reconnect: no need to wait
            running.cancel()
            await asyncio.wait({running}, timeout=STEP_BOUND)
        logging.getLogger("discord.client").removeFilter(quiet)
    crashed = running.exception() if running.done() and not running.cancelled() else None  # always retrieved
    error = bot.gateway.failed
    if error is None and not stop.is_set():
        error = crashed
    if error is not None:
        code, line = failure(error, gateway=error is bot.gateway.failed)
        log.info("bot_stopped", status=code)
        print(line, file=sys.stderr)
        return code
    log.info("bot_stopped", status=0)
    return 0


class _QuietAfterGivingUp(logging.Filter):
    """discord.py logs a failed connection with its traceback before it sleeps and retries; once the bot
    has given up on a first connection, the line `run` prints says it all."""

    def __init__(self, bot: Any) -> None:
        super().__init__()
        self._bot = bot

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._bot.gateway.gave_up.is_set() and str(record.msg).startswith("Attempting a reconnect"))


def failure(error: BaseException, *, gateway: bool = False) -> tuple[int, str]:
    """The exit status and the line that says what went wrong and what to do (`gateway`: the first
    connection to the gateway failed, after the login worked)."""
    if isinstance(error, discord.LoginFailure):
        return 2, "config error: DISCORD_TOKEN: Discord refused this token (reset it in the Developer Portal)"
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return 2, ("config error: Discord refused an intent the bot asked for; turn it on in the Developer "
                   "Portal (Bot, Privileged Gateway Intents)")
    if isinstance(error, discord.ConnectionClosed):
        if error.code == 4004:
            return 2, ("config error: DISCORD_TOKEN: Discord's gateway refused this token (reset it in the "
                       "Developer Portal)")
        if error.code == 4011:
            return 2, ("config error: Discord says the bot is in too many servers for one connection; set "
                       "DISCORD_SHARDED=true")
        reason = f": {error.reason}" if error.reason else ""
        return 1, (f"error: Discord's gateway closed the connection (code {error.code}{reason}); "
                   "see https://discordstatus.com and start the bot again")
    if isinstance(error, StoreError):  # a sentence naming the database, never its password
        return 1, f"error: the bot cannot use its database: {error}; it stops until it can (start it again)"
    if isinstance(error, ClusterError):
        return 1, f"error: the bot cannot reach the other processes through its database: {error}"
    detail = f"{type(error).__name__}: {error}"[:300]
    if gateway:
        return 1, (f"error: logged in to Discord, but cannot connect to its gateway ({detail}); check that "
                   "the network lets the bot open websockets to gateway.discord.gg, then start it again")
    if isinstance(error, (aiohttp.ClientError, OSError)):
        return 1, f"error: cannot reach Discord ({detail}); check the network"
    return 1, f"error: the bot stopped on an unexpected error ({detail}); the log above has the details"


def folder_problem(settings: Any) -> str | None:
    """Can the bot write where it keeps its data and its outputs? A line that says what to do, or None."""
    for what, path, setting in (("data folder", settings.data_dir, "DATA_DIR"),
                                ("output folder", settings.outputs_dir, "OUTPUTS_DIR")):
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            return (f"config error: {setting}: cannot write to the {what} {path}: {reason}. Set {setting} to a "
                    f"folder the bot can write, or fix its owner.")
    return None
