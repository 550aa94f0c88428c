"""The bot's Prometheus metrics: jobs, queue, servers, GPU time and cost, errors, latency, event loop.

Each `Metrics` has its own `CollectorRegistry` (never prometheus-client's global one), so tests and
two bots in one process do not share numbers. Every recording method is cheap, synchronous and never
raises: a bad value (None, negative, NaN) is skipped, a label value is cleaned, clipped to
`LABEL_CHARS` characters, and each of the `kind`, `server` and `error` labels takes at most
`LABEL_VALUES` distinct values, later ones being counted under "other", so hostile input cannot grow
memory without end. `render()` gives the text format for the web app's `GET /metrics`;
`watch_loop` measures how late the event loop wakes, and its ticks are what `/healthz` checks.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from version import VERSION

log = structlog.get_logger(__name__)

LABEL_CHARS = 100  # a label value's length at most
LABEL_VALUES = 50  # distinct values per label (kind, server, error) at most; then "other"
OTHER = "other"
STATES = ("done", "failed", "cancelled")
JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)  # waiting and running: seconds..an hour
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3)  # Discord wants an answer within 3 s
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_USERINFO = re.compile(r"(?<=://)[^/\s]*@")  # user:password@ in a URL, should one be passed as a name

F = TypeVar("F", bound=Callable[..., Any])


def _never_raises(method: F) -> F:
    """Metrics must never break the bot: a failure is logged (once per method) and ignored. Each call
    also counts as a change (`Metrics.changes`), so a rendered text can be reused while nothing changed."""
    warned = False

    @functools.wraps(method)
    def wrapper(self: Metrics, *args: Any, **kwargs: Any) -> Any:
        nonlocal warned
        self.changes += 1
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            if not warned:
                warned = True
                log.warning("metrics_failed", method=method.__name__, error=repr(error)[:300])
            return None

    return wrapper  # type: ignore[return-value]


def _seconds(value: Any) -> float | None:
    """A duration or amount that can be recorded: a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


