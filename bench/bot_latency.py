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
import ctypes
import io
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from bench.engine_latency import png_of_about, percentile  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402
from tests.fakes.discord import FakeDiscord, Interaction, Message  # noqa: E402

MIB = 1024 * 1024
USERS = 32  # distinct users, so per-user limits do not serialise the jobs
COMMANDS_PER_MINUTE = 600  # the settings' maxima: no click may be refused
JOBS_PER_USER = 100
START_TIMEOUT = 60.0  # seconds for the bot process to connect
JOB_TIMEOUT = 60.0  # seconds for one job, interaction to result
PHASE_TIMEOUT = 900.0  # seconds for any one phase
SETTLE = 1.0  # seconds of quiet before reading the memory


def small_png(side: int = 64) -> bytes:
    """A `side` x `side` gradient PNG of a few hundred bytes."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def summary(ms: list[float]) -> str:
    return f"p50 {statistics.median(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, max {max(ms):.2f} ms"


def rss_mib(pid: int) -> float:
    """The process's resident set (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used, s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


class BenchError(Exception):
    pass


# the bot, as a process ----------------------------------------------------------------------


@dataclass
class Bot:
    discord: FakeDiscord
    comfy: FakeComfyUI
    process: asyncio.subprocess.Process
    folder: Path
    failures: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        path = self.folder / "bot.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> None:
        if self.process.returncode is not None:
            raise BenchError(f"the bot process exited with status {self.process.returncode}:\n{self.log_tail()}")

    async def object_counts(self) -> dict[str, int] | None:
        """With --diagnose: live objects per type in the bot (SIGUSR1, see launch_bot.py)."""
        path = self.folder / "objects.json"
        if not os.environ.get("_BENCH_DIAGNOSE"):
            return None
        path.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        async with asyncio.timeout(30):
            while not path.exists():
                await asyncio.sleep(0.05)
        return json.loads(path.read_text())


@contextlib.asynccontextmanager
async def running_bot(output_bytes: bytes, name: str, **settings: str) -> AsyncIterator[Bot]:
    """Both fakes here, the bot in its own process on a fresh data folder; always stopped at the end."""
    comfy = FakeComfyUI()
    comfy.output_bytes = output_bytes
    discord = FakeDiscord(ack_deadline=3.0)
    await comfy.start()
    await discord.start()
    process = None
    with tempfile.TemporaryDirectory(prefix="bot-bench-") as scratch:
        folder = Path(scratch)
        env = {
            **{key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "TMPDIR")},
            "FAKE_DISCORD_PORT": str(discord.base_url.rsplit(":", 1)[1]),
            "DISCORD_TOKEN": "fake-token",
            "COMFYUI_URL": comfy.url,
            "WORKFLOW_SET": "selftest",
            "WORKFLOWS_DIR": str(ROOT / "workflows"),
            "OUTPUTS_DIR": str(folder / "outputs"),
            "DATA_DIR": str(folder / "data"),
            "COMMANDS_PER_MINUTE": str(COMMANDS_PER_MINUTE),
            "JOBS_PER_USER": str(JOBS_PER_USER),
            "CDN_HOSTS": '["127.0.0.1"]',  # the fake Discord serves attachments of pruned results
            "LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        if os.environ.get("_BENCH_DIAGNOSE"):
            env["BENCH_DIAG_FILE"] = str(folder / "objects.json")
        if os.environ.get("BENCH_PROFILE"):  # cProfile of the bot, see launch_bot.py
            env["BENCH_PROFILE"] = f"{os.environ['BENCH_PROFILE']}.{name}"
        try:
            with open(folder / "bot.log", "wb") as log:
                # cwd: the temp folder, so no .env of the repository is read
                process = await asyncio.create_subprocess_exec(
                    sys.executable, str(ROOT / "bench" / "launch_bot.py"), cwd=folder, env=env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    preexec_fn=die_with_parent)
            bot = Bot(discord, comfy, process, folder)
            await wait_started(bot)
            yield bot
            bot.alive()
        finally:
            if process is not None:
                await stop_process(process)
            await discord.stop()
            await comfy.stop()


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM (the bot stops cleanly) if this benchmark dies without stopping it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


