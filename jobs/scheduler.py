"""The job queue over a pool of ComfyUI servers: fair, capped per server, cancellable, crash-proof.

Every job is in the store, and each state change is written before it is acted
on (waiting -> submitted -> running -> delivering -> done, or failed/cancelled).
Waiting jobs are taken round-robin across users, a priority lane first. Each
server holds at most `capacity` of our prompts (one running and one queued keeps
a GPU busy without hoarding work). After a restart, waiting jobs continue in
order and submitted ones are found again on their server by prompt id, so none
is lost and none runs twice. The scheduler knows Discord only as ids: people are
reached through the `Notifier`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from jobs import kinds
import tasks
from jobs.fairqueue import FairQueue
from jobs import wording
from comfy.types import ComfyError, Event, Finished, Interrupted, PromptLost, Queued, Resubmitted, Started, Unreachable
from config import Settings
from jobs.eta import Estimates
from metrics import Metrics
from image_gen import RequestError
from results.folder import OutputError, OutputFolder
from backends.pool import Backend, Pool
from jobs.queue_view import QueueView
from backends.runner import Engine, JobResult
from store import ACTIVE_STATES, Generation, Job, LimitReached, Store
from comfy.workflows import WorkflowError

log = structlog.get_logger(__name__)

EXPECTED_ERRORS = (ComfyError, RequestError, WorkflowError, OutputError)
HANDOVERS = 3  # a job the servers lost this often without a result fails in words, started or not
SERVER_FAILURES = (PromptLost, Unreachable)  # the server failed us, not the job
SHOWN = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "cfg", "strength", "batch", "frames", "fps",
         "control_strength")
POST_FAILED = "Discord refused the result. Try again; the operator can see the details in the bot's log."


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

    async def job_cancelled(self, job: Job, by_user_id: int) -> None: ...


@dataclass
class Flight:
    """A job handed to a server: its prompt id is set just before the POST."""

    job: Job
    backend: Backend
    cancel_sent: bool = False
    finished: bool = False  # ComfyUI is done with it: only the download and delivery are left
    began: float = field(default_factory=time.monotonic)


class Scheduler(QueueView):
    def __init__(self, store: Store, backends: list[Backend], outputs: OutputFolder, settings: Settings,
                 notifier: Notifier, *, instance: str = "", metrics: Metrics | None = None) -> None:
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

    # lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Take up what a previous process left, then start dispatching. Returns the jobs resumed."""
        self.estimates.learn_all(await self._store.gpu_history())
        jobs = await self._store.jobs_in(ACTIVE_STATES)
        self._pin([*await self._store.pending_files(), *(name for job in jobs for name in kinds.files(job.request))])
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
        self._loops = [tasks.start("dispatch", self._dispatch_loop), tasks.start("pool-watch", self.pool.watch),
                       tasks.start("positions", self._position_loop)]
        self._wake_up()
        return len(jobs)

    async def close(self) -> None:
        """Stop; active jobs stay in the store and are taken up by the next start."""
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        self._check_limits(job)
        kind = kinds.get(job.kind)
        request = kind.prepare(self._settings, dict(job.request))
        models = kind.models(self._settings, request)
        reasons = self.pool.unservable(kind.workflow_for(request), models)
        if reasons:
            log.warning("job_unservable", kind=job.kind, user_id=job.user_id, reasons=reasons)
            raise RequestError(wording.unservable(models, reasons))
        limit = self._settings.jobs_per_user
        try:  # counted and inserted in one step: a burst of clicks cannot slip past the limit
            job = await self._store.add_job(dataclasses.replace(job, request=request), active_limit=limit)
        except LimitReached as error:
            raise QueueFull(wording.too_many_jobs(error.count, limit)) from None
        log.info("job_accepted", job_id=job.id, kind=job.kind, user_id=job.user_id, priority=job.priority)
        self._enqueue(job)
        if not self.pool.any_healthy():
            self.pool.poke()
        self._wake_up()
        return job

    def _check_limits(self, job: Job) -> None:
        if job.guild_id is not None:
            in_guild = sum(1 for queued in self.waiting_jobs() if queued.guild_id == job.guild_id)
            if in_guild >= self._settings.waiting_per_guild:
                raise QueueFull(f"This server already has {wording.plural(in_guild, 'job')} waiting. Try again in a while.")

    def _enqueue(self, job: Job, *, front: bool = False) -> None:
        self._queue.add(job, front=front)

    def _dequeue(self, job: Job) -> bool:
        self._stalled.pop(job.id, None)
        return self._queue.remove(job)

    def _backend_of(self, label: str) -> Backend | None:
        return next((b for b in self.pool.backends if b.label == label), None)

    def _price(self, label: str) -> float:
        """The price per GPU-hour of the server a result names (SERVER_PRICES, by URL); 0 when none is set."""
        backend = self._backend_of(label)
        prices = {url.rstrip("/"): price for url, price in self._settings.server_prices.items()}
        return prices.get(backend.name, 0.0) if backend is not None else 0.0

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

    def _launch(self, job: Job, backend: Backend, *, attach: bool) -> None:
        self._shown.pop(job.id, None)
        backend.jobs.add(job.id)
        flight = Flight(job, backend)
        self._flights[job.id] = flight
        self._spawn(self._attempt(flight, attach))

    def _free(self, flight: Flight) -> None:
        """The prompt left the server: its slot can take the next job at once."""
        if flight.job.id in flight.backend.jobs:
            flight.backend.jobs.discard(flight.job.id)
            self._wake_up()

    # running -----------------------------------------------------------------------

    async def _attempt(self, flight: Flight, attach: bool) -> None:
        backend = flight.backend
        job = flight.job
        jlog = log.bind(job_id=job.id, kind=job.kind, server=backend.label)
        started = job.state == "running"
        try:
            if not attach:
                job = flight.job = await self._store.update_job(
                    job.id, state="submitted", server=backend.name, prompt_id=f"{self._prefix}{job.id}-{uuid.uuid4().hex[:8]}")
            if job.id in self._cancelled:
                raise Interrupted("Cancelled before it started.")
            if not started:
                await self._tell_starting(job)

            async def on_event(event: Event) -> None:
                nonlocal started
                if isinstance(event, Resubmitted):  # posted twice: it may run twice, so one retry fewer
                    flight.job = await self._store.update_job(job.id, attempts=flight.job.attempts + 1)
                    return
                if job.id in self._cancelled and not flight.cancel_sent:  # cancelled during the POST
                    flight.cancel_sent = True
                    await backend.client.cancel(job.prompt_id)
                if isinstance(event, Started) and not started:
                    started = True
                    if job.id not in self._cancelled:
                        flight.job = await self._store.update_job(job.id, state="running")
                if isinstance(event, Finished):
                    flight.finished = True
                    self._free(flight)
                if not isinstance(event, Queued):
                    await self._notifier.job_progress(job, event)

            result = await self._execute(job, backend.engine, on_event, attach)
            backend.last_model = next(iter(self._models(job).values()), None)
        except SERVER_FAILURES as error:
            self.metrics.error(error)
            self._free(flight)
            self._flights.pop(job.id, None)
            if job.id in self._cancelled:
                await self._notify_cancelled(job)
            else:
                await self._retry(flight.job, backend, started, error, jlog)
            return
        except EXPECTED_ERRORS as error:
            jlog.warning("job_error", error=str(error), error_type=type(error).__name__)
            self.metrics.error(error)
            await self._end_badly(flight, wording.failure(error), jlog)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            jlog.exception("job_crashed")
            await self._end_badly(flight, wording.failure(error), jlog)
            return
        finally:
            self._free(flight)
        self._flights.pop(job.id, None)
        await self._finish(job, result, jlog)

    async def _execute(self, job: Job, engine: Engine, on_event: Any, attach: bool) -> JobResult:
        kind = kinds.get(job.kind)
        source = self._settings.outputs_dir / job.request["input"] if kind.image_input else None
        options = {"on_event": on_event, "prompt_id": job.prompt_id, "attach": attach}
        return await kind.run(engine, job.request, source, options)

    async def _retry(self, job: Job, backend: Backend, started: bool, error: ComfyError, jlog: Any) -> None:
        """The server died under the job: before it started, move it; mid-run, run it once more, elsewhere."""
        current = await self._store.get_job(job.id)
        if current is None or current.state not in ACTIVE_STATES:  # it ended meanwhile: nothing to move
            jlog.info("job_not_moved", state=current.state if current else None, error=str(error))
            if current is not None and current.state == "cancelled":
                await self._notify_cancelled(job)
            return
        attempts = job.attempts + (1 if started else 0)
        handovers = job.handovers + 1  # every hand-over counts, so a server that keeps losing it cannot loop
        if attempts > 1:
            jlog.warning("job_failed_twice", error=str(error))
            await self._fail(job, "the server failed twice while running it. Try again in a few minutes.")
            return
        if handovers >= HANDOVERS:
            jlog.warning("job_lost_too_often", error=str(error), handovers=handovers)
            await self._fail(job, f"the servers lost it {handovers} times before it could finish, so the bot "
                                  "stopped trying. Try again in a few minutes.")
            return
        jlog.warning("job_moved", error=str(error), started=started, attempts=attempts, handovers=handovers)
        self._avoid.setdefault(job.id, set()).add(backend.name)
        job = await self._store.update_job(job.id, only_from=ACTIVE_STATES, state="waiting", attempts=attempts,
                                           handovers=handovers, prompt_id=None, server=None)
        if job.state != "waiting":  # cancelled while it was being moved
            await self._notify_cancelled(job)
            return
        self._enqueue(job, front=True)
        self._wake_up()

    async def _end_badly(self, flight: Flight, reason: str, jlog: Any) -> None:
        self._flights.pop(flight.job.id, None)
        if flight.job.id in self._cancelled:
            await self._notify_cancelled(flight.job)
        else:
            await self._fail(flight.job, reason)

    async def _finish(self, job: Job, result: JobResult, jlog: Any) -> None:
        try:  # GPU time as ComfyUI's events measured it (execution start to success), and what it cost
            gpu = result.timings.get("running", 0.0)
            backend = self._backend_of(result.server)
            if backend is not None and backend.remote:  # RunPod bills its own seconds, rounded up
                gpu = backend.client.billed.pop(result.prompt_id, gpu)
                cost = gpu * backend.client.endpoint.price_per_second
            else:
                cost = gpu / 3600 * self._price(result.server)
            await self._store.record_cost(job.id, gpu, cost)
            self.metrics.gpu(result.server, gpu, cost)
            if backend is not None:
                self.estimates.learn(backend.name, job.kind, job.request, gpu)
            generation = await self._store.add_generation(Generation(
                id=None, job_id=job.id, kind=job.kind, user_id=job.user_id, guild_id=job.guild_id,
                channel_id=kinds.result_channel(job.request, job.channel_id), params=await self._shown_params(job, result),
                files=[path.name for path in result.files], server=result.server, duration=result.timings["total"]))
            job = await self._store.update_job(job.id, only_from=ACTIVE_STATES, state="delivering",
                                               generation_id=generation.id)
            if job.state != "delivering":  # cancelled, and it finished anyway: kept in history, never posted
                await self._keep_cancelled(job, generation, jlog)
                return
            await self._deliver(job, generation, jlog)
        except EXPECTED_ERRORS as error:
            jlog.warning("job_error", error=str(error), error_type=type(error).__name__)
            await self._fail(job, wording.failure(error))
        except Exception:  # Discord refused the post: say so rather than leave the job hanging
            jlog.exception("delivery_failed")
            await self._fail(job, POST_FAILED)

    async def _keep_cancelled(self, job: Job, generation: Generation, jlog: Any) -> None:
        """A result of a job the person was told is cancelled: in their history, not posted."""
        await self._store.update_job(job.id, generation_id=generation.id)
        for name in generation.files:
            self._outputs.release(self._settings.outputs_dir / name)
        jlog.info("cancelled_result_kept", generation_id=generation.id, state=job.state)
        if job.state == "cancelled":
            await self._notify_cancelled(job)

    async def _shown_params(self, job: Job, result: JobResult) -> dict[str, Any]:
        """What the result embed shows: the values actually used, the preset's name, how long the job
        waited and ran, and for an upscale or animation what it came from (its message, prompt, size)."""
        shown = {key: result.params[key] for key in SHOWN if key in result.params}
        for key in kinds.get(job.kind).shown:
            if key in job.request:
                shown[key] = job.request[key]
        ran = result.timings["running"] + result.timings["download"]
        shown["ran"], shown["waited"] = round(ran, 1), round(max(0.0, time.time() - job.created_at - ran), 1)
        source = await self._store.get_generation(job.source_generation_id) if job.source_generation_id else None
        if source is not None:
            shown["source"] = {"guild_id": source.guild_id, "channel_id": source.channel_id,
                               "message_id": source.message_id}
            shown.setdefault("prompt", source.params.get("prompt"))
        size = source.params if source is not None and source.params.get("width") else job.request
        if shown.get("factor") and size.get("width") and size.get("height"):
            shown["width"], shown["height"] = size["width"] * shown["factor"], size["height"] * shown["factor"]
        return shown

    async def _deliver_stored(self, job: Job) -> None:
        generation = await self._store.get_generation(job.generation_id) if job.generation_id else None
        if generation is None:
            await self._fail(job, "the result was lost before it could be posted. Try again.")
            return
        try:
            await self._deliver(job, generation, log.bind(job_id=job.id))
        except EXPECTED_ERRORS as error:
            log.warning("job_error", job_id=job.id, error=str(error), error_type=type(error).__name__)
            await self._fail(job, wording.failure(error))
        except Exception:
            log.exception("delivery_failed", job_id=job.id)
            await self._fail(job, POST_FAILED)

    async def _deliver(self, job: Job, generation: Generation, jlog: Any) -> None:
        files = [self._settings.outputs_dir / name for name in generation.files]
        began = time.monotonic()
        try:
            message_id, urls = await self._notifier.deliver(job, generation, files)
        finally:
            for path in files:
                self._outputs.release(path)
            self._release_input(job)
        await self._store.set_generation_message(generation.id, message_id, urls)
        await self._store.update_job(job.id, state="done")
        self.metrics.job_finished(job.kind, "done", waited=generation.params.get("waited"),
                                  ran=generation.params.get("ran"), delivery=time.monotonic() - began)
        self._forget(job.id)
        jlog.info("job_delivered", generation_id=generation.id, message_id=message_id)

    async def _fail(self, job: Job, reason: str) -> None:
        self._release_input(job)
        self._forget(job.id)
        job = await self._store.update_job(job.id, only_from=ACTIVE_STATES, state="failed", error=reason)
        if job.state != "failed" or job.error != reason:  # cancelled meanwhile: the person was told that
            log.info("job_not_failed", job_id=job.id, state=job.state, reason=reason)
            return
        log.warning("job_failed", job_id=job.id, reason=reason)
        self.metrics.job_finished(job.kind, "failed", waited=None, ran=None)
        try:
            await self._notifier.job_failed(job, reason)
        except Exception:
            log.exception("failure_not_shown", job_id=job.id)

    def _release_input(self, job: Job) -> None:
        """The job no longer needs its input files: drop their pins, once (pins are counted)."""
        if job.id not in self._inputs_released:
            self._inputs_released.add(job.id)
            for name in kinds.files(job.request):
                self._outputs.release(self._settings.outputs_dir / name)

    def _forget(self, job_id: int) -> None:
        self._inputs_released.discard(job_id)
        self._stalled.pop(job_id, None)
        self._avoid.pop(job_id, None)
        self._shown.pop(job_id, None)
        self._cancelled.pop(job_id, None)

    # cancelling -------------------------------------------------------------------

    async def cancel(self, job_id: int, by_user_id: int, by: str | None = None) -> str:
        """Cancel a job in any state before delivery. Returns what happened, in words. `by` names who
        cancelled it for the job's stored error (default: the Discord user, as a mention)."""
        job = await self._store.get_job(job_id)
        flight = self._flights.get(job_id)
        if job is not None and job.state == "cancelled":
            return "This job was already cancelled."
        if job is None or job.state not in ("waiting", "submitted", "running") or (flight and flight.finished):
            return "This job has already finished."
        job = await self._store.update_job(job_id, only_from=("waiting", "submitted", "running"), state="cancelled",
                                           error=f"cancelled by {by or f'<@{by_user_id}>'}")
        if job.state != "cancelled":  # it finished while this was asked
            return "This job has already finished."
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

    async def _tell_starting(self, job: Job) -> None:
        try:
            await self._notifier.job_starting(job)
        except Exception:
            log.exception("start_not_shown", job_id=job.id)

    async def _notify_cancelled(self, job: Job) -> None:
        by = self._cancelled.get(job.id, job.user_id)
        log.info("job_cancelled", job_id=job.id, by=by)
        self.metrics.job_finished(job.kind, "cancelled", waited=None, ran=None)
        self._release_input(job)
        self._forget(job.id)
        try:
            await self._notifier.job_cancelled(job, by)
        except Exception:
            log.exception("cancel_not_shown", job_id=job.id)

    async def _clean_server(self, backend: Backend) -> None:
        """A server (re)joined the pool: remove prompts of ours it holds that no job follows any more."""
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
