"""Whole-bot benchmark: the real bot, as its own process, between the fake Discord and the fake ComfyUI.

The bot runs through bench/launch_bot.py (the code path of `python bot.py`, settings from the
environment: selftest workflows, data and outputs in a temp folder, the rate and job limits at their
maxima); both fakes run here, on 127.0.0.1, so the memory measured is the bot's alone. Every time
below is stamped in this process by the fakes, on one clock (`perf_counter` and `monotonic` are the
same clock on Linux; checked at start). Prints:
- interaction -> acknowledgement: the fake Discord sends INTERACTION_CREATE -> it accepts the bot's
  interaction callback;
- interaction -> prompt at ComfyUI: INTERACTION_CREATE sent -> the fake ComfyUI handles that job's
  POST /prompt;
- end of prompt -> result on Discord: the fake ComfyUI sends `executing null` -> the fake Discord
  stores the new message that carries the result's attachment (a 1 MiB noise PNG, under the
  interaction's attachment_size_limit, so nothing is refitted);
  these three over `--latency-jobs` /generate jobs one at a time, then again with `--concurrency`
  in flight (SERVER_CAPACITY raised to match, so no job waits in the bot's own queue), after a warm-up;
- the bot's memory (VmRSS of its process), on a fresh bot: at start, after `--jobs` /generate jobs
  and after `--clicks` clicks on Upscale 2x/4x and Animate of those results (64x64 outputs; most
  of the files are pruned by then, so the bot fetches them from the fake's CDN), and the growth per
  1,000 jobs and per 1,000 clicks, overall and over the second half of each run (past the warm-up).

`--diagnose` adds where the time goes (from the fakes' request arrival times), CPU use, memory
after each tenth of the jobs and clicks, and what grew inside the bot (see launch_bot.py). With
BENCH_PROFILE=<path> set, the bot runs under cProfile and writes <path>.latency and <path>.memory.

    python bench/bot_latency.py [--latency-jobs 200] [--jobs 1000] [--clicks 10000] [--concurrency 8] [--diagnose]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bot_jobs import generate, in_flight  # noqa: E402
from bench.bot_memory import memory_phase  # noqa: E402
from bench.bot_process import BenchError, Bot, check_fakes, cpu_seconds, running_bot  # noqa: E402
from bench.engine_latency import png_of_about, percentile  # noqa: E402
from config import MIB  # noqa: E402
from tests.fakes.discord import Interaction, Message  # noqa: E402


def summary(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, max {max(ms):.2f} ms"


class LoopLag:
    """How late this process's event loop wakes up (it runs both fakes, so it stamps their times)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.lags = interval, []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - asked - self.interval)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._task.cancel()


@dataclass
class Timings:
    """The three latencies of one run of timed jobs, s, and what the --diagnose lines need."""

    concurrency: int
    acks: list[float] = field(default_factory=list)
    to_prompt: list[float] = field(default_factory=list)
    to_result: list[float] = field(default_factory=list)
    timed: list[tuple[Interaction, str, Message]] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)


async def timed_jobs(bot: Bot, first: int, jobs: int, concurrency: int, output: bytes, limit: int) -> Timings:
    timings = Timings(concurrency)

    async def job(index: int) -> None:
        interaction, message = await generate(bot, first + index, limit)
        if message is None:
            return
        prompt_id = next(pid for pid, body in reversed(bot.comfy.prompts.items())
                         if body["prompt"]["4"]["inputs"]["string_a"] == f"bench {first + index}")
        posted = next(entry for entry in message.history if entry["files"])  # the post carrying the result
        if posted["files"][0]["size"] != len(output):
            bot.failures.append(f"job {first + index}: the result was refitted ({posted['files'][0]['size']} bytes)")
        timings.acks.append(interaction.ack_latency)
        timings.to_prompt.append(bot.comfy.prompt_received[prompt_id] - interaction.created_monotonic)
        timings.to_result.append(posted["time"] - bot.comfy.end_sent[prompt_id])
        timings.timed.append((interaction, prompt_id, message))

    diagnose = bool(os.environ.get("_BENCH_DIAGNOSE"))
    bot_cpu, own_cpu, began = cpu_seconds(bot.pid), time.process_time(), time.perf_counter()
    with LoopLag() if diagnose else contextlib.nullcontext() as lag:
        await in_flight(jobs, concurrency, job)
    wall = time.perf_counter() - began
    bot_cpu, own_cpu = cpu_seconds(bot.pid) - bot_cpu, time.process_time() - own_cpu
    if diagnose:
        timings.diagnosis = [
            f"{concurrency} in flight: {jobs / wall:.1f} jobs/s; CPU: bot {bot_cpu / wall:.0%} of a core "
            f"({bot_cpu / jobs * 1000:.1f} ms per job), this process (both fakes) {own_cpu / wall:.0%}; "
            f"this process's loop lag {summary([v * 1000 for v in lag.lags])}",
            *breakdown(bot, timings.timed),
        ]
    return timings


