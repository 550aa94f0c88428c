"""RunPod overflow: 500 jobs from 50 people (10 each, submitted at once) through the real scheduler on
4 local fake ComfyUI servers (40, 60, 80 and 120 ms a job) and one fake RunPod endpoint of 20 workers
(2 s a job, polled each second as the bot does). Prints:

- the makespan against the ideal for that capacity (all jobs / the sum of every server's jobs a second);
- the share of jobs that overflowed to RunPod, and when the first one did;
- the process's CPU time per RunPod job, from a run of RunPod jobs alone (it includes the fake's own
  work, as both run in this process), and the event loop's worst lag meanwhile (the base64 work is
  done in threads).

    python bench/runpod_overflow.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import logs  # noqa: E402
from bench.pool_makespan import Recorder, job, teardown  # noqa: E402
from config import RunPodEndpoint, Settings  # noqa: E402
from results.folder import OutputFolder  # noqa: E402
from backends.pool import open_backends  # noqa: E402
from jobs.scheduler import Scheduler  # noqa: E402
from store import Store  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402
from tests.fakes.runpod import FakeRunPod  # noqa: E402
from comfy.workflows import load_set  # noqa: E402

SPEEDS = (0.040, 0.060, 0.080, 0.120)
WORKERS, REMOTE_SECONDS = 20, 2.0
USERS, PER_USER = 50, 10


class Counting(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[int, str] = {}
        self.first_remote: float | None = None

    async def deliver(self, job: Any, generation: Any, files: list[Path]) -> tuple[int, list[str]]:
        self.servers[job.id] = generation.server
        if generation.server == "RunPod" and self.first_remote is None:
            self.first_remote = time.perf_counter()
        return await super().deliver(job, generation, files)


async def run(scratch: Path, local: list[FakeComfyUI], remote: FakeRunPod, jobs: int, recorder: Counting,
              overflow_after: float) -> tuple[float, float, float]:
    endpoint = RunPodEndpoint(endpoint_id=remote.endpoint_id, api_key=remote.api_key, base_url=remote.base_url,
                              models=["v1-5-pruned-emaonly.safetensors"], concurrency=WORKERS)
    settings = Settings(_env_file=None, comfyui_urls=[fake.url for fake in local] or ["http://127.0.0.1:9"],
                        workflow_set="selftest", workflows_dir=ROOT / "workflows", outputs_dir=scratch / "outputs",
                        data_dir=scratch / "data", output_limit=2000, waiting_per_guild=10_000, jobs_per_user=100,
                        runpod_endpoints=[endpoint], runpod_overflow_after=overflow_after, server_grace=600)
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
    await outputs.open()
    backends = await open_backends(settings, load_set(settings.workflow_dir()), outputs, instance="bench",
                                   store=store)
    scheduler = Scheduler(store, backends, outputs, settings, recorder, instance="bench")
    await scheduler.start()
    async with asyncio.timeout(10):
        while not all(backend.healthy for backend in backends if backend.remote or local):
            await asyncio.sleep(0.01)
    recorder.expected = jobs
    lag, stop = [0.0], asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            lag[0] = max(lag[0], time.perf_counter() - began - 0.005)

    watcher = asyncio.create_task(watch())
    cpu, began = time.process_time(), time.perf_counter()
    for index in range(jobs // USERS if jobs >= USERS else 1):
        for user in range(min(USERS, jobs)):
            await scheduler.submit(job(user, index))
    async with asyncio.timeout(300):
        await recorder.all_done.wait()
    span, used = max(recorder.delivered.values()) - began, time.process_time() - cpu
    stop.set()
    await watcher
    await teardown(scheduler, store, [backend.client for backend in backends])
    return span, used, lag[0]


async def main() -> None:
    logs.configure("error")
    local = [FakeComfyUI(node_delays={"ImageAddNoise": speed}, name=f"s{speed}") for speed in SPEEDS]
    remote = FakeRunPod(execution_time=REMOTE_SECONDS)
    remote.workers = WORKERS
    remote.rate_limits = {}
    for fake in local:
        await fake.start()
    await remote.start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            recorder = Counting()
            jobs = USERS * PER_USER
            span, _, _ = await run(Path(scratch), local, remote, jobs, recorder, overflow_after=1.0)
        rate = sum(1 / speed for speed in SPEEDS) + WORKERS / (REMOTE_SECONDS + 1.0)  # + a poll
        remote_jobs = sum(1 for server in recorder.servers.values() if server == "RunPod")
        print(f"makespan: {span:.2f} s for {jobs} jobs on 4 local servers and a RunPod endpoint of {WORKERS} "
              f"workers; ideal {jobs / rate:.2f} s ({span / (jobs / rate) * 100 - 100:+.0f}%); overflowed to RunPod: "
              f"{remote_jobs} jobs ({remote_jobs / jobs:.0%}); failed: {len(recorder.failed)}")
        with tempfile.TemporaryDirectory() as scratch:
            only = Counting()
            span, cpu, lag = await run(Path(scratch), [], remote, 100, only, overflow_after=1.0)
        print(f"RunPod path alone: 100 jobs in {span:.2f} s; process CPU {cpu / 100 * 1000:.1f} ms a job "
              f"(bot and fake together); event loop lag max {lag * 1000:.1f} ms")
    finally:
        for fake in local:
            await fake.stop()
        await remote.stop()


if __name__ == "__main__":
    asyncio.run(main())
