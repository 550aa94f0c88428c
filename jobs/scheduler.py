"""The job queue over a pool of ComfyUI servers: fair, capped per server, cancellable, crash-proof.

Every job is in the store, and each state change is written before it is acted
on (waiting -> submitted -> running -> delivering -> done, or failed/cancelled).
Waiting jobs are taken round-robin across users, a priority lane first. Each
server holds at most `capacity` of our prompts (one running and one queued keeps
a GPU busy without hoarding work). After a restart, waiting jobs continue in
order and submitted ones are found again on their server by prompt id, so none
is lost and none runs twice. The scheduler knows Discord only as ids: people are
reached through the `Notifier`.

`Scheduler` is the one object the bot uses. This module takes, dispatches and cancels jobs; its
other parts are running.py (a job on its server), endings.py (a job's result, failure or
cancellation) and queue_view.py (what people see of the queue).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import structlog

from backends.pool import Backend, Pool
from comfy.types import ComfyError, Event
from config import Settings
from image_gen import RequestError
from jobs import kinds, wording
from jobs.endings import Endings
from jobs.eta import Estimates
from jobs.fairqueue import FairQueue
from jobs.leader import Connect, Leadership
from jobs.queue_view import QueueView
from jobs.running import Flight, Running
from jobs.stages import Stages
from jobs.credits import Credits
from metrics import Metrics
from results.folder import OutputError, OutputFolder
from store import Generation, Job, LimitReached, Store

log = structlog.get_logger(__name__)


class QueueFull(Exception):
    """A limit on waiting jobs was reached; the message says which."""


class Notifier(Protocol):
    """How jobs reach people; implemented by the bot."""

    async def job_queued(self, job: Job, position: int, giving_up_in: float | None = None,
                         eta: float | None = None) -> None:
        """Waiting in the bot's queue, `position` jobs ahead; `giving_up_in` seconds while no server answers;
        `eta`: the seconds the bot expects until the result (None when it cannot tell)."""
        ...

    async def job_starting(self, job: Job) -> None:
        """Handed to ComfyUI: next on the GPU."""
        ...

    async def job_progress(self, job: Job, event: Event) -> None: ...

    async def deliver(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int, list[str]]:
        """Post the result; returns the message id and the attachment URLs, in file order."""
        ...

    async def job_failed(self, job: Job, reason: str) -> None: ...

    async def job_advanced(self, job: Job, following: Job) -> None:
        """A pipeline's step handed its result to the next step, `following`, which shows on the same message."""
        ...

    async def job_cancelled(self, job: Job, by_user_id: int) -> None: ...