async def latency_phase(jobs: int, concurrency: int) -> list[str]:
    """The same jobs one at a time, then `concurrency` at a time, on one bot."""
    output = png_of_about(MIB)
    limit = 8 * MIB  # the interaction's attachment_size_limit, above the output: posted as it is
    runs: list[Timings] = []
    # SERVER_CAPACITY: every job in flight has its prompt at ComfyUI at once, so the figures are the bot's
    # own latency under load, not the time a job waits in the bot's fair queue (default: 2 per server)
    async with running_bot(output, "latency", SERVER_CAPACITY=str(min(16, max(2, concurrency)))) as bot:
        for index in range(5):  # warm-up: first connections, first imports
            await generate(bot, 10**6 + index, limit)
        for level in sorted({1, concurrency}):
            runs.append(await timed_jobs(bot, len(runs) * jobs, jobs, level, output, limit))
        check_fakes(bot)
    if not all(run.acks for run in runs):
        raise BenchError("no job produced a result")

    def line(title: str, pick: Callable[[Timings], list[float]]) -> str:
        return f"{title}: " + "; ".join(
            f"{summary([v * 1000 for v in pick(run)])} ({'one' if run.concurrency == 1 else run.concurrency} in flight)"
            for run in runs)

    mib = len(output) / MIB
    return [*(text for run in runs for text in run.diagnosis),
            line(f"interaction -> acknowledgement ({jobs} /generate jobs)", lambda run: run.acks),
            line(f"interaction -> prompt at ComfyUI ({jobs} /generate jobs)", lambda run: run.to_prompt),
            line(f"end of prompt -> result on Discord ({jobs} /generate jobs, {mib:.2f} MiB PNG)",
                 lambda run: run.to_result)]


def breakdown(bot: Bot, timed: list[tuple[Interaction, str, Message]]) -> list[str]:
    """Where the time of each figure goes, from the requests as the fakes received them (arrival times)."""
    comfy_posts = {r["json"]["prompt_id"]: r["time"] for r in bot.comfy.requests
                   if r["method"] == "POST" and r["path"] in ("/prompt", "/api/prompt") and isinstance(r["json"], dict)
                   and "prompt_id" in r["json"]}
    views: dict[str, float] = {}
    for r in bot.comfy.requests:
        if r["path"] in ("/view", "/api/view"):
            views.setdefault(r["query"].get("filename", ""), r["time"])
    steps: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        steps.setdefault(name, []).append(seconds * 1000)

    for interaction, prompt_id, message in timed:
        add("INTERACTION_CREATE -> callback accepted", interaction.ack_latency)
        add("callback accepted -> POST /prompt arrives", comfy_posts[prompt_id] - interaction.acked_at)
        add("POST /prompt arrives -> handled", bot.comfy.prompt_received[prompt_id] - comfy_posts[prompt_id])
        history = bot.comfy._history.get(prompt_id)
        names = [image["filename"] for output in (history or {}).get("outputs", {}).values()
                 for image in output.get("images", [])]
        end = bot.comfy.end_sent[prompt_id]
        if names and names[0] in views:
            add("executing null -> GET /view arrives", views[names[0]] - end)
            add("GET /view arrives -> result message posted",
                next(e["time"] for e in message.history if e["files"]) - views[names[0]])
    return [f"  {name}: {summary(values)}" for name, values in steps.items()]


async def main(arguments: argparse.Namespace) -> int:
    perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
    if perf.implementation != mono.implementation:
        print(f"bench failed: perf_counter ({perf.implementation}) and monotonic ({mono.implementation}) differ, "
              "so the fakes' timestamps cannot be compared", file=sys.stderr)
        return 1
    if arguments.diagnose:
        os.environ["_BENCH_DIAGNOSE"] = "1"
    # SIGTERM: stop as on Ctrl-C, through the `finally`s that stop the bot and remove its folder
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          "(the bot, both fakes and anything else running share them)", flush=True)
    try:
        if arguments.latency_jobs:
            for line in await latency_phase(arguments.latency_jobs, arguments.concurrency):
                print(line, flush=True)
        if arguments.jobs:
            for line in await memory_phase(arguments.jobs, arguments.clicks, arguments.concurrency):
                print(line, flush=True)
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("bench stopped (SIGTERM); the bot was stopped", file=sys.stderr)
        return 143
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs timed with a 1 MiB result (0: skip)")
    parser.add_argument("--jobs", type=int, default=1000, help="/generate jobs before the clicks (0: skip memory)")
    parser.add_argument("--clicks", type=int, default=10000, help="Upscale/Animate clicks on those results")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs in flight")
    parser.add_argument("--diagnose", action="store_true", help="also print where the time goes, CPU use, and what grew inside the bot")
    sys.exit(asyncio.run(main(parser.parse_args())))
