"""Helpers for the scheduler tests: fake ComfyUI servers, a recording notifier, and "bot processes".

A `Process` is what one run of the bot holds: a Store, an OutputFolder, one real ComfyClient per
server (client ids `test-<index>`, the same in every process, as the bot derives them from its
database) and a real Scheduler. Several processes can be built one after the other on the same
data folder to simulate restarts. The `RecordingNotifier` stands in for Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy.types import Event
from comfy.client import ComfyClient
from config import Settings
from results.folder import OutputFolder
from backends.pool import Backend, open_backends
from jobs.scheduler import Scheduler
from store import Generation, Job, Store
from tests.conftest import TEST_CLIENT, make_settings
from tests.fakes.comfyui import FakeComfyUI
from comfy.workflows import load_set

INSTANCE = "test"
PROMPT_ID = re.compile(r"^cf[0-9A-Za-z]{0,8}-(\d+)-[0-9a-f]+$")  # cf<instance[:8]>-<job id>-<random>


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `predicate` until it is truthy (bounded by `timeout`); returns its value."""
    try:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await asyncio.sleep(0.01)
            return value
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}") from None


async def settles(predicate: Callable[[], Any], timeout: float) -> bool:
    """Whether `predicate` becomes truthy within `timeout` seconds (for assertions with a better message)."""
    try:
        await wait_until(predicate, timeout)
    except AssertionError:
        return False
    return True


async def wait_for_state(store: Store, job_id: int, *states: str, timeout: float = 10.0) -> Job:
    """Wait until the stored job is in one of `states`; returns it."""
    job = None
    try:
        async with asyncio.timeout(timeout):
            while (job := await store.get_job(job_id)) is None or job.state not in states:
                await asyncio.sleep(0.01)
            return job
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not reach {states} within {timeout:g} s; it is {job}") from None


def job_of(prompt_id: str) -> int | None:
    """The job id in one of our prompt ids (cf<instance>-<job id>-<random>)."""
    match = PROMPT_ID.match(prompt_id or "")
    return int(match[1]) if match else None


def posted_prompt_ids(fake: FakeComfyUI) -> list[str]:
    """The prompt ids POSTed to this fake, in arrival order (every POST, even of the same id)."""
    return [r["json"]["prompt_id"] for r in fake.requests
            if r["method"] == "POST" and r["path"].endswith("/prompt") and isinstance(r["json"], dict)
            and "prompt_id" in r["json"]]


def posted_jobs(*fakes: FakeComfyUI) -> list[int]:
    """The job ids whose prompts reached these fakes, in arrival order (per fake, fakes concatenated)."""
    return [job_of(pid) for fake in fakes for pid in posted_prompt_ids(fake)]


def posts_per_job(*fakes: FakeComfyUI) -> Counter[int]:
    return Counter(posted_jobs(*fakes))


def on_server(fake: FakeComfyUI) -> list[str]:
    """Our prompts the fake holds right now: the running one and the queued ones."""
    running = fake.running_id()
    return [pid for pid in [*([running] if running else []), *fake.queue_pending_ids()] if job_of(pid) is not None]


@dataclass
class Delivered:
    job_id: int
    generation: Generation
    files: list[bytes]