async def wait_started(bot: Bot) -> None:
    """Connected to both fakes, /generate synced."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        bot.alive()
        if (bot.discord._ready_connection(bot.discord.guild_id) and bot.comfy.connected_client_ids()
                and any(command.get("name") == "generate" for command in bot.discord.global_commands)):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the bot did not connect within {START_TIMEOUT:g} s:\n{bot.log_tail()}")
        await asyncio.sleep(0.05)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGINT (the bot closes cleanly), then SIGKILL if it is still there after 10 s."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# jobs ---------------------------------------------------------------------------------------


_NONCES: dict[int, tuple[int, dict[str, Message]]] = {}  # id(fake) -> (messages indexed so far, nonce -> message)


def _by_nonce(discord: FakeDiscord) -> dict[str, Message]:
    """The fake's messages by nonce, indexed as they arrive (a scan per check would grow with the run)."""
    seen, index = _NONCES.get(id(discord), (0, {}))
    for message in itertools.islice(discord.messages.values(), seen, None):
        if message.nonce is not None:
            index[str(message.nonce)] = message
    _NONCES[id(discord)] = (len(discord.messages), index)
    return index


def final_message(discord: FakeDiscord, interaction: Interaction) -> Message | None:
    """How the job ended: the new message with its result or failure (its nonce names the job's
    progress message), or the progress message itself when the job was refused."""
    progress = interaction.original_message_id
    if progress is None:
        return None
    posted = _by_nonce(discord).get(f"{progress}.0") or _by_nonce(discord).get(f"{progress}.99")
    if posted is not None:
        return posted
    message = discord.messages.get(progress)
    return message if message is not None and message.content.startswith(("❌", "⏱️")) else None


async def finish(bot: Bot, interaction: Interaction) -> Message | None:
    """The result message, or None (recorded in bot.failures) when the job did not produce one."""
    try:
        message = await bot.discord.wait_for(lambda: final_message(bot.discord, interaction), JOB_TIMEOUT)
    except TimeoutError:
        bot.alive()
        bot.failures.append(f"{interaction.name} by {interaction.user_id}: no result within {JOB_TIMEOUT:g} s")
        return None
    if not message.attachments:
        bot.failures.append(f"{interaction.name} by {interaction.user_id}: {message.content[:200]}")
        return None
    return message


def user(index: int) -> str:
    return str(6000 + index % USERS)


async def generate(bot: Bot, index: int, attachment_size_limit: int) -> tuple[Interaction, Message | None]:
    interaction = await bot.discord.slash(
        "generate", {"prompt": f"bench {index}", "width": 64, "height": 64, "seed": index},
        user_id=user(index), username=f"user{user(index)}", attachment_size_limit=attachment_size_limit)
    return interaction, await finish(bot, interaction)


async def click(bot: Bot, index: int, message_id: str, custom_id: str) -> tuple[Interaction, Message | None]:
    interaction = await bot.discord.click(message_id, custom_id, user_id=user(index), username=f"user{user(index)}")
    return interaction, await finish(bot, interaction)


async def in_flight(count: int, concurrency: int, job: Callable[[int], Awaitable[None]],
                    every: int = 0, checkpoint: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Run job(0..count-1) with at most `concurrency` in flight; checkpoint(done) after each `every`
    finished jobs, with nothing in flight. Bounded by PHASE_TIMEOUT."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await job(index)

    async with asyncio.timeout(PHASE_TIMEOUT):
        step = every or count
        for start in range(0, count, step):
            await asyncio.gather(*(one(index) for index in range(start, min(count, start + step))))
            if checkpoint is not None:
                await checkpoint(min(count, start + step))


# phases -------------------------------------------------------------------------------------


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


def check_fakes(bot: Bot) -> None:
    problems = ([f"discord: {v}" for v in bot.discord.violations] + [f"discord unhandled: {u}" for u in bot.discord.unhandled]
                + [f"comfyui unhandled: {u}" for u in bot.comfy.unhandled])
    bot.failures.extend(problems)
    if bot.failures:
        shown = "\n".join(bot.failures[:10])
        raise BenchError(f"{len(bot.failures)} problem(s), the first ones:\n{shown}\nbot log:\n{bot.log_tail()}")


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
