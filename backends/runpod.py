"""A RunPod Serverless endpoint running worker-comfyui, as the pool and the runner see a ComfyUI server.

It offers what runner.py and pool.py use of a ComfyClient: submit and attach (returning a PromptRun
whose events end in a Finished), cancel, upload_image (kept here and sent with the job, as base64),
iter_file (the job's decoded outputs, kept by prompt id and file name, as every new worker names its files
from `_00001_`), and the connection state (RunPod is reached per request, so it is "connected" until it
refuses the key). The RunPod job id of each prompt is written to the store before the job is followed,
so a restarted bot picks the job up by id while RunPod still holds it.

It has no /object_info: what it can run comes from the settings (the model files it holds), and
`problems()` says so instead of validating node classes; `unlisted()` (given the model files each kind
needs, which the caller reads from jobs.kinds) and TRUST say, for `check` and the start-up log, what is
checked of an endpoint and what is taken on trust.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog

from comfy.types import ComfyError, FileRef, Finished, Output, PromptLost, Queued, ResultExpired, Started
from comfy.prompt_run import PromptRun
from backends.runpod_client import KeyRefused, ResultGone, RunPodClient

log = structlog.get_logger(__name__)

POLL = 1.0  # seconds between status reads (RunPod allows 2,000 per 10 s per endpoint)
RECORD = "runpod"  # the store's switch kind that maps our prompt ids to RunPod job ids
TRUST = ("its node classes and model files cannot be verified from here (RunPod has no /object_info); "
         "run a job through it once to be sure.")


def model_files(models: Mapping[str, Any]) -> list[str]:
    """The model file names in a job's model values (a LoRA list gives each LoRA's name)."""
    return [str(name) for key, value in models.items()
            for name in ([pair[0] for pair in value] if key == "loras" else [value]) if value]


def unlisted(endpoint: Any, needed: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Each kind of job -> the model files it needs (`needed`: kinds.model_files_needed) that RUNPOD_ENDPOINTS
    does not list for `endpoint`: jobs of those kinds never go to it."""
    held, missing = set(endpoint.models), {}
    for kind, names in needed.items():
        lacking = [name for name in names if name not in held]
        if lacking:
            missing[kind] = lacking
    return missing


