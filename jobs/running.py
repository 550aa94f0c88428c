"""Following a job on its server: handing it over, its events as they come (started, finished,
posted twice, cancelled during the POST), and what happens when the server fails it: moved to
another server, run once more, or failed in words. A part of scheduler.Scheduler (it uses the
scheduler's store, notifier and bookkeeping), kept apart so the scheduler itself is about taking
and dispatching jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from backends.pool import Backend
from backends.runner import Engine, JobResult
from comfy.types import ComfyError, Event, Finished, Interrupted, PromptLost, Queued, Resubmitted, Started, Unreachable
from jobs import kinds, wording
from jobs.endings import EXPECTED_ERRORS
from store import ACTIVE_STATES, Job

log = structlog.get_logger("jobs.scheduler")  # one logger for all the scheduler's parts

HANDOVERS = 3  # a job the servers lost this often without a result fails in words, started or not
SERVER_FAILURES = (PromptLost, Unreachable)  # the server failed us, not the job


@dataclass
class Flight:
    """A job handed to a server: its prompt id is set just before the POST."""

    job: Job
    backend: Backend
    cancel_sent: bool = False
    finished: bool = False  # ComfyUI is done with it: only the download and delivery are left
    began: float = field(default_factory=time.monotonic)


class Running:
    """The methods of scheduler.Scheduler that run jobs on servers."""

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

    async def _attempt(self, flight: Flight, attach: bool) -> None:
        backend = flight.backend
        job = flight.job
        jlog = log.bind(job_id=job.id, kind=job.kind, server=backend.label)
        started = job.state == "running"
        try:
            if not attach:
                job = flight.job = await self._store.update_job(
                    job.id, only_from=("waiting",), state="submitted", server=backend.name,
                    prompt_id=f"{self._prefix}{job.id}-{uuid.uuid4().hex[:8]}")
                if job.state == "cancelled":  # by another process, a moment ago
                    self._cancelled.setdefault(job.id, job.user_id)
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
                        flight.job = await self._store.update_job(job.id, only_from=("submitted",), state="running")
                    if flight.job.state == "cancelled" and not flight.cancel_sent:  # by another process
                        self._cancelled.setdefault(job.id, job.user_id)
                        flight.cancel_sent = True
                        await backend.client.cancel(job.prompt_id)
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
        source = None
        if kind.image_input:  # another process may have made the inputs: with OUTPUT_STORE, fetched from the bucket
            for name in kinds.files(job.request):
                await self._outputs.local(name)
            source = self._settings.outputs_dir / job.request["input"]
        options = {"on_event": on_event, "prompt_id": job.prompt_id, "attach": attach}
        if kind.load is not None:  # what the kind reads from the store to run (someone's own workflow)
            options.update(await kind.load(self._store, job.request))
        return await kind.run(engine, job.request, source, options)

    async def _retry(self, job: Job, backend: Backend, started: bool, error: ComfyError, jlog: Any) -> None:
        """The server died under the job: before it started, move it; mid-run, run it once more, elsewhere.
        A moved job is queued again before anything is awaited, so jobs moved off one server keep their
        order whatever order their failures are handled in."""
        if job.id in self._cancelled:
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
        moved = dataclasses.replace(job, state="waiting", attempts=attempts, handovers=handovers, prompt_id=None,
                                    server=None)
        self._enqueue(moved, front=True)
        self._wake_up()
        stored = await self._store.update_job(job.id, only_from=ACTIVE_STATES, state="waiting", attempts=attempts,
                                              handovers=handovers, prompt_id=None, server=None)
        if stored.state not in ("waiting", "submitted"):  # it ended meanwhile (cancelled): nothing to move
            jlog.info("job_not_moved", state=stored.state, error=str(error))
            if self._dequeue(moved) and stored.state == "cancelled":  # not already told by cancel()
                await self._notify_cancelled(job)

    async def _end_badly(self, flight: Flight, reason: str, jlog: Any) -> None:
        self._flights.pop(flight.job.id, None)
        if flight.job.id in self._cancelled:
            await self._notify_cancelled(flight.job)
        else:
            await self._fail(flight.job, reason)

    async def _tell_starting(self, job: Job) -> None:
        try:
            await self._notifier.job_starting(job)
        except Exception:
            log.exception("start_not_shown", job_id=job.id)
