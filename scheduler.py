"""The job queue: every job is written to the store before it runs, and each state change after.

A job runs on the engine, becomes a generation in the store, and is handed to
the notifier to deliver. The scheduler knows Discord only as ids; everything a
user sees goes through the `Notifier` the bot implements.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import structlog

from comfy_types import ComfyError, Event, Queued, Started
from image_gen import ImageRequest, RequestError, text_to_image, upscale
from outputs import OutputError
from runner import Engine, JobResult
from store import ACTIVE_STATES, Generation, Job, Store
from video_gen import animate
from workflows import WorkflowError

log = structlog.get_logger(__name__)

EXPECTED_ERRORS = (ComfyError, RequestError, WorkflowError, OutputError)
IMAGE_FIELDS = {f.name for f in dataclasses.fields(ImageRequest)}
SHOWN = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "cfg", "batch", "frames", "fps")


class Notifier(Protocol):
    """How jobs reach people; implemented by the bot."""

    async def job_progress(self, job: Job, event: Event) -> None: ...

    async def deliver(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int, list[str]]:
        """Post the result; returns the message id and the attachment URLs, in file order."""
        ...

    async def job_failed(self, job: Job, reason: str) -> None: ...


class Scheduler:
    def __init__(self, store: Store, engine: Engine, notifier: Notifier) -> None:
        self._store = store
        self._engine = engine
        self._notifier = notifier
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def submit(self, job: Job) -> Job:
        """Persist a new job, then start it. Returns the job with its id."""
        job = await self._store.add_job(job)
        log.info("job_accepted", job_id=job.id, kind=job.kind, user_id=job.user_id)
        self._start(job)
        return job

    async def resume(self) -> int:
        """At start: pick up every job a previous process left unfinished."""
        jobs = await self._store.jobs_in(ACTIVE_STATES)
        for job in jobs:
            log.info("job_resumed", job_id=job.id, state=job.state)
            self._start(job)
        return len(jobs)

    def active(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Stop running jobs; they stay active in the store and resume at the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job), name=f"job {job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    async def _run(self, job: Job) -> None:
        jlog = log.bind(job_id=job.id, kind=job.kind, user_id=job.user_id)
        try:
            if job.state == "delivering" and job.generation_id is not None:
                generation = await self._store.get_generation(job.generation_id)
            else:
                generation = await self._produce(job, jlog)
            await self._deliver(job, generation, jlog)
        except EXPECTED_ERRORS as error:
            await self._fail(job, str(error), jlog)
        except asyncio.CancelledError:
            raise
        except Exception:
            jlog.exception("job_crashed")
            await self._fail(job, "something went wrong inside the bot; the operator can find it in the log.", jlog)
        finally:
            self._release_input(job)

    async def _produce(self, job: Job, jlog: Any) -> Generation:
        await self._store.update_job(job.id, state="submitted")

        async def on_event(event: Event) -> None:
            if isinstance(event, Started):
                await self._store.update_job(job.id, state="running")
            if not isinstance(event, Queued) or event.position > 0:
                await self._notifier.job_progress(job, event)

        result = await self._execute(job, on_event)
        generation = await self._store.add_generation(Generation(
            id=None, job_id=job.id, kind=job.kind, user_id=job.user_id, guild_id=job.guild_id,
            channel_id=job.channel_id, params=self._shown(job, result),
            files=[path.name for path in result.files], server=result.server, duration=result.timings["total"]))
        await self._store.update_job(job.id, state="delivering", generation_id=generation.id,
                                     prompt_id=result.prompt_id, server=result.server)
        jlog.info("job_produced", generation_id=generation.id, files=len(result.files))
        return generation

    async def _execute(self, job: Job, on_event: Any) -> JobResult:
        request = job.request
        if job.kind == "txt2img":
            fields = {key: value for key, value in request.items() if key in IMAGE_FIELDS}
            return await text_to_image(self._engine, ImageRequest(**fields), on_event=on_event)
        source = self._engine.settings.outputs_dir / request["input"]
        if job.kind == "upscale":
            return await upscale(self._engine, source, int(request["factor"]), on_event=on_event)
        if job.kind == "animate":
            return await animate(self._engine, source, on_event=on_event)
        raise RequestError(f"unknown job kind {job.kind!r}")

    def _shown(self, job: Job, result: JobResult) -> dict[str, Any]:
        """What the result embed shows: the values actually used, plus the preset's name."""
        shown = {key: result.params[key] for key in SHOWN if key in result.params}
        for key in ("model", "factor"):
            if key in job.request:
                shown[key] = job.request[key]
        return shown

    async def _deliver(self, job: Job, generation: Generation, jlog: Any) -> None:
        outputs = self._engine.outputs
        files = [self._engine.settings.outputs_dir / name for name in generation.files]
        try:
            message_id, urls = await self._notifier.deliver(job, generation, files)
        finally:
            for path in files:
                outputs.release(path)
        await self._store.set_generation_message(generation.id, message_id, urls)
        await self._store.update_job(job.id, state="done")
        jlog.info("job_delivered", generation_id=generation.id, message_id=message_id)

    async def _fail(self, job: Job, reason: str, jlog: Any) -> None:
        jlog.warning("job_failed", reason=reason)
        await self._store.update_job(job.id, state="failed", error=reason)
        try:
            await self._notifier.job_failed(job, reason)
        except Exception:
            jlog.exception("failure_not_shown")

    def _release_input(self, job: Job) -> None:
        if "input" in job.request:
            self._engine.outputs.release(self._engine.settings.outputs_dir / job.request["input"])


def pin_all(outputs: Any, directory: Path, names: Iterable[str]) -> None:
    """After a restart, keep the files of undelivered results out of the cap's reach."""
    for name in names:
        try:
            outputs.pin(directory / name)
        except OutputError:
            log.warning("pending_file_missing", file=name)