class Scheduler(Leadership, Running, Endings, Stages, Credits, QueueView):
    """`cluster` (cluster.Cluster) and `connect` (leader.Connect) for several processes on one database."""

    def __init__(self, store: Store, backends: list[Backend], outputs: OutputFolder, settings: Settings,
                 notifier: Notifier, *, instance: str = "", metrics: Metrics | None = None, cluster: Any = None,
                 connect: Connect | None = None) -> None:
        self._store = store
        self.metrics = metrics if metrics is not None else Metrics()
        self.estimates = Estimates(settings.default_steps)  # how long jobs take, learned from finished ones
        self._outputs = outputs
        self._settings = settings
        self._notifier = notifier
        self._prefix = f"cf{instance[:8]}-"  # our prompt ids on shared servers: cf<instance>-<job>-<random>
        self.pool = Pool(backends, settings.server_grace, self._wake_up, self._clean_server)
        self._queue = FairQueue()
        self._flights: dict[int, Flight] = {}
        self._cancelled: dict[int, int] = {}  # job id -> who cancelled it
        self._inputs_released: set[int] = set()
        self._avoid: dict[int, set[str]] = {}  # job id -> servers it failed on
        self._shown: dict[int, tuple[int, float | None]] = {}  # job id -> (position, countdown) last shown
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stalled: dict[int, float] = {}  # job id -> since when no healthy server could take it
        self.paused: set[str] = set()  # guild ids (as text) and "all" whose queues admins paused (the store has them)
        self._waker: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._cluster, self._connect = cluster, connect
        self._taking = asyncio.Lock()  # the queue is filled from the store by one step at a time

    def _pin(self, names: list[str]) -> None:
        """After a restart, keep files still to be used or delivered out of the cap's reach."""
        for name in names:
            try:
                self._outputs.pin(self._settings.outputs_dir / name)
            except OutputError:
                log.warning("pending_file_missing", file=name)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _wake_up(self) -> None:
        self._wake.set()

    # accepting -----------------------------------------------------------------

    async def submit(self, job: Job) -> Job:
        """Check, persist and queue a new job. Raises QueueFull or RequestError with a sentence."""
        await self._check_limits(job)
        kind = kinds.get(job.kind)
        request = kind.prepare(self._settings, dict(job.request))
        models = kind.models(self._settings, request)
        reasons = self.pool.unservable(kind.workflow_for(request), models)
        if reasons:
            log.warning("job_unservable", kind=job.kind, user_id=job.user_id, reasons=reasons)
            raise RequestError(wording.unservable(models, reasons))
        if self.shared:  # another process may run it: its input images go where every process finds them
            try:
                for name in kinds.files(request):
                    await self._outputs.keep(self._settings.outputs_dir / name)
            except OutputError as error:
                raise RequestError(f"the image could not be stored for the servers ({error})") from None
        limit = self._settings.jobs_per_user
        try:  # counted and inserted in one step: a burst of clicks cannot slip past the limit
            job = await self._store.add_job(dataclasses.replace(job, request=request), active_limit=limit)
        except LimitReached as error:
            raise QueueFull(wording.too_many_jobs(error.count, limit)) from None
        job = await self._charge(job)  # with CREDITS_ENABLED: its price reserved, or refused in words
        log.info("job_accepted", job_id=job.id, kind=job.kind, user_id=job.user_id, priority=job.priority)
        if not self.leading:  # the leader queues it
            await self.tell_leader("job", str(job.id))
            return job
        self._enqueue(job)
        if not self.pool.any_healthy():
            self.pool.poke()
        self._wake_up()
        return job

    async def _check_limits(self, job: Job) -> None:
        if job.guild_id is not None:
            in_guild = await self.guild_waiting(job.guild_id)
            if in_guild >= self._settings.waiting_per_guild:
                raise QueueFull(f"This server already has {wording.plural(in_guild, 'job')} waiting. Try again in a while.")

    def _enqueue(self, job: Job, *, front: bool = False) -> None:
        self._queue.add(job, front=front)

    def _dequeue(self, job: Job) -> bool:
        self._stalled.pop(job.id, None)
        return self._queue.remove(job)


    def set_paused(self, scopes: set[str]) -> None:
        """The queues admins paused; jobs of a resumed server are taken at once."""
        self.paused = set(scopes)
        self._wake_up()

    def running_jobs(self) -> list[Job]:
        """The jobs handed to a server and not yet ended."""
        return [flight.job for flight in self._flights.values()]

    def waiting_jobs(self) -> Iterator[Job]:
        """Waiting jobs in the order they will be taken (fairqueue.py)."""
        return iter(self._queue)

    def position(self, job_id: int) -> int | None:
        return self._queue.position(job_id)

    # dispatching -----------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (pick := self._pick()) is not None:
                job, backend = pick
                self._dequeue(job)
                self._queue.served(job.user_id)
                self._launch(job, backend, attach=False)
            await self._expire_unservable()
            self._measure()

    def _pick(self) -> tuple[Job, Backend] | None:
        if not any(backend.free() for backend in self.pool.backends):
            return None
        waiting = list(self.waiting_jobs())
        starts = self._starts(waiting, time.monotonic(), local=True) if self._settings.runpod_endpoints else []
        for position, job in enumerate(waiting):
            if self.paused & {"all", str(job.guild_id)}:  # an admin paused this server's queue, or every one
                continue
            start = starts[position] if starts else None
            backend = self.pool.choose(self._workflow(job), self._models(job), self._avoid.get(job.id, set()),
                                       paid=self._may_pay(job),
                                       overflow=start is not None and start > self._settings.runpod_overflow_after)
            if backend is not None:
                return job, backend
        return None

    def _may_pay(self, job: Job) -> bool:
        """Whether the job's Discord server may use paid RunPod capacity (RUNPOD_GUILDS; empty: all)."""
        return not self._settings.runpod_guilds or job.guild_id in self._settings.runpod_guilds

    def _models(self, job: Job) -> dict[str, Any]:
        return kinds.get(job.kind).models(self._settings, job.request)

    def _workflow(self, job: Job) -> str:
        """The workflow that runs the job, which the chosen server must be able to run."""
        return kinds.get(job.kind).workflow_for(job.request)

    async def _expire_unservable(self) -> None:
        """Waiting jobs fail in words, not silence: when no server can run them, or none able to is
        reachable for `server_grace` (counted from when the job lost its last server, not from when
        it was queued, so a brief outage fails nobody) AND a connection attempt begun after that has
        failed too: a server that came back meanwhile is used, not reported as down."""
        now = time.monotonic()
        grace = self._settings.server_grace
        verdicts: dict[tuple[Any, ...], tuple[list[str] | None, bool]] = {}  # jobs alike share one answer
        for job in list(self.waiting_jobs()):
            models, workflow = self._models(job), self._workflow(job)
            paid = self._may_pay(job)
            key = (workflow, paid, *models.values())
            if key not in verdicts:
                verdicts[key] = (self.pool.unservable(workflow, models),
                                 self.pool.can_serve(workflow, models, paid=paid))
            reasons, served = verdicts[key]
            if reasons:
                log.warning("job_unservable", job_id=job.id, reasons=reasons)
                await self._fail_waiting(job, wording.unservable(models, reasons))
            elif served:
                self._stalled.pop(job.id, None)
            else:
                since = self._stalled.setdefault(job.id, now)
                if now - since > grace and self.pool.gave_up(since + grace):
                    log.warning("servers_unreachable", job_id=job.id, servers=self._unreachable())
                    await self._fail_waiting(job, wording.unreachable())
        self.pool.wanted = bool(self._stalled)  # the pool keeps trying the servers while jobs wait
        if self._stalled and (self._waker is None or self._waker.done()):
            self._waker = self._spawn(self._wake_later(min(1.0, grace / 2)))

    def _unreachable(self) -> str:
        labels = [backend.label for backend in self.pool.backends]
        return f"{labels[0]} is unreachable" if len(labels) == 1 else f"none of {', '.join(labels)} is reachable"

    async def _wake_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._wake_up()

    async def _fail_waiting(self, job: Job, reason: str) -> None:
        self._dequeue(job)
        await self._fail(job, reason)

    # cancelling -------------------------------------------------------------------

    async def cancel(self, job_id: int, by_user_id: int, by: str | None = None) -> str:
        """Cancel a job in any state before delivery. Returns what happened, in words. `by` names who
        cancelled it for the job's stored error (default: the Discord user, as a mention)."""
        job = await self.current_step(await self._store.get_job(job_id))  # a pipeline: the step running now
        job_id = job.id if job is not None else job_id
        flight = self._flights.get(job_id)
        if job is not None and job.state == "cancelled":
            return "This job was already cancelled."
        if job is None or job.state not in ("waiting", "submitted", "running") or (flight and flight.finished):
            return "This job has already finished."
        before = job
        job = await self._store.update_job(job_id, only_from=("waiting", "submitted", "running"), state="cancelled",
                                           error=f"cancelled by {by or f'<@{by_user_id}>'}")
        if job.state != "cancelled":  # it finished while this was asked
            return "This job has already finished."
        if not self.leading:  # the leader stops it, and tells its owner
            await self.tell_leader("cancel", f"{job_id}:{by_user_id}")
            backend = self.pool.get(before.server)
            where = "RunPod" if backend is not None and backend.remote else "ComfyUI"
            return {"waiting": "Cancelled: it left the queue before it started.",
                    "running": f"Stopping it: it was already running, and {where} is stopping it now."}.get(
                before.state, f"Cancelled: it was taken out of {where}'s queue before it started.")
        return await self._stop(job_id, by_user_id)

    async def _stop(self, job_id: int, by_user_id: int) -> str:
        """Take a job cancelled in the store out of the queue, or stop it on its server; what happened, in words."""
        flight = self._flights.get(job_id)
        self._cancelled[job_id] = by_user_id
        waiting = next((queued for queued in self.waiting_jobs() if queued.id == job_id), None)
        if waiting is not None:
            self._dequeue(waiting)
            await self._notify_cancelled(waiting)
            return "Cancelled: it left the queue before it started."
        outcome = "interrupted" if flight is not None and flight.job.state == "running" else "removed"
        if flight is None:  # it left its server a moment ago: the result, if any, is kept, not posted
            outcome = "gone"
        elif flight.job.prompt_id:
            flight.cancel_sent = True
            try:
                outcome = await flight.backend.client.cancel(flight.job.prompt_id)
            except ComfyError as error:
                log.warning("cancel_failed", job_id=job_id, error=str(error))
        where = "RunPod" if flight is not None and flight.backend.remote else "ComfyUI"
        return {"interrupted": f"Stopping it: it was already running, and {where} is stopping it now.",
                "gone": f"Cancelled: it had just finished on {where}, so its result will not be posted "
                        "(it stays in your /history)."}.get(
            outcome, f"Cancelled: it was taken out of {where}'s queue before it started.")

    async def _clean_server(self, backend: Backend) -> None:
        """A server (re)joined the pool: remove prompts of ours it holds that no job follows any more
        (only the leader follows jobs: a follower removes nothing)."""
        if not self.leading:
            return
        try:
            running, pending = await backend.client.queue()
        except ComfyError as error:
            log.warning("server_not_cleaned", server=backend.label, error=str(error))
            return
        followed = {(f.backend.name, f.job.prompt_id) for f in self._flights.values()}
        for prompt_id in running + pending:
            if prompt_id.startswith(self._prefix) and (backend.name, prompt_id) not in followed:
                log.warning("stale_prompt_removed", server=backend.label, prompt_id=prompt_id)
                try:
                    await backend.client.cancel(prompt_id)
                except ComfyError as error:
                    log.warning("stale_prompt_kept", prompt_id=prompt_id, error=str(error))