class _Bounded:
    """The values one label may take: cleaned, clipped, at most `limit` distinct, then "other"."""

    def __init__(self, limit: int = LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        text = value if isinstance(value, str) else str(value)
        if text in self._seen:
            return text
        text = _USERINFO.sub("", _UNPRINTABLE.sub("_", text[: LABEL_CHARS * 4]))[:LABEL_CHARS].strip() or "unknown"
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(text)
        return text


class Metrics:
    """The bot's metrics, in a registry of their own. `clock` (monotonic seconds) dates the loop watcher's ticks."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, label_values: int = LABEL_VALUES) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self._kind = _Bounded(label_values)
        self._server = _Bounded(label_values)
        self._error = _Bounded(label_values)
        self._ticked: float | None = None  # when the loop watcher last woke (clock), None without a watcher
        self.last_lag: float | None = None
        self.changes = 0  # recording calls so far: the text to render is the same while this is
        r = self.registry
        self.jobs = Counter("comfybot_jobs", "Jobs finished, by kind and final state (done, failed, cancelled).",
                            ["kind", "state"], registry=r)
        self.waiting = Gauge("comfybot_jobs_waiting", "Jobs waiting for a ComfyUI server.", registry=r)
        self.running = Gauge("comfybot_jobs_running", "Jobs handed to a ComfyUI server (queued there or running).",
                             registry=r)
        self.wait_seconds = Histogram("comfybot_job_wait_seconds", "Time a job waited before a server took it.",
                                      ["kind"], buckets=JOB_BUCKETS, registry=r)
        self.run_seconds = Histogram("comfybot_job_run_seconds", "Time a job ran on its server.",
                                     ["kind"], buckets=JOB_BUCKETS, registry=r)
        self.delivery_seconds = Histogram("comfybot_delivery_seconds", "Time to post a job's result to Discord.",
                                          ["kind"], buckets=DELIVERY_BUCKETS, registry=r)
        self.ack_seconds = Histogram("comfybot_ack_seconds", "Time from a Discord interaction to its acknowledgement.",
                                     buckets=ACK_BUCKETS, registry=r)
        self.server_up = Gauge("comfybot_server_up", "1 when the ComfyUI server is usable, else 0.",
                               ["server"], registry=r)
        self.server_load = Gauge("comfybot_server_load", "The bot's prompts on the ComfyUI server, queued or running.",
                                 ["server"], registry=r)
        self.gpu_seconds = Counter("comfybot_gpu_seconds", "GPU time the bot's jobs used, as ComfyUI measured it.",
                                   ["server"], registry=r)
        self.cost = Counter("comfybot_cost", "What the GPU time cost, in the operator's currency.",
                            ["server"], registry=r)
        self.errors = Counter("comfybot_errors", "Errors, by class name.", ["error"], registry=r)
        self.loop_lag_seconds = Histogram("comfybot_event_loop_lag_seconds",
                                          "How late the event loop woke from a sleep.", buckets=LAG_BUCKETS, registry=r)
        self.discord_connected = Gauge("comfybot_discord_connected", "1 while connected to Discord, else 0.",
                                       registry=r)
        self.leading = Gauge("comfybot_dispatching", "1 while this process holds the dispatcher's lease (it hands "
                             "jobs to the servers), else 0. Summed over the processes, exactly 1.", registry=r)
        self.processes = Gauge("comfybot_processes", "Bot processes sharing the database, heard from lately "
                               "(1 for a bot alone).", registry=r)
        self.webhook_due = Gauge("comfybot_webhook_deliveries_due", "Webhook deliveries due at the sender's last "
                                 "pass (at most one batch): above 0 for long, the backlog grows.", registry=r)
        # The process' own: this registry has no default collectors, every name it serves starts with comfybot_.
        self.build_info = Gauge("comfybot_build_info", "Always 1; its label is the running bot's version.",
                                ["version"], registry=r)
        self.build_info.labels(VERSION).set(1)
        self.start_time = Gauge("comfybot_start_time_seconds", "When this bot process started, in Unix seconds: "
                                "its changes count the restarts.", registry=r)
        self.start_time.set(time.time())

    # --- recording ----------------------------------------------------------------------

    @_never_raises
    def job_finished(self, kind: str, state: str, *, waited: float | None, ran: float | None,
                     delivery: float | None = None) -> None:
        """A job ended in `state` (done, failed or cancelled; anything else counts as "other"), after
        `waited` seconds in the queue, `ran` seconds on a server and `delivery` seconds posting it;
        None for a phase it never reached."""
        kind = self._kind(kind)
        self.jobs.labels(kind, state if state in STATES else OTHER).inc()
        for histogram, value in ((self.wait_seconds, waited), (self.run_seconds, ran),
                                 (self.delivery_seconds, delivery)):
            value = _seconds(value)
            if value is not None:
                histogram.labels(kind).observe(value)

    @_never_raises
    def acked(self, seconds: float) -> None:
        """An interaction was acknowledged (deferred or answered) `seconds` after Discord created it."""
        value = _seconds(seconds)
        if value is not None:
            self.ack_seconds.observe(value)

    @_never_raises
    def error(self, name: str | BaseException) -> None:
        """One error of class `name` (an exception is counted by its class name)."""
        if isinstance(name, BaseException):
            name = type(name).__name__
        self.errors.labels(self._error(name)).inc()

    @_never_raises
    def queue(self, waiting: int, running: int) -> None:
        """The jobs waiting for a server and the jobs on one now."""
        for gauge, value in ((self.waiting, waiting), (self.running, running)):
            value = _seconds(value)
            if value is not None:
                gauge.set(value)

    @_never_raises
    def server(self, name: str, *, up: bool, load: int) -> None:
        """Server `name` (its display name, never its URL) is usable or not, with `load` of our prompts on it."""
        name = self._server(name)
        self.server_up.labels(name).set(1 if up else 0)
        value = _seconds(load)
        if value is not None:
            self.server_load.labels(name).set(value)

    @_never_raises
    def gpu(self, server: str, seconds: float, cost: float = 0.0) -> None:
        """A job used `seconds` of GPU time on `server`, costing `cost` in the operator's currency."""
        server = self._server(server)
        seconds, cost = _seconds(seconds), _seconds(cost)
        if seconds is not None:
            self.gpu_seconds.labels(server).inc(seconds)
        if cost is not None:
            self.cost.labels(server).inc(cost)

    @_never_raises
    def loop_lag(self, seconds: float) -> None:
        """The event loop woke `seconds` late; also marks the loop watcher's tick that /healthz checks."""
        self._ticked = self.clock()
        value = _seconds(seconds)
        if value is not None:
            self.last_lag = value
            self.loop_lag_seconds.observe(value)

    @_never_raises
    def discord(self, connected: bool) -> None:
        """Connected to Discord's gateway (ready or resumed) or not (disconnected)."""
        self.discord_connected.set(1 if connected else 0)

    @_never_raises
    def webhooks(self, due: int) -> None:
        """The webhook sender found `due` deliveries due at its last pass."""
        value = _seconds(due)
        if value is not None:
            self.webhook_due.set(value)

    @_never_raises
    def cluster(self, *, leading: bool, processes: int) -> None:
        """Whether this process dispatches, and how many processes share the database."""
        self.leading.set(1 if leading else 0)
        self.processes.set(max(1, processes))

    # --- reading ------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def since_tick(self) -> float | None:
        """Seconds since the loop watcher last ticked; None when no watcher was ever attached."""
        return None if self._ticked is None else max(self.clock() - self._ticked, 0.0)

    def _attach(self) -> None:
        self._ticked = self.clock()


async def watch_loop(metrics: Metrics, interval: float = 0.5) -> None:
    """Measure the event loop's lag forever: how late `asyncio.sleep(interval)` wakes. Run it as a task
    and cancel it on close."""
    loop = asyncio.get_running_loop()
    metrics._attach()
    while True:
        began = loop.time()
        await asyncio.sleep(interval)
        metrics.loop_lag(max(loop.time() - began - interval, 0.0))
