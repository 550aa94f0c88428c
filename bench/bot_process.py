"""The bot as its own process between the fake Discord and the fake ComfyUI, for bench/bot_latency.py:
`running_bot` starts both fakes here and the bot through bench/launch_bot.py (the code path of
`python bot.py`, settings from the environment), and always stops them; `rss_mib` and `cpu_seconds`
read what the process uses; `check_fakes` fails the run on anything the fakes saw wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parent.parent
COMMANDS_PER_MINUTE = 600  # the settings' maxima: no click may be refused
JOBS_PER_USER = 100
START_TIMEOUT = 60.0  # seconds for the bot process to connect


class BenchError(Exception):
    pass


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


def check_fakes(bot: Bot) -> None:
    problems = ([f"discord: {v}" for v in bot.discord.violations] + [f"discord unhandled: {u}" for u in bot.discord.unhandled]
                + [f"comfyui unhandled: {u}" for u in bot.comfy.unhandled])
    bot.failures.extend(problems)
    if bot.failures:
        shown = "\n".join(bot.failures[:10])
        raise BenchError(f"{len(bot.failures)} problem(s), the first ones:\n{shown}\nbot log:\n{bot.log_tail()}")