class RecordingNotifier:
    """The Notifier protocol, recording every call. With `block_delivery`, `deliver` never returns
    (until its task is cancelled, e.g. by Scheduler.close)."""

    def __init__(self, *, block_delivery: bool = False) -> None:
        self.block_delivery = block_delivery
        self.queued: list[tuple[int, int | None]] = []
        self.countdowns: list[tuple[int, float]] = []
        self.starting: list[int] = []
        self.progress: list[tuple[int, str]] = []
        self.deliver_calls: list[int] = []
        self.deliveries: list[Delivered] = []
        self.failed: list[tuple[int, str]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.etas: list[tuple[int, float | None]] = []
        self._message_ids = iter(range(900_000, 10**9))

    async def job_queued(self, job: Job, position: int, giving_up_in: float | None = None,
                         eta: float | None = None) -> None:
        self.queued.append((job.id, position))
        self.etas.append((job.id, eta))
        if giving_up_in is not None:
            self.countdowns.append((job.id, giving_up_in))

    async def job_starting(self, job: Job) -> None:
        self.starting.append(job.id)

    async def job_progress(self, job: Job, event: Event) -> None:
        self.progress.append((job.id, type(event).__name__))

    async def deliver(self, job: Job, generation: Generation, files: list[Path]) -> tuple[int, list[str]]:
        self.deliver_calls.append(job.id)
        if self.block_delivery:
            await asyncio.Event().wait()
        data = [await asyncio.to_thread(path.read_bytes) for path in files]
        self.deliveries.append(Delivered(job.id, generation, data))
        return next(self._message_ids), [f"https://cdn.example/{path.name}" for path in files]

    async def job_failed(self, job: Job, reason: str) -> None:
        self.failed.append((job.id, reason))

    async def job_cancelled(self, job: Job, by_user_id: int) -> None:
        self.cancelled.append((job.id, by_user_id))

    # queries ------------------------------------------------------------------

    def delivered_ids(self) -> list[int]:
        return [d.job_id for d in self.deliveries]

    def delivery(self, job_id: int) -> Delivered:
        (found,) = [d for d in self.deliveries if d.job_id == job_id]
        return found

    def positions(self, job_id: int) -> list[int | None]:
        return [position for jid, position in self.queued if jid == job_id]

    def ended(self, job_id: int) -> bool:
        return (job_id in self.delivered_ids() or any(j == job_id for j, _ in self.failed)
                or any(j == job_id for j, _ in self.cancelled))


@dataclass
class Process:
    """One bot process-equivalent: store, output folder, clients, scheduler."""

    store: Store
    outputs: OutputFolder
    clients: list[ComfyClient]
    scheduler: Scheduler
    notifier: RecordingNotifier
    fakes: list[FakeComfyUI] = field(default_factory=list)
    closed: bool = False

    def backend(self, fake: FakeComfyUI) -> Backend:
        (backend,) = [b for b in self.scheduler.pool.backends if b.client.base_url == fake.url]
        return backend

    def label(self, fake: FakeComfyUI) -> str:
        """What people are shown for this server (the client's name)."""
        return self.backend(fake).client.name

    def server(self, name: str | None) -> FakeComfyUI | None:
        """The fake a stored server name (job.server, generation.server) refers to: a URL or a label."""
        for backend in self.scheduler.pool.backends:
            if name in (backend.name, backend.client.name, backend.client.base_url):
                return next((fake for fake in self.fakes if fake.url == backend.client.base_url), None)
        return None

    async def submit(self, user_id: int, prompt: str = "x", *, guild_id: int | None = 1, priority: int = 0,
                     **request: Any) -> Job:
        body = {"prompt": prompt, "width": 64, "height": 64, **request}
        return await self.scheduler.submit(Job(id=None, kind="txt2img", user_id=user_id, channel_id=1,
                                               guild_id=guild_id, request=body, priority=priority))

    async def wait_healthy(self, count: int | None = None, timeout: float = 10.0) -> None:
        backends = self.scheduler.pool.backends
        wanted = len(backends) if count is None else count
        await wait_until(lambda: sum(b.healthy for b in backends) >= wanted, timeout,
                         f"{wanted} healthy servers (have {[(b.name, b.healthy) for b in backends]})")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.scheduler.close()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await self.store.close()


@dataclass
class PoolRig:
    """Fake ComfyUI servers and the bot processes built on them; `close()` ends everything."""

    tmp_path: Path
    fakes: list[FakeComfyUI] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    settings: Settings | None = None

    async def add_fake(self, **options: Any) -> FakeComfyUI:
        fake = FakeComfyUI(name=f"fake{len(self.fakes)}", **options)
        await fake.start()
        self.fakes.append(fake)
        return fake

    def configure(self, urls: list[str] | None = None, **overrides: Any) -> Settings:
        urls = urls if urls is not None else [fake.url for fake in self.fakes]
        # the scheduler now holds JOBS_PER_USER itself; these tests queue many jobs for one user
        self.settings = make_settings(self.tmp_path, comfyui_urls=urls, **{"jobs_per_user": 100, **overrides})
        return self.settings

    async def start(self, notifier: RecordingNotifier | None = None, *, healthy: int | None = None,
                    **client_options: Any) -> Process:
        """A new process on the rig's data folder; waits until `healthy` servers (default all) are up.
        `client_options` override the clients' short test bounds (TEST_CLIENT)."""
        settings = self.settings or self.configure()
        store = Store(settings.data_dir / "bot.sqlite3")
        await store.open()
        outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
        await outputs.open()
        backends = await open_backends(settings, load_set(settings.workflow_dir()), outputs, instance=INSTANCE,
                                       **{**TEST_CLIENT, **client_options})  # client ids test-<index>: the same after a restart
        clients = [backend.client for backend in backends]
        notifier = notifier or RecordingNotifier()
        scheduler = Scheduler(store, backends, outputs, settings, notifier, instance=INSTANCE)
        process = Process(store, outputs, clients, scheduler, notifier, self.fakes)
        self.processes.append(process)
        await scheduler.start()
        if healthy != 0:
            await process.wait_healthy(healthy)
        return process

    async def close(self) -> list[str]:
        """Stop every process and fake; returns what the fakes could not handle (should be [])."""
        for process in self.processes:
            await process.close()
        unhandled = []
        for fake in self.fakes:
            await fake.stop()
            unhandled += fake.unhandled
        return unhandled
