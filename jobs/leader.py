"""Which process dispatches. With several bot processes on one PostgreSQL database, exactly one of them
holds the dispatcher's lease (cluster.Lease) and runs the queue: it alone hands jobs to the ComfyUI
servers and RunPod endpoints, keeps the fair order, shows positions and delivers. The others (followers)
take Discord interactions and API calls, store new jobs and cancels, and tell the leader over the bus
(cluster.Bus); they watch the servers too, under client ids of their own, so that choices and checks
work everywhere without taking the leader's events (ComfyUI sends a prompt's events to one client id).

When the leader dies, its lease's connection closes and another process takes the lease within moments:
it connects to the servers under the shared client ids and takes up every active job from the store, as
a restart does (jobs.scheduler.Scheduler.start). A leader that loses its lease (the database went away)
stops dispatching at once and becomes a follower; its jobs stay in the store for whoever leads next.

With SQLite (one process) there is no cluster: the lease is this process's from the start, nothing is
published, and the scheduler behaves as it always has. A part of scheduler.Scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

import tasks
from backends.pool import Backend, Pool
from cluster import BusError
from cluster.connection import cancel_all
from jobs import kinds
from jobs.fairqueue import FairQueue
from store import ACTIVE_STATES, StoreError

log = structlog.get_logger("jobs.scheduler")

STOP_TIMEOUT = 15.0  # seconds the scheduler's close waits for its tasks to end

CATCH_UP = 15.0  # seconds between the leader's looks at the store for notices it missed

Connect = Callable[[bool], Awaitable[list[Backend]]]  # (as the leader?) -> started backends


class Leadership:
    """The methods of scheduler.Scheduler that take, hold and give up the dispatcher's lease."""

    leading: bool = False
    _cluster: Any = None  # cluster.Cluster, or None: one process alone
    _connect: Connect | None = None  # makes the backends anew, under the leader's or this process's client ids
    _watching: asyncio.Task[None] | None = None  # the pool's watch of its servers, on leaders and followers
    _leadership: asyncio.Task[None] | None = None  # with several processes: waiting for, and holding, the lease

    @property
    def shared(self) -> bool:
        """Whether other processes may share the store (and so the queue)."""
        return self._cluster is not None and self._cluster.shared

    async def start(self) -> int:
        """Take up what a previous process left, then dispatch. Returns the jobs taken up now: with
        several processes, 0, and the lease is taken in the background (`leading` says when)."""
        self.estimates.learn_all(await self._store.gpu_history())
        if not self.shared:
            if self._cluster is not None:
                await self._cluster.lease.acquire()
            self.leading = True
            return await self._take_up()
        bus = self._cluster.bus
        bus.subscribe("job", self._heard_job)
        bus.subscribe("cancel", self._heard_cancel)
        bus.subscribe("switches", self._heard_switches)
        bus.on_reconnect(self._catch_up)
        await self._load_switches()
        self._watching = tasks.start("pool-watch", self.pool.watch)
        self._leadership = tasks.start("leadership", self._lead)
        return 0

    async def close(self) -> None:
        """Stop, within STOP_TIMEOUT; active jobs stay in the store and are taken up by the next leader. (A
        leader standing down while the process goes on waits for its flights without a bound: one left running
        could deliver beside the next leader; a process that stops takes them with it.)"""
        running = (self._leadership, self._watching, *self._loops, *self._tasks)
        await cancel_all(running, timeout=STOP_TIMEOUT)
        left = [task.get_name() for task in running if task is not None and not task.done()]
        if left:
            log.warning("scheduler_stop_timed_out", seconds=STOP_TIMEOUT, tasks=left[:10])

    async def _lead(self) -> None:
        """Forever: wait for the lease, lead while it is held, stand down when it is lost."""
        lease = self._cluster.lease
        while True:
            await lease.acquire()
            log.info("dispatcher_lease_taken", process=self._cluster.name)
            try:
                await self._use_backends(leader=True)
                self.leading = True
                resumed = await self._take_up()
                log.info("jobs_taken_up", resumed=resumed, process=self._cluster.name)
                await lease.lost()
                log.warning("dispatcher_lease_lost", process=self._cluster.name)
            finally:
                await self._stand_down()
            await self._use_backends(leader=False)
            self._watching = tasks.start("pool-watch", self.pool.watch)

    async def _take_up(self) -> int:
        """Load every active job from the store: waiting ones queue, those on a server are followed
        there by prompt id, delivering ones are delivered. Then the dispatch loops start."""
        async with self._taking:
            jobs = await self._store.jobs_in(ACTIVE_STATES)
            self._pin([*await self._store.pending_files(),
                       *(name for job in jobs for name in kinds.files(job.request))])
            await self._load_switches()
            for job in jobs:
                backend = self.pool.get(job.server)
                if job.state == "waiting":
                    self._enqueue(job)
                elif job.state == "delivering":
                    self._spawn(self._deliver_stored(job))
                elif backend is not None and job.prompt_id:
                    self._launch(job, backend, attach=True)
                else:
                    self._enqueue(await self._store.update_job(job.id, state="waiting", prompt_id=None, server=None))
                log.info("job_resumed", job_id=job.id, state=job.state, server=job.server)
        self._loops = [tasks.start("dispatch", self._dispatch_loop), tasks.start("positions", self._position_loop)]
        if self.shared:
            self._loops.append(tasks.start("catch-up", self._catch_up_loop))
        # after the jobs are followed: a server joining cleans up the prompts no job follows
        self._watching = tasks.start("pool-watch", self.pool.watch)
        self._wake_up()
        return len(jobs)

    async def _stand_down(self) -> None:
        """Stop every loop and flight of a leader; forget the queue (the store keeps every job)."""
        self.leading = False
        await cancel_all((self._watching, *self._loops, *self._tasks), timeout=None)
        self._loops, self._tasks = [], set()
        self._queue, self._flights = FairQueue(), {}
        for bookkeeping in (self._cancelled, self._shown, self._stalled, self._avoid):
            bookkeeping.clear()
        self._inputs_released.clear()

    async def _use_backends(self, *, leader: bool) -> None:
        """Connect to the servers anew as the leader (the shared client ids) or as a follower (this
        process's own), and close the previous connections."""
        if self._connect is None:
            return
        old = self.pool.backends
        backends = await self._connect(leader)
        self.pool = Pool(backends, self._settings.server_grace, self._wake_up, self._clean_server)
        for backend in old:
            try:
                await asyncio.wait_for(backend.client.close(), 10.0)
            except Exception as error:  # closing must not stop the change of role
                log.warning("client_not_closed", server=backend.label, error=repr(error))
        try:
            await self._load_switches()
        except StoreError as error:  # the database went away with the lease: the next leader reads them
            log.warning("switches_not_loaded", error=str(error))

    async def _load_switches(self) -> None:
        """The paused queues and drained servers, as the store has them (admins of any process set them)."""
        self.set_paused(set(await self._store.controls("pause")))
        drained = await self._store.controls("drain")
        for backend in self.pool.backends:
            backend.drained = backend.name in drained

    # what followers tell the leader ------------------------------------------------------------

    async def tell_leader(self, topic: str, payload: str) -> None:
        """Publish to the leader (and every process); nothing to do for a process alone. A notice that
        cannot be sent is not lost work: the store has the change, and the leader catches up with the
        store every CATCH_UP seconds."""
        if not self.shared:
            return
        try:
            await self._cluster.bus.publish(topic, payload)
        except BusError as error:
            log.warning("leader_not_told", topic=topic, payload=payload, error=str(error))

    def _knows(self, job_id: int) -> bool:
        return job_id in self._flights or any(job.id == job_id for job in self.waiting_jobs())

    async def _heard_job(self, payload: str) -> None:
        """A follower stored a new job: queue it."""
        if not self.leading:
            return
        async with self._taking:
            job = await self._store.get_job(int(payload))
            if job is None or job.state != "waiting" or self._knows(job.id):
                return
            self._enqueue(job)
        if not self.pool.any_healthy():
            self.pool.poke()
        self._wake_up()

    async def _heard_cancel(self, payload: str) -> None:
        """A follower cancelled a job in the store: take it out of the queue, or stop it on its server."""
        job_id, _, by = payload.partition(":")
        if self.leading and self._knows(int(job_id)) and int(job_id) not in self._cancelled:
            await self._stop(int(job_id), int(by or 0))

    async def _heard_switches(self, payload: str) -> None:
        await self._load_switches()

    async def _catch_up(self) -> None:
        """The bus was away, so notices may be lost: queue the waiting jobs not yet queued, and drop
        queued ones that were cancelled meanwhile."""
        if not self.leading:
            return
        async with self._taking:
            stored = {job.id: job for job in await self._store.jobs_in(("waiting",))}
            for job in list(self.waiting_jobs()):
                if job.id not in stored and job.id not in self._cancelled:
                    current = await self._store.get_job(job.id)
                    if current is not None and current.state == "cancelled":
                        self._dequeue(job)
                        await self._notify_cancelled(job)
            for job in stored.values():
                if not self._knows(job.id):
                    self._enqueue(job)
        self._wake_up()
        log.debug("queue_caught_up", waiting=sum(1 for _ in self.waiting_jobs()))

    async def _catch_up_loop(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP)
            await self._catch_up()

    async def guild_waiting(self, guild_id: int) -> int:
        """The jobs this Discord server has waiting: the leader's queue, or the store's for a follower."""
        if self.leading:
            return sum(1 for job in self.waiting_jobs() if job.guild_id == guild_id)
        return sum(1 for job in await self._store.jobs_in(("waiting",)) if job.guild_id == guild_id)

