"""What people see of the queue: each waiting job's position, countdown and estimated time, kept
current in its message; /status; and the queue and servers as the metrics show them. A part of
scheduler.Scheduler (it reads the scheduler's queue, flights and pool), kept apart so the scheduler
itself is about taking, running and ending jobs.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import structlog

from jobs import wording
from jobs.eta import wait
from store import Job

log = structlog.get_logger("scheduler")

POSITION_INTERVAL = 0.5  # seconds between recomputations of the queue positions shown to people
COUNTDOWN_STEP = 5  # while no server answers, "giving up in 25 s" moves in steps of this many seconds


@dataclass(frozen=True)
class ServerStatus:
    name: str
    healthy: bool
    load: int
    capacity: int
    last_model: str | None
    problem: str | None = None  # why a connected server cannot be used


@dataclass(frozen=True)
class Status:
    servers: list[ServerStatus]
    waiting: int
    running: int
    mine: list[tuple[Job, int | None, float | None]]  # the caller's active jobs, running ones first: jobs ahead and countdown if waiting
    new_job_starts: float | None = None  # seconds until a job queued now would start, when the bot can tell
    free: bool = False  # a server could take a job now


@dataclass(frozen=True)
class Place:
    """Where one active job stands, as its message and /status both show it."""

    job: Job
    ahead: int | None  # jobs that will start before it; None once it is handed to a server
    giving_up_in: float | None = None  # while no server answers: seconds until the bot gives up
    eta: float | None = None  # seconds until its result, when the bot can tell


@dataclass(frozen=True)
class Snapshot:
    """The queue at one moment: every message and /status are made from one of these."""

    places: list[Place]  # running jobs, then those handed to a server, then the waiting ones in order
    waiting: int
    running: int
    new_job_starts: float | None
    free: bool


class QueueView:
    """The methods of scheduler.Scheduler that show the queue."""

    def _measure(self) -> None:
        """The queue and the servers as the metrics show them."""
        self.metrics.queue(sum(1 for _ in self.waiting_jobs()), len(self._flights))
        for backend in self.pool.backends:
            self.metrics.server(backend.label, up=backend.healthy, load=len(backend.jobs))

    def snapshot(self) -> Snapshot:
        """Where every active job stands now. A waiting job has ahead of it the jobs handed to a server
        that have not started yet (they take the GPU first) and the jobs before it in the queue."""
        now, waiting = time.monotonic(), list(self.waiting_jobs())
        flights = sorted(self._flights.values(), key=lambda f: (f.job.state != "running", f.began))
        handed = sum(1 for flight in flights if flight.job.state != "running" and not flight.finished)
        etas = self._etas(waiting, now)
        places = [Place(flight.job, None) for flight in flights]
        places += [Place(job, handed + position, self._giving_up_in(job, position, now), etas[position])
                   for position, job in enumerate(waiting)]
        free = any(b.free() and not b.drained for b in self.pool.backends)
        return Snapshot(places, len(waiting), len(self._flights), etas[-1], free)

    async def show_positions(self) -> None:
        """Bring each waiting job's message up to date with the queue as it is now: the jobs ahead of it
        (exact up to wording.FAR, the same figure /status shows) or, while no server answers, when the
        bot gives up. Only a change that people would see is sent."""
        for place in self.snapshot().places:
            if place.ahead is None:
                continue
            job, eta = place.job, place.eta
            shown = (min(place.ahead, wording.FAR), place.giving_up_in, wording.about(eta) if eta is not None else None)
            if self._shown.get(job.id) == shown:
                continue
            self._shown[job.id] = shown
            try:
                await self._notifier.job_queued(job, place.ahead, place.giving_up_in, eta)
            except Exception:
                log.exception("position_not_shown", job_id=job.id)

    async def _position_loop(self) -> None:
        while True:
            await asyncio.sleep(POSITION_INTERVAL)
            await self.show_positions()

    def _starts(self, waiting: list[Job], now: float, *, local: bool = False) -> list[float | None]:
        """For each waiting job (and one more: a job queued now), the seconds until it starts: the work
        ahead and what is left of the running jobs, shared by the servers taking jobs (`local`: the
        operator's own, not RunPod); None where a job ahead has no estimate yet."""
        servers = sum(1 for b in self.pool.backends if b.healthy and not b.drained and not (local and b.remote))
        running = [(self.estimates.job(f.job.kind, f.job.request, f.backend.name) or 0.0) - (now - f.began)
                   for f in self._flights.values() if not f.finished and not (local and f.backend.remote)]
        own = [self.estimates.job(job.kind, job.request) for job in waiting]
        return [wait(own[:position], running, servers) for position in range(len(waiting) + 1)]

    def _etas(self, waiting: list[Job], now: float) -> list[float | None]:
        """For each waiting job, the seconds until its result (its start, then its own time); None where
        it cannot be told. One more entry at the end: when a new job would start."""
        starts, etas = self._starts(waiting, now), []
        for position, start in enumerate(starts):
            mine = self.estimates.job(waiting[position].kind, waiting[position].request) \
                if position < len(waiting) else 0.0
            etas.append(None if start is None or mine is None else start + mine)
        return etas

    def _giving_up_in(self, job: Job, position: int, now: float) -> float | None:
        """Seconds until a job that no server can take fails, in COUNTDOWN_STEP steps; None when a
        server can take it (or it is too far back in the queue for a countdown to be worth its edits)."""
        since = self._stalled.get(job.id)
        if since is None or position >= wording.FAR:
            return None
        left = since + self._settings.server_grace - now
        return float(max(COUNTDOWN_STEP, math.ceil(left / COUNTDOWN_STEP) * COUNTDOWN_STEP))

    def status(self, user_id: int) -> Status:
        servers = [ServerStatus(b.label, b.healthy, len(b.jobs), b.capacity, b.last_model, b.problem)
                   for b in self.pool.backends]
        now = self.snapshot()
        mine = [(place.job, place.ahead, place.giving_up_in) for place in now.places if place.job.user_id == user_id]
        return Status(servers, now.waiting, now.running, mine, now.new_job_starts, now.free)