class RunPodComfy:
    def __init__(self, endpoint: Any, store: Any, *, job_timeout: float, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.server_id = f"runpod:{endpoint.endpoint_id}"
        self.base_url = self.server_id
        self._store = store
        self._timeout = job_timeout
        self._client = RunPodClient(endpoint.endpoint_id, endpoint.api_key.get_secret_value(),
                                    base_url=endpoint.base_url, name=name)
        self._uploads: dict[str, bytes] = {}
        self._files: dict[tuple[str, str], bytes] = {}  # (prompt id, file name): names repeat across workers
        self._runs: dict[str, PromptRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = False
        self.billed: dict[str, float] = {}  # prompt id -> billed seconds of its finished RunPod job

    # what the pool asks of a server -------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self.refused

    def poke(self) -> None:
        pass

    def failed_since(self, moment: float) -> bool:
        return self.refused

    async def start(self) -> None:
        pass

    async def wait_connected(self, timeout: float | None = None) -> None:
        pass

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        return {}  # RunPod has no /object_info; Backend.problems() asks `problems()` instead

    def problems(self, models: Mapping[str, Any]) -> list[str]:
        """The model files a job needs that the settings do not list for this endpoint."""
        missing = [name for name in model_files(models) if name not in self.endpoint.models]
        return [f"{self.name} holds no {', '.join(missing)} (RUNPOD_ENDPOINTS lists its models)"] if missing else []

    def log_start_check(self, needed: Mapping[str, list[str]]) -> None:
        """At start, in place of validating the workflows against a node list: one line saying which kinds
        never go to this endpoint (their model files, `needed`, are not listed for it) and what is taken on trust."""
        missing = unlisted(self.endpoint, needed)
        log.info("runpod_taken_on_trust", server=self.name, taken_on_trust=TRUST,
                 never_sent={kind: ", ".join(names) for kind, names in missing.items()})

    async def queue(self) -> tuple[list[str], list[str]]:
        return [], []  # nothing of ours to clean on a serverless endpoint

    def open_prompts(self) -> list[str]:
        return list(self._runs)

    def fail_open(self, error: ComfyError) -> int:
        for run in list(self._runs.values()):
            run.finish(Finished("error", error=error))
        return len(self._runs)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._client.close()

    # what the runner asks -----------------------------------------------------------------

    async def upload_image(self, data: bytes, name: str) -> str:
        self._uploads[name] = data
        return name

    async def submit(self, graph: dict[str, Any], *, prompt_id: str | None = None) -> PromptRun:
        prompt_id = prompt_id or uuid.uuid4().hex
        names = {str(node["inputs"].get("image")) for node in graph.values()
                 if node.get("class_type") in ("LoadImage", "LoadImageMask")}
        images = [(name, self._uploads.pop(name)) for name in sorted(names) if name in self._uploads]
        try:
            job_id = await self._client.submit(graph, images, policy={"executionTimeout": int(self._timeout * 1000)})
        except KeyRefused:
            self.refused = True
            raise
        await self._store.set_control(RECORD, prompt_id, {"job": job_id})  # before it is acted on
        return self._follow(prompt_id, graph, job_id)

    async def attach(self, prompt_id: str, graph: dict[str, Any]) -> PromptRun:
        record = (await self._store.controls(RECORD)).get(prompt_id)
        if record is None:
            raise PromptLost("RunPod never confirmed this job, so it cannot be picked up.")
        return self._follow(prompt_id, graph, record["job"])

    async def cancel(self, prompt_id: str) -> str:
        record = (await self._store.controls(RECORD)).get(prompt_id)
        if record is None:
            return "gone"
        return "interrupted" if await self._client.cancel(record["job"]) else "gone"

    async def iter_file(self, ref: FileRef) -> AsyncIterator[bytes]:
        data = self._files.pop((ref.subfolder, ref.filename), None)
        if data is None:
            raise PromptLost(f"{self.name}'s output {ref.filename} is no longer at hand.")
        yield data

    # following a job -----------------------------------------------------------------------

    def _follow(self, prompt_id: str, graph: dict[str, Any], job_id: str) -> PromptRun:
        run = PromptRun(prompt_id, graph)
        run.confirmed = True
        self._runs[prompt_id] = run
        task = asyncio.create_task(self._watch(run, job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _watch(self, run: PromptRun, job_id: str) -> None:
        """RunPod's states as the runner's events: IN_QUEUE -> Queued, IN_PROGRESS -> Started, then Finished."""
        output_node = next((node for node, body in run.graph.items()
                            if str(body.get("class_type", "")).startswith("Save")), "runpod")
        try:
            async for status in self._client.follow(job_id, poll=POLL, deadline=self._timeout):
                if status.state == "IN_QUEUE":
                    run.push(Queued(0))
                elif status.state == "IN_PROGRESS":
                    run.push(Started())
                elif status.final:
                    if status.execution_ms is not None:
                        self.billed[run.prompt_id] = math.ceil(status.execution_ms / 1000)
                    failure = status.failure()
                    if failure is not None:
                        log.warning("runpod_job_failed", endpoint=self.name, job=job_id, error=status.error)
                        run.finish(Finished("error", error=failure))
                        return
                    for name, data in status.outputs:  # each worker numbers its files from _00001_
                        self._files[run.prompt_id, name] = data
                    files = tuple(FileRef(name, subfolder=run.prompt_id) for name, _ in status.outputs)
                    run.finish(Finished("success", {output_node: Output(output_node, files)}))
                    return
        except ResultGone as error:  # said in words: running it again would be paid twice
            log.warning("runpod_result_expired", endpoint=self.name, job=job_id)
            run.finish(Finished("error", error=ResultExpired(str(error))))
        except ComfyError as error:
            log.warning("runpod_job_failed", endpoint=self.name, job=job_id, error=str(error))
            run.finish(Finished("error", error=error))
        finally:  # the record stays: a bot that stops now finds the job again by its id
            self._runs.pop(run.prompt_id, None)
            run.finish(Finished("error", error=PromptLost(f"{self.name} stopped reporting on the job.")))
