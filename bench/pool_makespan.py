"""Pool benchmark: the scheduler over 4 fake ComfyUI servers of different speeds.

200 jobs from 20 users (10 each, submitted at once) run through the real
scheduler, clients, runner and output folder. A job's work is one node whose
duration is the server's speed. Prints:
- the makespan (first submit -> last result delivered) against the ideal
  (total work / total capacity = jobs / sum of each server's jobs per second);
- the idle gap on each server between one job's end (`executing null` sent)
  and the next job's start (`execution_start` sent): p50, p95, max;
- how evenly users waited: each user's mean wait (submit -> start), min/max;
- the memory the scheduler holds with 1,000 waiting jobs (tracemalloc).

    python bench/pool_makespan.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import logs  # noqa: E402
from bench.engine_latency import percentile  # noqa: E402
from comfy.client import ComfyClient  # noqa: E402
from config import Settings  # noqa: E402
from results.folder import OutputFolder  # noqa: E402
from backends.pool import open_backends  # noqa: E402
from jobs.scheduler import Scheduler  # noqa: E402
from store import Job, Store  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402
from comfy.workflows import load_set  # noqa: E402

SPEEDS = (0.040, 0.060, 0.080, 0.120)  # seconds of work per job on each server
USERS, PER_USER = 20, 10


class Recorder:
    """Stands in for Discord: notes when each job was delivered."""

    def __init__(self) -> None:
        self.delivered: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.all_done = asyncio.Event()
        self.expected = 0

    async def job_queued(self, job: Job, position: int, giving_up_in: float | None = None,
                         eta: float | None = None) -> None:
        pass

    async def job_starting(self, job: Job) -> None:
        pass

    async def job_progress(self, job: Job, event: Any) -> None:
        pass

    async def deliver(self, job: Job, generation: Any, files: list[Path]) -> tuple[int, list[str]]:
        self.delivered[job.id] = time.perf_counter()
        self._check()
        return job.id, []

    async def job_failed(self, job: Job, reason: str) -> None:
        self.failed[job.id] = reason
        self._check()

    async def job_cancelled(self, job: Job, by_user_id: int) -> None:
        pass

    def _check(self) -> None:
        if len(self.delivered) + len(self.failed) >= self.expected:
            self.all_done.set()


async def build(scratch: Path, fakes: list[FakeComfyUI], recorder: Recorder) -> tuple[Scheduler, Store, list[ComfyClient]]:
    settings = Settings(_env_file=None, comfyui_urls=[fake.url for fake in fakes], workflow_set="selftest",
                        workflows_dir=ROOT / "workflows", outputs_dir=scratch / "outputs", data_dir=scratch / "data",
                        output_limit=1000, waiting_per_guild=10_000, jobs_per_user=100)  # the scheduler holds the limit: 50 a user here
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
    await outputs.open()
    backends = await open_backends(settings, load_set(settings.workflow_dir()), outputs, instance="bench")
    clients = [backend.client for backend in backends]
    scheduler = Scheduler(store, backends, outputs, settings, recorder, instance="bench")
    await scheduler.start()
    async with asyncio.timeout(10):
        while not all(backend.healthy for backend in backends):
            await asyncio.sleep(0.01)
    return scheduler, store, clients


async def teardown(scheduler: Scheduler, store: Store, clients: list[ComfyClient]) -> None:
    await scheduler.close()
    for client in clients:
        await client.close()
    await store.close()


def job(user: int, index: int) -> Job:
    return Job(id=None, kind="txt2img", user_id=user, channel_id=1, guild_id=1,
               request={"prompt": f"user {user} job {index}", "width": 64, "height": 64, "seed": user * 100 + index})


async def makespan(scratch: Path) -> None:
    fakes = [FakeComfyUI(node_delays={"ImageAddNoise": speed}, name=f"s{speed}") for speed in SPEEDS]
    for fake in fakes:
        await fake.start()
    recorder = Recorder()
    recorder.expected = USERS * PER_USER
    scheduler, store, clients = await build(scratch, fakes, recorder)
    submitted: dict[int, tuple[int, float]] = {}
    began = time.perf_counter()
    for index in range(PER_USER):
        for user in range(USERS):
            accepted = await scheduler.submit(job(user, index))
            submitted[accepted.id] = (user, time.perf_counter())
    async with asyncio.timeout(120):
        await recorder.all_done.wait()
    finished = max(recorder.delivered.values())
    await teardown(scheduler, store, clients)
    span = finished - began
    runs_by_server = [sorted((fake.start_sent[pid], fake.end_sent[pid], pid) for pid in fake.start_sent if pid in fake.end_sent)
                      for fake in fakes]
    # a server's capacity is its measured service rate: the fake's own work per job adds to the node delay
    service = [statistics.mean(end - start for start, end, _ in runs) for runs in runs_by_server]
    ideal = len(submitted) / sum(1 / seconds for seconds in service)
    nominal = len(submitted) / sum(1 / speed for speed in SPEEDS)
    print(f"makespan: {span:.3f} s for {len(submitted)} jobs on {len(SPEEDS)} servers; ideal {ideal:.3f} s "
          f"(measured service {', '.join(f'{s * 1000:.1f}' for s in service)} ms a job); "
          f"{(span / ideal - 1) * 100:+.1f}% over ideal (nominal {', '.join(f'{s * 1000:.0f}' for s in SPEEDS)} ms: "
          f"{nominal:.3f} s, {(span / nominal - 1) * 100:+.1f}%); jobs per server "
          f"{', '.join(str(len(runs)) for runs in runs_by_server)}; failed: {len(recorder.failed)}")
    gaps, waits = [], {user: [] for user in range(USERS)}
    for fake, runs in zip(fakes, runs_by_server):
        gaps += [(start - previous_end) * 1000 for (_, previous_end, _), (start, _, _) in zip(runs, runs[1:])]
        for start, _, pid in runs:
            job_id = int(pid.split("-")[1])
            user, at = submitted[job_id]
            waits[user].append(start - at)
        await fake.stop()
    print(f"idle gap between jobs on a server ({len(gaps)} gaps): p50 {statistics.median(gaps):.2f} ms, "
          f"p95 {percentile(gaps, 0.95):.2f} ms, max {max(gaps):.2f} ms")
    means = [statistics.mean(values) for values in waits.values()]
    print(f"waiting time by user (mean of each user's {PER_USER} jobs): min {min(means):.2f} s, "
          f"max {max(means):.2f} s, spread {max(means) - min(means):.2f} s; overall mean {statistics.mean(means):.2f} s")


async def memory(scratch: Path) -> None:
    fake = FakeComfyUI()
    await fake.start()
    fake.pause()
    recorder = Recorder()
    recorder.expected = 10**9
    scheduler, store, clients = await build(scratch, [fake], recorder)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for index in range(1000):
        await scheduler.submit(job(index % USERS, index))
    await asyncio.sleep(1.0)  # let the position loop run over the full queue
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    waiting = sum(1 for _ in scheduler.waiting_jobs())
    print(f"memory with {waiting} waiting jobs: +{grown / 1024 / 1024:.2f} MiB held by the process "
          f"({grown / max(waiting, 1) / 1024:.2f} KiB a job)")
    await teardown(scheduler, store, clients)
    fake.resume()
    await fake.stop()


async def main() -> None:
    logs.configure("error")
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        await makespan(Path(first))
        await memory(Path(second))


if __name__ == "__main__":
    asyncio.run(main())
