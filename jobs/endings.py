"""How a job ends, once ComfyUI is done with it or it cannot go on: the GPU time and its cost recorded,
the generation stored, the result delivered (also after a restart), a failure said in words, a
result of a cancelled job kept in history but not posted, and a cancellation told. A part of
scheduler.Scheduler (it uses the scheduler's store, notifier, output folder and bookkeeping), kept
apart so the scheduler itself is about taking and dispatching jobs.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from backends.pool import Backend
from backends.runner import JobResult
from comfy.types import ComfyError
from comfy.workflows import WorkflowError
from image_gen import RequestError
from jobs import kinds, stages, wording
from jobs.pipelines import PipelineError
from results.folder import OutputError
from store import ACTIVE_STATES, Generation, Job

log = structlog.get_logger("jobs.scheduler")  # one logger for all the scheduler's parts

EXPECTED_ERRORS = (ComfyError, RequestError, WorkflowError, OutputError, PipelineError)  # told in words; anything else is a bug
SHOWN = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "cfg", "strength", "batch", "frames", "fps",
         "control_strength", "format")  # format: why a video is an MP4, WebP or GIF (video_gen.posted)
POST_FAILED = "Discord refused the result. Try again; the operator can see the details in the bot's log."


class Endings:
    """The methods of scheduler.Scheduler that end jobs."""

    moderation: Any = None  # jobs.moderation.Moderation when MODERATION_URL is set (the bot sets it)

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
            params = await self._shown_params(job, result)
            planned = stages.plan(job, job.kind, params, len(result.files), gpu, cost)  # a pipeline's step
            if planned is not None:
                params["pipeline"] = planned
            job, generation = await self._store.add_result(job.id, Generation(
                id=None, job_id=job.id, kind=job.kind, user_id=job.user_id, guild_id=job.guild_id,
                channel_id=kinds.result_channel(job.request, job.channel_id), params=params,
                files=[path.name for path in result.files], server=result.server, duration=result.timings["total"]),
                only_from=ACTIVE_STATES)
            if job.state != "delivering":  # cancelled, and it finished anyway: kept in history, never posted
                await self._keep_cancelled(job, generation, jlog)
                return
            if not await self._next_stage(job, generation, jlog):
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
        await self._settle(job, False)  # the person was told it is cancelled: refunded
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
            if not await self._next_stage(job, generation, log.bind(job_id=job.id)):  # a pipeline's step
                await self._deliver(job, generation, log.bind(job_id=job.id))
        except EXPECTED_ERRORS as error:
            log.warning("job_error", job_id=job.id, error=str(error), error_type=type(error).__name__)
            await self._fail(job, wording.failure(error))
        except Exception:
            log.exception("delivery_failed", job_id=job.id)
            await self._fail(job, POST_FAILED)

    async def _deliver(self, job: Job, generation: Generation, jlog: Any) -> None:
        began = time.monotonic()
        try:  # with OUTPUT_STORE, a result this process has no copy of (made by another) is fetched
            files = [await self._outputs.local(name, hold=True) for name in generation.files]
            if self.moderation is not None and await self.moderation.holds(job, generation, files, jlog):
                return  # held for a moderator (jobs/moderation.py), also after a restart: the job stays delivering
            message_id, urls = await self._notifier.deliver(job, generation, files)
        finally:
            for name in generation.files:
                self._outputs.release(self._settings.outputs_dir / name)
            self._release_input(job)
        await self._store.set_generation_message(generation.id, message_id, urls)
        await self._store.update_job(job.id, state="done")
        await self._settle(job, True)
        self.metrics.job_finished(job.kind, "done", waited=generation.params.get("waited"),
                                  ran=generation.params.get("ran"), delivery=time.monotonic() - began)
        self._forget(job.id)
        jlog.info("job_delivered", generation_id=generation.id, message_id=message_id)

    async def _fail(self, job: Job, reason: str) -> None:
        self._release_input(job)
        self._forget(job.id)
        job = await self._store.update_job(job.id, only_from=ACTIVE_STATES, state="failed", error=reason)
        await self._settle(job, False)  # failed, or cancelled meanwhile: refunded either way, once
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

    async def _notify_cancelled(self, job: Job) -> None:
        by = self._cancelled.get(job.id, job.user_id)
        log.info("job_cancelled", job_id=job.id, by=by)
        self.metrics.job_finished(job.kind, "cancelled", waited=None, ran=None)
        await self._settle(job, False)
        self._release_input(job)
        self._forget(job.id)
        try:
            await self._notifier.job_cancelled(job, by)
        except Exception:
            log.exception("cancel_not_shown", job_id=job.id)

    def _backend_of(self, label: str) -> Backend | None:
        return next((b for b in self.pool.backends if b.label == label), None)

    def _price(self, label: str) -> float:
        """The price per GPU-hour of the server a result names (SERVER_PRICES, by URL); 0 when none is set."""
        backend = self._backend_of(label)
        prices = {url.rstrip("/"): price for url, price in self._settings.server_prices.items()}
        return prices.get(backend.name, 0.0) if backend is not None else 0.0
