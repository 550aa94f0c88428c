"""Several servers used as one pool: health, capability and the choice of a server. A server is a
ComfyUI server or a RunPod Serverless endpoint (runner.Server is what both offer); RunPod endpoints
are used only to overflow (`choose`).

A server is healthy while its websocket is up and its `/object_info` could be
read. One that answers with a node list that is not ComfyUI's is *unusable*:
it has a `problem`, shown in `/status` and in the messages of jobs nobody else
can run, and its node list is asked for again every PROBLEM_RETRY seconds. A
server silent for longer than the grace period loses its open prompts (they end
as lost, and the scheduler moves them). The websocket's own reconnect loop
checks a dead server again; while jobs wait for one, the pool pokes it at least
every POKE_INTERVAL seconds so a server that is back is used at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from comfy.types import ComfyError, PromptLost, Unreachable
from comfy.client import ComfyClient
from config import Settings
from backends.runner import Engine
from backends.runpod import RunPodComfy
from comfy.workflows import WorkflowError, validate

log = structlog.get_logger(__name__)

WATCH_INTERVAL = 0.1  # seconds between looks at the clients' connection flags (no network traffic)
POKE_INTERVAL = 1.0  # seconds between reconnect attempts while jobs wait for a server (at most 2 s apart)
PROBLEM_RETRY = 5.0  # seconds between reads of an unusable server's node list
# The workflow name of a job that runs someone's own workflow (jobs/user_workflow.py): its model values
# list the node classes ("nodes") and model files ("files": class, input, file) it needs.
USER_WORKFLOW = "user:"


async def open_backends(settings: Settings, workflows: Mapping[str, Any], outputs: Any, *, instance: str,
                        store: Any = None, watcher: str | None = None, **client_options: Any) -> list[Backend]:
    """One started client and Backend per configured server, then one per RunPod endpoint.

    Client ids are `<instance>-<index>`: the same after a restart, so ComfyUI still sends the
    events of prompts submitted before it. A process that only watches the servers while another
    dispatches (`watcher`: its name) uses `<instance>-<index>-<watcher>`, so it never takes the
    dispatcher's events. A lone server is called "ComfyUI" in messages.
    """
    urls = settings.servers()
    backends = []
    for index, url in enumerate(urls):
        options = {"headers": settings.comfyui_headers(), "timeout": settings.comfyui_timeout,
                   "name": "ComfyUI" if len(urls) == 1 else f"ComfyUI server {index + 1}",
                   "report_positions": False, **client_options}  # the scheduler shows its own positions
        client = ComfyClient(url, client_id=f"{instance}-{index}" + (f"-{watcher}" if watcher else ""), **options)
        await client.start()
        backends.append(Backend(Engine(client, workflows, outputs, settings), settings.server_capacity))
    for index, endpoint in enumerate(settings.runpod_endpoints):
        name = "RunPod" if len(settings.runpod_endpoints) == 1 else f"RunPod endpoint {index + 1}"
        remote = RunPodComfy(endpoint, store, job_timeout=settings.job_timeout, name=name)
        backends.append(Backend(Engine(remote, workflows, outputs, settings), endpoint.concurrency))
    return backends


@dataclass(eq=False)
class Backend:
    """One ComfyUI server and what the scheduler knows of it."""

    engine: Engine
    capacity: int
    healthy: bool = False
    jobs: set[int] = field(default_factory=set)  # our prompts on it, queued or running
    last_model: str | None = None  # the model of the last job it ran: it is probably still loaded
    object_info: dict[str, Any] | None = None
    problem: str | None = None  # why a connected server cannot be used (its node list is not ComfyUI's)
    down_since: float | None = None
    next_look: float = 0.0  # when an unusable server's node list is read again
    poked: float = 0.0
    drained: bool = False  # an admin drained it: no new jobs, the running ones finish
    _fits: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The server's identity, kept in the store with its jobs: its URL without credentials."""
        return self.engine.client.server_id

    @property
    def label(self) -> str:
        """What people are shown: never the URL."""
        return self.engine.client.name

    @property
    def client(self) -> Any:
        return self.engine.client

    @property
    def remote(self) -> bool:
        """A RunPod endpoint: paid per second, used when the local servers cannot take a job."""
        return isinstance(self.engine.client, RunPodComfy)

    def free(self) -> bool:
        return self.healthy and len(self.jobs) < self.capacity

    def problems(self, workflow: str, models: Mapping[str, Any]) -> list[str]:
        """Why this server cannot run this workflow with these model files (unusable, missing node classes
        or model files); [] if it can."""
        if self.problem is not None:
            return [self.problem]
        if workflow.startswith(USER_WORKFLOW):
            return _lacking(self.object_info, models) if not self.remote else [
                "a RunPod endpoint runs only the operator's workflows"]
        if self.remote:  # no /object_info: the models its settings list are all there is to check
            if workflow not in self.engine.workflows:
                return [f"the workflow set has no {workflow!r} workflow"]
            return self.engine.client.problems(self.engine.workflows[workflow].applied(models))
        if self.object_info is None:
            return ["its node list is not known yet"]
        key = (workflow, tuple(sorted(models.items())))
        if key not in self._fits:
            try:
                graph = self.engine.workflow(workflow)
            except WorkflowError as error:  # an operator's own set without this kind's workflow
                return [str(error)]
            values = graph.applied(models)
            self._fits[key] = [problem.short() for problem in validate(graph, self.object_info, values)]
        return self._fits[key]

    def learn(self, object_info: dict[str, Any]) -> None:
        self.object_info, self.problem = object_info, None
        self._fits.clear()


