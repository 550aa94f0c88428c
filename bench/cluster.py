"""Cluster benchmark: the bot as real processes (bench/launch_bot.py) over the fake Discord and four fake
ComfyUIs (tests/e2e/cluster_harness.py), on SQLite with one process, PostgreSQL with one process and
PostgreSQL with three (the end-to-end test's layout: SHARD_COUNT=3, two guilds). Prints:
- queued -> prompt at ComfyUI, p50 and p95: the fake ComfyUI's receive time minus the moment the
  /generate was sent, for 40 jobs at most 2 at a time (the queue's own path, no backlog);
- jobs per second through the queue: 200 jobs from 20 people, up to 50 in flight, first send -> last result;
- failover (PostgreSQL, three processes), over 10 SIGKILLs of the leader while jobs wait: kill -> the
  lease taken by another process, and kill -> the first prompt the new leader sends, p50 and max;
- resident memory (VmRSS) of each process after the jobs.

    python bench/cluster.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bot_process import rss_mib  # noqa: E402
from bench.engine_latency import percentile  # noqa: E402
from tests.e2e.cluster_harness import LAYOUT, Cluster, running_cluster, until  # noqa: E402
from tests.e2e.people import Sent, dispatch_order, finished, send  # noqa: E402

SETTINGS = {"JOBS_PER_USER": "100", "COMMANDS_PER_MINUTE": "600", "LOG_LEVEL": "warning"}  # nothing refused
NODE_DELAY = 0.02  # seconds of "GPU" per job on each fake: the bot, not the fakes, sets the pace
LATENCY_JOBS, THROUGHPUT_JOBS, PEOPLE, IN_FLIGHT = 40, 200, 20, 50
KILLS = 10
JOB_TIMEOUT = 120.0
STALE = 0.02  # seconds after a kill in which a prompt received may still be the dead leader's last bytes


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def jobs(cluster: Cluster, count: int, concurrency: int, tag: str, guilds: list | None = None,
               failed: list[str] | None = None) -> list[Sent]:
    """`count` /generate from PEOPLE people, spread over the guilds, at most `concurrency` at once; each
    waited for until its result. Returns them as sent. A job that ends without a result stops the run,
    or with `failed` is noted there."""
    gate = asyncio.Semaphore(concurrency)
    guilds = guilds or cluster.guilds
    sents: list[Sent] = []

    async def one(index: int) -> None:
        person = index % PEOPLE
        async with gate:
            sent = await send(cluster.discord, person, f"e2e p{person:02d} n{tag}{index}",
                              guilds[person % len(guilds)])
            sents.append(sent)
            kind, message = await finished(cluster.discord, sent, JOB_TIMEOUT)
            if kind != "result" and failed is not None:
                failed.append(f"{sent.text}: {message.content}")
            elif kind != "result":
                raise RuntimeError(f"{sent.text}: {message.content}\n{cluster.logs()}")

    await asyncio.gather(*(one(index) for index in range(count)))
    return sents


def queued_to_prompt(cluster: Cluster, sents: list[Sent]) -> list[float]:
    """For each job sent: its prompt's receive time at a fake ComfyUI minus its send time."""
    received = {}
    for prompt in dispatch_order(cluster.comfys):
        if prompt.text is not None:
            received.setdefault(prompt.text, prompt.received)
    return [received[sent.text] - sent.sent_at for sent in sents]


async def scenario(name: str, **options) -> None:
    async with running_cluster(node_delay=NODE_DELAY, **options, **SETTINGS) as cluster:
        sents = await jobs(cluster, LATENCY_JOBS, 2, "lat")
        delays = queued_to_prompt(cluster, sents)
        began = time.perf_counter()
        await jobs(cluster, THROUGHPUT_JOBS, IN_FLIGHT, "thr")
        took = time.perf_counter() - began
        memory = ", ".join(f"{bot.name} {rss_mib(bot.pid):.0f} MiB" for bot in cluster.bots.values())
        print(f"{name}: queued -> prompt at ComfyUI p50 {ms(statistics.median(delays))}, "
              f"p95 {ms(percentile(delays, 0.95))} ({LATENCY_JOBS} jobs, 2 at a time); "
              f"{THROUGHPUT_JOBS / took:.1f} jobs/s ({THROUGHPUT_JOBS} jobs from {PEOPLE} people, {IN_FLIGHT} in flight, "
              f"{took:.1f} s); VmRSS {memory}", flush=True)
        problems = cluster.check_fakes()
        if problems:
            raise RuntimeError(f"{len(problems)} problem(s): {problems[:5]}")


async def failover() -> None:
    """Kill the leader KILLS times while a burst of jobs waits; restart it each time."""
    to_lease, to_prompt, failed = [], [], []
    async with running_cluster(LAYOUT, node_delay=NODE_DELAY, **SETTINGS) as cluster:
        for round_ in range(KILLS):
            leader = await cluster.wait_leader(60)
            before = sum(len(fake.prompts) for fake in cluster.comfys)
            # through the other processes only: a command inside the process killed is lost with it
            others = [guild for guild in cluster.guilds if cluster.bot_of(guild).name != leader]
            burst = asyncio.ensure_future(jobs(cluster, 20, 20, f"kill{round_}-", others, failed))
            await until(lambda: sum(len(fake.prompts) for fake in cluster.comfys) >= before + 4, 60, "no prompts")
            await cluster.bots[leader].kill()
            killed = time.perf_counter()
            while await cluster.lease_holder() in (None, leader):
                if time.perf_counter() - killed > 60:
                    raise RuntimeError(f"no process took the lease\n{cluster.logs()}")
                await asyncio.sleep(0.005)
            to_lease.append(time.perf_counter() - killed)
            first = await until(lambda: min((p.received for p in dispatch_order(cluster.comfys)
                                             if p.received > killed + STALE), default=None), 60, "no prompt after the kill")
            to_prompt.append(first - killed)
            await burst
            await cluster.bots[leader].start()
            await cluster.wait_connected(cluster.bots[leader])
        memory = ", ".join(f"{bot.name} {rss_mib(bot.pid):.0f} MiB" for bot in cluster.bots.values())
    print(f"failover over {KILLS} SIGKILLs of the leader (PostgreSQL, 3 processes): kill -> lease taken "
          f"p50 {ms(statistics.median(to_lease))}, max {ms(max(to_lease))}; kill -> first prompt from the new "
          f"leader p50 {ms(statistics.median(to_prompt))}, max {ms(max(to_prompt))}; jobs that failed: "
          f"{len(failed)} of {20 * KILLS}; VmRSS after {KILLS} restarts {memory}", flush=True)
    for line in failed:
        print(f"  failed: {line[:300]}")


async def main() -> None:
    began = time.monotonic()
    solo = (("solo", None),)
    await scenario("SQLite, 1 process", layout=solo, shard_count=None, postgres=False, web=None)
    await scenario("PostgreSQL, 1 process", layout=solo, shard_count=None, web=None)
    await scenario("PostgreSQL, 3 processes", start_order=("bot-a",))
    await failover()
    print(f"(benchmark ran {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
