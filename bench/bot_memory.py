"""The memory phase of bench/bot_latency.py: a fresh bot, its VmRSS at start, after `--jobs` /generate
jobs and after `--clicks` clicks on Upscale 2x/4x and Animate of those results, and the growth per 1,000
(with --diagnose: throughput, CPU, and what grew inside the bot).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from PIL import Image

from bench.bot_jobs import USERS, click, generate, in_flight
from bench.bot_process import check_fakes, cpu_seconds, rss_mib, running_bot
from bench.engine_latency import percentile
from config import MIB
from tests.fakes.discord import Message

SETTLE = 1.0  # seconds of quiet before reading the memory


def small_png(side: int = 64) -> bytes:
    """A `side` x `side` gradient PNG of a few hundred bytes."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Sample:
    """The bot after a block of jobs or clicks, with nothing in flight."""

    kind: str  # "jobs" | "clicks"
    done: int
    rss: float  # MiB
    seconds: float  # the block's wall time, without the settling
    acks: list[float]  # the block's interaction -> acknowledgement, s
    database: int  # bytes of the bot's SQLite files
    bot_cpu: float  # CPU seconds the bot used in the block
    own_cpu: float  # CPU seconds this process (both fakes) used in the block
    load: float  # the machine's 1-minute load average


async def memory_phase(jobs: int, clicks: int, concurrency: int) -> list[str]:
    """A fresh bot: `jobs` /generate, then `clicks` Upscale 2x/4x and Animate clicks on those results."""
    results: list[Message | None] = [None] * jobs
    samples: list[Sample] = []
    acks: list[float] = []
    async with running_bot(small_png(), "memory") as bot:

        async def settle() -> float:
            await asyncio.sleep(SETTLE)
            bot.alive()
            return rss_mib(bot.pid)

        def checkpoint(kind: str) -> Callable[[int], Awaitable[None]]:
            async def sample(done: int) -> None:
                seconds = time.perf_counter() - block_began[0]
                bot_cpu, own_cpu = cpu_seconds(bot.pid) - block_began[1], time.process_time() - block_began[2]
                database = sum(path.stat().st_size for path in (bot.folder / "data").glob("bot.sqlite3*"))
                load = os.getloadavg()[0]
                samples.append(Sample(kind, done, await settle(), seconds, list(acks), database, bot_cpu, own_cpu, load))
                acks.clear()
                block_began[:] = [time.perf_counter(), cpu_seconds(bot.pid), time.process_time()]
            return sample

        start = await settle()
        objects = [await bot.object_counts()]

        async def generated(index: int) -> None:
            interaction, results[index] = await generate(bot, index, 8 * MIB)
            acks.append(interaction.ack_latency)

        block_began = [time.perf_counter(), cpu_seconds(bot.pid), time.process_time()]
        await in_flight(jobs, concurrency, generated, every=max(1, jobs // 10), checkpoint=checkpoint("jobs"))
        objects.append(await bot.object_counts())
        targets = [message for message in results if message is not None]
        kinds = ("up2", "up4", "anim")

        async def clicked(index: int) -> None:
            message = targets[index % len(targets)]  # every earlier result in turn, oldest first
            generation = next(cid.split(":")[2] for cid in message.custom_ids if cid.startswith("cf:up:"))
            custom_id = {"up2": f"cf:up:{generation}:0:2", "up4": f"cf:up:{generation}:0:4",
                         "anim": f"cf:anim:{generation}:0"}[kinds[index % len(kinds)]]
            interaction, _ = await click(bot, index, message.id, custom_id)
            acks.append(interaction.ack_latency)

        block_began = [time.perf_counter(), cpu_seconds(bot.pid), time.process_time()]
        if clicks and targets:
            await in_flight(clicks, concurrency, clicked, every=max(1, clicks // 10), checkpoint=checkpoint("clicks"))
        objects.append(await bot.object_counts())
        uploads = sum(1 for kind, _, _ in bot.comfy.files if kind == "input")
        check_fakes(bot)
    after_jobs = [sample for sample in samples if sample.kind == "jobs"][-1].rss
    end = samples[-1].rss
    jobs_time = sum(sample.seconds for sample in samples if sample.kind == "jobs")
    clicks_time = sum(sample.seconds for sample in samples if sample.kind == "clicks")
    lines = [
        f"bot memory (VmRSS of its process): at start {start:.1f} MiB, after {jobs:,} jobs {after_jobs:.1f} MiB, "
        f"after {clicks:,} button clicks {end:.1f} MiB",
        f"bot memory growth: {per_thousand(start, after_jobs, jobs):+.2f} MiB per 1,000 jobs "
        f"(second half alone: {half_slope(samples, 'jobs'):+.2f}), "
        f"{per_thousand(after_jobs, end, max(1, clicks)):+.2f} MiB per 1,000 clicks "
        f"(second half alone: {half_slope(samples, 'clicks'):+.2f})",
    ]
    if os.environ.get("_BENCH_DIAGNOSE"):
        lines.append(
            f"throughput: {jobs:,} jobs in {jobs_time:.1f} s = {jobs / jobs_time:.1f} jobs/s, {clicks:,} clicks in "
            f"{clicks_time:.1f} s = {clicks / max(clicks_time, 1e-9):.1f} clicks/s ({concurrency} in flight, "
            f"{USERS} users); files the bot left in ComfyUI's input folder: {uploads:,}")
        lines.append("after each block: " + "; ".join(
            f"{sample.kind} {sample.done}: {sample.rss:.1f} MiB, db {sample.database / MIB:.1f} MiB, "
            f"{len(sample.acks) / sample.seconds:.0f}/s, ack p95 {percentile(sample.acks, 0.95) * 1000:.1f} ms, "
            f"CPU per job: bot {sample.bot_cpu / len(sample.acks) * 1000:.1f} ms, fakes "
            f"{sample.own_cpu / len(sample.acks) * 1000:.1f} ms, load {sample.load:.1f}"
            for sample in samples if sample.acks))
        lines.extend(object_growth(objects))
    return lines


def per_thousand(before: float, after: float, count: int) -> float:
    return (after - before) / count * 1000


def half_slope(samples: list[Sample], kind: str) -> float:
    """MiB per 1,000 between the middle sample and the last one of that kind (past the warm-up)."""
    points = [(sample.done, sample.rss) for sample in samples if sample.kind == kind]
    if len(points) < 2:
        return 0.0
    middle, last = points[len(points) // 2 - 1], points[-1]
    return per_thousand(middle[1], last[1], max(1, last[0] - middle[0]))


def object_growth(objects: list[dict[str, int] | None]) -> list[str]:
    start, after_jobs, end = objects
    lines = ["inside the bot (start, after jobs, after clicks): " + "; ".join(
        f"{key[1:]} " + ", ".join(f"{counts.get(key, 0):,}" for counts in objects)
        for key in ("@python_blocks", "@sqlite_bytes", "@threads"))]
    held = sorted(key for key in objects[-1] if key.startswith("#") and objects[-1][key] != objects[0].get(key, 0))
    lines.append("collections in the bot that changed size (start, after jobs, after clicks): " + "; ".join(
        f"{key[1:]} " + ", ".join(f"{counts.get(key, 0):,}" for counts in objects) for key in held))
    start, after_jobs, end = ({k: v for k, v in counts.items() if k[0] not in "@#"} for counts in objects)
    for title, before, after in (("start -> after jobs", start, after_jobs), ("after jobs -> after clicks", after_jobs, end)):
        grown = sorted(((after.get(name, 0) - before.get(name, 0), name) for name in after), reverse=True)[:12]
        lines.append(f"live objects grown, {title}: " + ", ".join(f"{name} {count:+d}" for count, name in grown))
    return lines
