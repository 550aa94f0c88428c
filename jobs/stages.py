"""Running a pipeline (jobs/pipelines.py) as one job: each step is a job of its kind, and when one ends with a
result the next step's job takes that result as its input. A part of scheduler.Scheduler, used by
endings.Endings when a job with `request["pipeline"]` ends.

- One message: every step's job has the first one's progress message, which names the stage it is on; only
  the last step's result is posted, and its embed lists each stage with its GPU time (and cost where the
  operator set prices), and the steps whose condition did not hold.
- Every intermediate result is a generation in the person's history, each the source (parent) of the next.
- Crash recovery per step: the step that was running is a job like any other (followed by prompt id after a
  restart); a step that ended but did not yet hand over is advanced by the next start, once
  (`store.advance_job` marks it done and stores the next step in one transaction).
- One cancel stops the rest: a cancelled step never hands over, and a Cancel pressed on a step that just
  handed over is passed on to the step that runs now (`current_step`).

The pipeline's state travels in each step's request: {"name", "steps", "step" (this job's, from 0),
"stages" (the ones before it)}; the result's shown values get {"name", "of", "stages", "next_step"}.
"""

from __future__ import annotations

from typing import Any

import structlog

from image_gen import RequestError
from jobs import kinds, wording
from jobs.conditions import Condition, ConditionError
from jobs.pipelines import MAX_STEPS, VALUES, PipelineError, Step, next_request, values_of
from results.folder import OutputError
from store import Generation, Job

log = structlog.get_logger("jobs.scheduler")  # one logger for all the scheduler's parts


def plan(job: Job, kind: str, params: dict[str, Any], files: int, gpu: float, cost: float) -> dict[str, Any] | None:
    """For a pipeline step's result: the stages so far (this one with its GPU time and cost, then the steps
    skipped because their condition does not hold for this result) and the step to run next (None: this is
    the pipeline's result). None for a job that is not a pipeline step."""
    pipeline = job.request.get("pipeline")
    if not isinstance(pipeline, dict):
        return None
    steps = [Step.from_json(step) for step in pipeline["steps"]]
    index = int(pipeline["step"])
    stages = [*pipeline.get("stages", []), {"step": index + 1, "label": steps[index].label(), "kind": kind,
                                            "gpu": round(gpu, 2), "cost": round(cost, 6), "job_id": job.id}]
    following = index + 1
    while following < len(steps) and steps[following].when:
        step = steps[following]
        try:  # a value this result lacks (frames of an image) cannot be compared: the step is skipped, saying so
            holds = Condition.parse(step.when, set(VALUES)).holds(values_of(kind, params, files, following + 1))
            why = f"{step.when} is not true"
        except ConditionError:
            holds, why = False, f"{step.when} cannot be checked for this result"
        if holds:
            break
        stages.append({"step": following + 1, "label": step.label(), "skipped": why})
        following += 1
    return {"name": pipeline["name"], "of": len(steps), "stages": stages,
            "next_step": following if following < len(steps) else None}


class Stages:
    """The methods of scheduler.Scheduler that run a pipeline's steps one after another."""

    async def _next_stage(self, job: Job, generation: Generation, jlog: Any) -> bool:
        """Hand a finished pipeline step's result to the next step; False when the result is to be posted
        (not a pipeline step, or its last). The job is delivering; it ends done (handed over) or failed."""
        shown = generation.params.get("pipeline")
        if not isinstance(shown, dict) or shown.get("next_step") is None or not generation.files:
            return False
        index = int(shown["next_step"])
        step = Step.from_json(job.request["pipeline"]["steps"][index])
        path = self._settings.outputs_dir / generation.files[0]
        try:
            kind, request = next_request(step, job.request, generation.kind, generation.params, generation.files[0])
            request["pipeline"] = {**job.request["pipeline"], "step": index, "stages": shown["stages"]}
            declared = kinds.get(kind)
            request = declared.prepare(self._settings, request)
            models = declared.models(self._settings, request)
            reasons = self.pool.unservable(declared.workflow_for(request), models)
            if reasons:
                raise RequestError(wording.unservable(models, reasons))
            self._outputs.pin(path)  # the next step's input, until that step ends
        except (PipelineError, RequestError, OutputError) as error:
            jlog.warning("pipeline_step_refused", step=index + 1, error=str(error))
            await self._fail(job, f"step {index + 1} of the pipeline ({step.label()}) cannot run: {error}")
            return True
        following = Job(id=None, kind=kind, user_id=job.user_id, channel_id=job.channel_id, guild_id=job.guild_id,
                        request=request, interaction_token=job.interaction_token, application_id=job.application_id,
                        interaction_created=job.interaction_created, message_id=job.message_id,
                        source_generation_id=generation.id, source_index=0, priority=job.priority)
        try:
            if self.shared:  # another process may run the next step
                await self._outputs.keep(path)
            stored = await self._store.advance_job(job.id, following)
        except BaseException:
            self._outputs.release(path)
            raise
        if stored is None:  # advanced by a process that stopped after that, or cancelled meanwhile
            self._outputs.release(path)
            jlog.info("pipeline_step_not_advanced", step=index + 1)
            return True
        self._release_input(job)
        self._forget(job.id)
        await self._settle(job, True)
        try:  # each step is priced on its own (CREDITS_ENABLED)
            stored = await self._charge(stored, cancel=False)
        except RequestError as error:
            await self._fail(stored, f"step {index + 1} of the pipeline ({step.label()}) cannot run: {error}")
            return True
        self.metrics.job_finished(job.kind, "done", waited=generation.params.get("waited"),
                                  ran=generation.params.get("ran"))
        jlog.info("pipeline_advanced", step=index + 1, next_job=stored.id, generation_id=generation.id)
        try:
            await self._notifier.job_advanced(job, stored)
        except Exception:
            log.exception("stage_not_shown", job_id=stored.id)
        if not self.leading:  # the leader queues it
            await self.tell_leader("job", str(stored.id))
        else:
            self._enqueue(stored)
            self._wake_up()
        return True

    async def current_step(self, job: Job | None) -> Job | None:
        """The step of `job`'s pipeline that runs now, when `job` is a step that already handed over."""
        for _ in range(MAX_STEPS):
            following = (job.request.get("pipeline") or {}).get("next") if job is not None else None
            if job is None or job.state != "done" or not following:
                return job
            job = await self._store.get_job(int(following))
        return job

