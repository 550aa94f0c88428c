"""Several ComfyUI servers used as one pool: health, capability and the choice of a server.

A server is healthy while its websocket is up and its `/object_info` could be
read; a server silent for longer than the grace period loses its open prompts
(they end as lost, and the scheduler moves them). The websocket's own
reconnect loop (backoff with jitter) is what checks a dead server again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from comfy_types import ComfyError, PromptLost
from comfyui import ComfyClient
from config import Settings
from runner import Engine
from workflows import validate

log = structlog.get_logger(__name__)

WATCH_INTERVAL = 0.1  # seconds between looks at the clients' connection flags (no network traffic)


async def open_backends(settings: Settings, workflows: Mapping[str, Any], outputs: Any, *, instance: str,
                        **client_options: Any) -> list[Backend]:
    """One started client and Backend per configured server.

    Client ids are `<instance>-<index>`: the same after a restart, so ComfyUI still sends the
    events of prompts submitted before it. A lone server is called "ComfyUI" in messages.
    """
    urls = settings.servers()
    backends = []
    for index, url in enumerate(urls):
        options = {"headers": settings.comfyui_headers(), "timeout": settings.comfyui_timeout,
                   "name": "ComfyUI" if len(urls) == 1 else f"ComfyUI server {index + 1}",
                   "report_positions": False, **client_options}  # the scheduler shows its own positions
        client = ComfyClient(url, client_id=f"{instance}-{index}", **options)
        await client.start()
        backends.append(Backend(Engine(client, workflows, outputs, settings), settings.server_capacity))
    return backends


def model_values(settings: Settings, kind: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The model files a job needs, as workflow parameters: what a server must have to run it."""
    if kind == "txt2img":
        return {"checkpoint": request.get("checkpoint") or settings.checkpoint}
    if kind == "upscale":
        return {"upscale_model": settings.upscale_model}
    return {"video_checkpoint": settings.video_checkpoint}


@dataclass(eq=False)
class Backend:
    """One ComfyUI server and what the scheduler knows of it."""

    engine: Engine
    capacity: int
    healthy: bool = False
    jobs: set[int] = field(default_factory=set)  # our prompts on it, queued or running
    last_model: str | None = None  # the model of the last job it ran: it is probably still loaded
    object_info: dict[str, Any] | None = None
    down_since: float | None = None
    _fits: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The server's identity, kept in the store with its jobs: its URL."""
        return self.engine.client.base_url

    @property
    def label(self) -> str:
        """What people are shown: never the URL."""
        return self.engine.client.name

    @property
    def client(self) -> Any:
        return self.engine.client

    def free(self) -> bool:
        return self.healthy and len(self.jobs) < self.capacity

    def problems(self, kind: str, models: Mapping[str, Any]) -> list[str]:
        """Why this server cannot run such a job (missing node classes or model files); [] if it can."""
        if self.object_info is None:
            return ["its node list is not known yet"]
        key = (kind, tuple(sorted(models.items())))
        if key not in self._fits:
            workflow = self.engine.workflow(kind)
            values = {name: value for name, value in models.items() if name in workflow.params}
            self._fits[key] = [problem.short() for problem in validate(workflow, self.object_info, values)]
        return self._fits[key]

    def learn(self, object_info: dict[str, Any]) -> None:
        self.object_info = object_info
        self._fits.clear()


class Pool:
    def __init__(self, backends: list[Backend], grace: float, on_change: Callable[[], None],
                 on_up: Callable[[Backend], Awaitable[None]]) -> None:
        self.backends = backends
        self._grace = grace
        self._on_change = on_change
        self._on_up = on_up

    def get(self, name: str | None) -> Backend | None:
        return next((backend for backend in self.backends if backend.name == name), None)

    def choose(self, kind: str, models: Mapping[str, Any], avoid: set[str] = frozenset()) -> Backend | None:
        """A free server that can run the job: one that last ran the same model, then the least loaded."""
        candidates = [b for b in self.backends if b.free() and not b.problems(kind, models)]
        if not candidates:
            return None
        model = next(iter(models.values()), None)
        return min(candidates, key=lambda b: (b.name in avoid, b.last_model != model,
                                              len(b.jobs) / b.capacity, self.backends.index(b)))

    def unservable(self, kind: str, models: Mapping[str, Any]) -> list[str] | None:
        """The reasons no server can run such a job, or None when one can (or might, once known)."""
        known = [b for b in self.backends if b.object_info is not None]
        if len(known) < len(self.backends):
            return None
        reasons = [b.problems(kind, models) for b in known]
        if any(not r for r in reasons):
            return None
        if len(known) == 1:
            return reasons[0]
        return [f"{b.label}: {'; '.join(r)}" for b, r in zip(known, reasons)]

    def can_serve(self, kind: str, models: Mapping[str, Any]) -> bool:
        """Whether a healthy server (busy or not) can run such a job."""
        return any(b.healthy and not b.problems(kind, models) for b in self.backends)

    def any_healthy(self) -> bool:
        return any(backend.healthy for backend in self.backends)

    def poke(self) -> None:
        """Someone waits for a server: make every disconnected client try again now."""
        for backend in self.backends:
            backend.client.poke()

    async def watch(self) -> None:
        """Follow each server's health; runs until cancelled."""
        while True:
            for backend in self.backends:
                await self._look(backend)
            await asyncio.sleep(WATCH_INTERVAL)

    async def _look(self, backend: Backend) -> None:
        connected = backend.client.connected
        if connected and not backend.healthy:
            try:
                backend.learn(await backend.client.object_info(refresh=True))
            except ComfyError as error:
                log.warning("server_not_ready", server=backend.label, error=str(error))
                return
            backend.healthy, backend.down_since = True, None
            log.info("server_up", server=backend.label, node_classes=len(backend.object_info))
            await self._on_up(backend)
            self._on_change()
        elif not connected:
            if backend.healthy:
                backend.healthy, backend.down_since = False, time.monotonic()
                log.warning("server_down", server=backend.label, open_prompts=len(backend.client.open_prompts()))
                self._on_change()
            elif backend.down_since is not None and time.monotonic() - backend.down_since > self._grace:
                lost = backend.client.fail_open(PromptLost(f"Lost contact with {backend.label}."))
                if lost:
                    log.warning("server_jobs_moved", server=backend.label, prompts=lost)
