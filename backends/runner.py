"""Run one bound workflow on one ComfyUI server and bring its files home.

Shared by image_gen and video_gen: submit, follow the events, bound the wait,
stream the output files into the capped output folder and keep them (results/keeper.py). Knows
nothing of Discord.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from comfy.types import ComfyError, Event, FileRef, Finished, Started, TimedOut
from comfy.prompt_run import PromptRun
from config import Settings
from results.media import verify
from results.folder import OutputFolder
from comfy.workflows import Workflow, WorkflowError

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]


class Server(Protocol):
    """What the runner and the pool ask of a server, whatever kind it is: a ComfyUI server
    (comfyui.ComfyClient) or a RunPod Serverless endpoint (runpod_backend.RunPodComfy)."""

    name: str  # what people are shown
    server_id: str  # who it is in the store and the logs
    base_url: str

    @property
    def connected(self) -> bool: ...
    def poke(self) -> None: ...
    def failed_since(self, moment: float) -> bool: ...
    async def start(self) -> None: ...
    async def wait_connected(self, timeout: float | None = None) -> None: ...
    async def object_info(self, refresh: bool = False) -> dict[str, Any]: ...
    async def upload_image(self, data: bytes, name: str) -> str: ...
    async def submit(self, graph: dict[str, Any], *, prompt_id: str | None = None) -> PromptRun: ...
    async def attach(self, prompt_id: str, graph: dict[str, Any]) -> PromptRun: ...
    async def cancel(self, prompt_id: str) -> str: ...
    def iter_file(self, ref: FileRef) -> AsyncIterator[bytes]: ...
    async def queue(self) -> tuple[list[Any], list[Any]]: ...
    def open_prompts(self) -> list[str]: ...
    def fail_open(self, error: ComfyError) -> int: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Engine:
    """Everything a job needs to run on one server."""

    client: Server
    workflows: Mapping[str, Workflow]
    outputs: OutputFolder
    settings: Settings

    def workflow(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            raise WorkflowError([f"the workflow set {self.settings.workflow_set!r} has no {name!r} workflow"]) from None


@dataclass
class JobResult:
    kind: str
    files: list[Path]
    params: dict[str, Any]  # the values that were bound into the workflow
    server: str
    prompt_id: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: queued, running, download, total
    text: list[str] = field(default_factory=list)  # text outputs (e.g. PreviewAny)

    @property
    def seed(self) -> int | None:
        return self.params.get("seed")


async def run_workflow(engine: Engine, kind: str, values: Mapping[str, Any], *,
                       on_event: EventHandler | None = None, prompt_id: str | None = None,
                       attach: bool = False) -> JobResult:
    """Bind, submit, follow, download. Raises a ComfyError (or WorkflowError) that says what failed.

    With `attach`, the prompt `prompt_id` was submitted before (by a previous
    process): it is followed, not submitted again, so it never runs twice.
    """
    workflow = engine.workflow(kind)
    applied = workflow.applied(values)
    graph = workflow.bind(applied)
    began = time.monotonic()
    if attach and prompt_id is not None:
        run = await engine.client.attach(prompt_id, graph)
    else:
        run = await engine.client.submit(graph, prompt_id=prompt_id)
    jlog = log.bind(kind=kind, prompt_id=run.prompt_id, server=engine.client.name)
    started = began
    try:
        async with asyncio.timeout(engine.settings.job_timeout):
            async for event in run.events():
                if isinstance(event, Started):
                    started = time.monotonic()
                if on_event is not None:
                    await _deliver(on_event, event, jlog)
    except TimeoutError:
        await _abandon(engine, run.prompt_id, jlog)
        raise TimedOut(f"It did not finish within {_duration(engine.settings.job_timeout)} and was stopped.") from None
    # A cancelled task (the bot stopping) leaves the prompt on the server: the next start picks it up.
    finished = run.finished.result()
    ended = time.monotonic()
    if finished.outcome != "success":
        raise finished.error or ComfyError("ComfyUI ended the job without saying why.")
    if attach and not any(node in finished.outputs for node in workflow.outputs):
        finished = await _recorded(engine, run.prompt_id, finished, jlog)
    files = await _download(engine, workflow, finished, jlog)
    done = time.monotonic()
    texts = [text for output in finished.outputs.values() for text in output.text]
    timings = {"queued": started - began, "running": ended - started, "download": done - ended, "total": done - began}
    jlog.info("job_done", files=len(files), **{k: round(v, 3) for k, v in timings.items()})
    return JobResult(kind, files, applied, engine.client.name, run.prompt_id, timings, texts)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} seconds"


async def _deliver(handler: EventHandler, event: Event, jlog: Any) -> None:
    """Progress reporting must never break a job: a failing handler is logged and skipped."""
    try:
        await handler(event)
    except Exception:
        jlog.exception("event_handler_failed", event=type(event).__name__)


async def _abandon(engine: Engine, prompt_id: str, jlog: Any) -> None:
    try:
        await engine.client.cancel(prompt_id)
    except ComfyError as error:
        jlog.warning("cancel_failed", error=str(error))


async def _fetch(engine: Engine, ref: FileRef) -> Path:
    """One result file: streamed under the byte cap, checked to be the image or video it claims, then
    kept (with OUTPUT_STORE: in the bucket, before its job is recorded as delivering, so any process
    can post it)."""
    path = await engine.outputs.save_stream(ref.filename, engine.client.iter_file(ref),
                                            max_bytes=engine.settings.download_limit)
    try:
        await verify(path)
        await engine.outputs.keep(path)
    except BaseException:
        await engine.outputs.discard(path)
        raise
    return path


async def _recorded(engine: Engine, prompt_id: str, finished: Finished, jlog: Any) -> Finished:
    """A prompt followed after a restart or a failover may have saved its files before this process was
    listening, so their `executed` events went nowhere: its outputs as /history recorded them."""
    history = getattr(engine.client, "history", None)
    if history is None:  # RunPod: its result carries every output
        return finished
    try:
        entry = await history(prompt_id)
    except ComfyError as error:
        jlog.warning("history_not_read", error=str(error))
        return finished
    return finished if entry is None else Finished.from_history(entry, finished.outputs)


async def _download(engine: Engine, workflow: Workflow, finished: Finished, jlog: Any) -> list[Path]:
    refs = [ref for node in workflow.outputs if node in finished.outputs for ref in finished.outputs[node].files]
    if not refs:
        raise ComfyError(f"The workflow finished, but its output node(s) {', '.join(workflow.outputs)} produced no file.")
    results = await asyncio.gather(*(_fetch(engine, ref) for ref in refs), return_exceptions=True)
    saved = [result for result in results if isinstance(result, Path)]
    failure = next((result for result in results if isinstance(result, BaseException)), None)
    if failure is not None:
        for path in saved:  # nobody will deliver these: let the cap reclaim them
            engine.outputs.release(path)
        jlog.warning("download_failed", error=str(failure))
        raise failure
    return saved