def _lacking(object_info: Mapping[str, Any] | None, models: Mapping[str, Any]) -> list[str]:
    """What a server lacks of the node classes and model files someone's own workflow needs."""
    if object_info is None:
        return ["its node list is not known yet"]
    lacks = [f"it lacks the node class {name}" for name in models.get("nodes", ()) if name not in object_info]
    for class_type, key, file in models.get("files", ()):
        spec = (object_info.get(class_type) or {}).get("input") or {}
        declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}.get(key)
        options = declared[0] if isinstance(declared, list) and declared and isinstance(declared[0], list) else \
            declared[1].get("options") if isinstance(declared, list) and len(declared) > 1 \
            and declared[0] == "COMBO" and isinstance(declared[1], dict) else None
        if options is not None and file not in options:
            lacks.append(f"it lacks the model file {file!r} ({class_type}, input '{key}')")
    return lacks


class Pool:
    def __init__(self, backends: list[Backend], grace: float, on_change: Callable[[], None],
                 on_up: Callable[[Backend], Awaitable[None]]) -> None:
        self.backends = backends
        self._grace = grace
        self._on_change = on_change
        self._on_up = on_up
        self.wanted = False  # jobs wait for a server: keep poking the disconnected ones

    def get(self, name: str | None) -> Backend | None:
        """The server a stored job names (older databases kept the full URL)."""
        return next((b for b in self.backends if name in (b.name, b.client.base_url)), None)

    def choose(self, workflow: str, models: Mapping[str, Any], avoid: set[str] = frozenset(), *,
               paid: bool = True, overflow: bool = False) -> Backend | None:
        """A free server that can run the job: one that last ran the same model, then the least loaded.
        A RunPod endpoint only when the job may use paid capacity (`paid`) and either every local server
        that could run it is down or the wait for them is too long (`overflow`)."""
        able = [b for b in self.backends if not b.drained and not b.problems(workflow, models)]
        remote_ok = paid and (overflow or not any(b.healthy for b in able if not b.remote))
        candidates = [b for b in able if b.free() and (remote_ok or not b.remote)]
        if not candidates:
            return None
        model = next(iter(models.values()), None)
        return min(candidates, key=lambda b: (b.name in avoid, b.last_model != model,
                                              len(b.jobs) / b.capacity, self.backends.index(b)))

    def unservable(self, workflow: str, models: Mapping[str, Any]) -> list[str] | None:
        """The reasons no server can run such a job, or None when one can (or might, once known)."""
        known = [b for b in self.backends if b.object_info is not None or b.problem is not None]
        if len(known) < len(self.backends):
            return None
        reasons = [b.problems(workflow, models) for b in known]
        if any(not r for r in reasons):
            return None
        if len(known) == 1:
            return reasons[0]
        return [f"{b.label}: {'; '.join(r)}" for b, r in zip(known, reasons)]

    def offers(self, workflow: str, models: Mapping[str, Any]) -> bool:
        """Whether some server whose node list is known could run such a job (True while none is known)."""
        known = [b for b in self.backends if b.object_info is not None]
        return not known or any(not b.problems(workflow, models) for b in known)

    def can_serve(self, workflow: str, models: Mapping[str, Any], *, paid: bool = True) -> bool:
        """Whether a healthy server (busy or not) can run such a job; RunPod endpoints only when `paid`."""
        return any(b.healthy and not b.problems(workflow, models) and (paid or not b.remote) for b in self.backends)

    def any_healthy(self) -> bool:
        return any(backend.healthy for backend in self.backends)

    def poke(self) -> None:
        """Someone waits for a server: make every disconnected client try again now."""
        now = time.monotonic()
        for backend in self.backends:
            backend.poked = now
            backend.client.poke()

    def gave_up(self, since: float) -> bool:
        """Whether every server that is down has failed a connection attempt begun at or after `since`:
        the last word before a waiting job is told that the servers are unreachable."""
        return all(b.client.failed_since(since) for b in self.backends if not b.client.connected)

    async def watch(self) -> None:
        """Follow each server's health; runs until cancelled (supervised by the scheduler)."""
        while True:
            for backend in self.backends:
                try:
                    await self._look(backend)
                except ComfyError as error:
                    log.warning("server_look_failed", server=backend.label, error=str(error))
            await asyncio.sleep(WATCH_INTERVAL)

    async def _look(self, backend: Backend) -> None:
        connected = backend.client.connected
        now = time.monotonic()
        if not connected and (self.wanted or backend.jobs) and now - backend.poked >= POKE_INTERVAL:
            backend.poked = now
            backend.client.poke()
        if connected and not backend.healthy:
            if now < backend.next_look:
                return
            try:
                backend.learn(await backend.client.object_info(refresh=True))
            except Unreachable as error:  # slow or gone: not a verdict on the server
                log.warning("server_not_ready", server=backend.label, error=str(error))
                backend.next_look = time.monotonic() + PROBLEM_RETRY
                return
            except ComfyError as error:
                backend.next_look = time.monotonic() + PROBLEM_RETRY
                if backend.problem != str(error):
                    log.warning("server_unusable", server=backend.label, error=str(error))
                    backend.problem = str(error)
                    self._on_change()
                return
            backend.healthy, backend.down_since = True, None
            log.info("server_up", server=backend.label, node_classes=len(backend.object_info))
            await self._on_up(backend)
            self._on_change()
        elif not connected:
            backend.next_look = 0.0
            if backend.healthy:
                backend.healthy, backend.down_since = False, time.monotonic()
                log.warning("server_down", server=backend.label, open_prompts=len(backend.client.open_prompts()))
                self._on_change()
            elif backend.down_since is not None and time.monotonic() - backend.down_since > self._grace:
                lost = backend.client.fail_open(PromptLost(f"Lost contact with {backend.label}."))
                if lost:
                    log.warning("server_jobs_moved", server=backend.label, prompts=lost)
