"""Several real bot processes on one database, between one fake Discord and four fake ComfyUIs.

`running_cluster` starts, in this process: a throwaway PostgreSQL server (tests/postgres.py) with a new
database, optionally moto's S3 (tests/results/s3_server.py) with a bucket, one FakeDiscord serving
`shard_count` shards with two guilds on different shards, and four FakeComfyUI servers whose outputs
are a small ready-made PNG (fast). Then it launches each bot as its own process the way
bench/bot_process.py does (bench/launch_bot.py: the code path of `python bot.py`, settings from the
environment, its own log file, die_with_parent), and always kills them all at the end.

The shard layout of the end-to-end test (`LAYOUT`): SHARD_COUNT=3, process A serves shard 0 (the first
guild), B shard 1 (the second guild), C shard 2, which holds no guild: C only dispatches when it holds
the lease and serves the web app. Two processes on one shard would both get its interactions on real
Discord, and SHARD_COUNT must be the same in every process, so a third process needs a third shard.

Without S3 the processes share one OUTPUTS_DIR, as processes on one host would; with S3 they share the
bucket, and each keeps its own OUTPUTS_DIR (a local cache). Each has its own DATA_DIR (thumbnails).
Every wait is bounded; network only on 127.0.0.1 and Unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image

from bench.bot_process import die_with_parent, stop_process
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, Guild
from tests.postgres import PostgresServer, create_database

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = (("bot-a", [0]), ("bot-b", [1]), ("bot-c", [2]))  # (PROCESS_NAME, SHARD_IDS) with SHARD_COUNT=3
SERVERS = 4
START_TIMEOUT = 60.0  # seconds for a bot process to connect everywhere
LEASE_LOCK = (0x434C5553, 1)  # cluster/lease.py's LEASE_LOCK, read here from pg_locks
POLL = 0.05  # seconds between checks of a wait


class ClusterError(AssertionError):
    pass


def small_png(side: int = 64) -> bytes:
    """What every fake ComfyUI returns: a small noise PNG, so delivery costs little."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def until(check: Callable[[], Any], timeout: float, what: str | Callable[[], str]) -> Any:
    """Poll `check()` (a function or coroutine function) until truthy; ClusterError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        await asyncio.sleep(POLL)


@dataclass
class BotProcess:
    """One bot process: its name, shards, environment and log; started, killed and restarted here."""

    name: str
    shard_ids: list[int] | None
    env: dict[str, str]
    folder: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:  # a restart appends to the same log
            log.write(f"=== start {self.starts} ===\n".encode())
            log.flush()
            # cwd: the process's own folder, so no .env of the repository is read
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "bench" / "launch_bot.py"), cwd=self.folder, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent)

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to close anything."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.process.wait(), 10)

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process(self.process)


@dataclass
class Cluster:
    discord: FakeDiscord
    comfys: list[FakeComfyUI]
    bots: dict[str, BotProcess]
    guilds: list[Guild]
    folder: Path
    dsn: str | None = None
    db: asyncpg.Pool | None = None  # a few connections of this process (the checks run side by side)
    s3: Any = None  # tests.results.s3_server.MotoServer
    web_port: int | None = None
    bucket_prefix: str = "cluster"
    instance: str | None = None
    failures: list[str] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(bot.log_tail() for bot in self.bots.values())

    def alive(self) -> None:
        """Every process that should run does."""
        for bot in self.bots.values():
            if bot.process is not None and bot.process.returncode not in (None, -signal.SIGKILL):
                raise ClusterError(f"{bot.name} exited with status {bot.process.returncode}\n{bot.log_tail()}")

    # waits -----------------------------------------------------------------------------------------

    async def wait_connected(self, bot: BotProcess, timeout: float = START_TIMEOUT) -> None:
        """Its shards are ready on the fake Discord, its commands synced, and (PostgreSQL) its heartbeat stored."""
        count = self.discord.shard_count if bot.shard_ids is not None else None

        async def connected() -> bool:
            if not bot.running:
                raise ClusterError(f"{bot.name} exited with status {bot.process.returncode}\n{bot.log_tail()}")
            live = {shard for _, shard in self.discord.connections()}
            shards = [(shard, count) for shard in bot.shard_ids] if count is not None else [(0, 1)]
            if not all(shard in live for shard in shards):
                return False
            if not any(command.get("name") == "generate" for command in self.discord.global_commands):
                return False
            if self.db is None:
                return all(fake.connected_client_ids() for fake in self.comfys)
            return bool(await self.db.fetchval("SELECT count(*) FROM processes WHERE name = $1", bot.name))

        await until(connected, timeout, lambda: f"{bot.name} did not connect\n{bot.log_tail()}")

    async def lease_holder(self) -> str | None:
        """The PROCESS_NAME of the process holding the dispatcher's lease, from pg_locks."""
        name = await self.db.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid "
            "AND l.objid = $2::bigint::oid AND l.objsubid = 2", *LEASE_LOCK)
        return None if name is None else name.split(":", 1)[1]

    def shared_ids(self) -> list[str]:
        """The client ids only the dispatching process uses: `<instance>-<index>`."""
        return [f"{self.instance}-{index}" for index in range(len(self.comfys))]

    async def wait_leader(self, timeout: float = 30.0, *, not_in: tuple[str, ...] = ()) -> str:
        """A process holds the lease (not one of `not_in`) and watches every server under the shared ids."""
        async def leading() -> str | None:
            self.alive()
            holder = await self.lease_holder()
            if holder is None or holder in not_in:
                return None
            if self.instance is None:
                self.instance = await self.db.fetchval("SELECT value FROM meta WHERE key = 'instance_id'")
            connected = all(shared in fake.connected_client_ids() for fake, shared in zip(self.comfys, self.shared_ids()))
            return holder if connected else None

        return await until(leading, timeout, lambda: f"no leader (besides {not_in})\n{self.logs()}")

    async def restart(self, name: str) -> None:
        bot = self.bots[name]
        await bot.kill()
        await bot.start()
        await self.wait_connected(bot)

    def bot_of(self, guild: Guild) -> BotProcess:
        """The process that serves the guild's shard."""
        shard = (int(guild.id) >> 22) % self.discord.shard_count
        return next(bot for bot in self.bots.values() if bot.shard_ids is None or shard in bot.shard_ids)

    def check_fakes(self) -> list[str]:
        return ([f"discord: {v}" for v in self.discord.violations] + [f"discord unhandled: {u}" for u in self.discord.unhandled]
                + [f"comfyui {fake.name} unhandled: {u}" for fake in self.comfys for u in fake.unhandled])

    def bucket_keys(self) -> list[str]:
        """Every object in the results bucket (S3 only)."""
        import boto3
        from botocore.config import Config

        from tests.results.s3_server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY

        client = boto3.client("s3", endpoint_url=self.s3.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY,
                              config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}))
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


def bot_env(cluster: Cluster, name: str, shard_count: int | None, shard_ids: list[int] | None, folder: Path,
            settings: dict[str, str]) -> dict[str, str]:
    env = {
        **{key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "TMPDIR")},
        "FAKE_DISCORD_PORT": cluster.discord.base_url.rsplit(":", 1)[1],
        "DISCORD_TOKEN": "fake-token",
        "COMFYUI_URLS": json.dumps([fake.url for fake in cluster.comfys]),
        "WORKFLOW_SET": "selftest",
        "WORKFLOWS_DIR": str(ROOT / "workflows"),
        "OUTPUTS_DIR": str(cluster.folder / "outputs"),  # one folder for all, as on one host
        "DATA_DIR": str(folder / "data"),
        "CDN_HOSTS": '["127.0.0.1"]',  # the fake Discord serves attachments
        "PROCESS_NAME": name,
        "LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    if cluster.dsn is not None:
        env.update(DATABASE_URL=cluster.dsn, DATABASE_POOL_SIZE="6")  # 3 x (6 + lease + bus) < max_connections
    if shard_count is not None:
        env.update(SHARD_COUNT=str(shard_count), SHARD_IDS=json.dumps(shard_ids))
    if cluster.s3 is not None:
        from tests.results.s3_server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY

        env.update(OUTPUT_STORE=f"s3://{BUCKET}/{cluster.bucket_prefix}", S3_ENDPOINT_URL=cluster.s3.url,
                   S3_ACCESS_KEY_ID=ACCESS_KEY, S3_SECRET_ACCESS_KEY=SECRET_KEY, S3_REGION=REGION,
                   OUTPUTS_DIR=str(folder / "outputs"))  # a cache of its own; the bucket is shared
    return {**env, **settings}


@contextlib.asynccontextmanager
async def running_cluster(layout=LAYOUT, *, shard_count: int | None = 3, postgres: bool = True, s3: bool = False,
                          node_delay: float = 0.05, web: str | None = "bot-c", start_order: tuple[str, ...] = (),
                          **settings: str) -> AsyncIterator[Cluster]:
    """The servers and fakes here, the bots as processes; everything stopped (children killed) at the end.

    `layout`: (PROCESS_NAME, SHARD_IDS or None) per process; `settings`: more environment for every bot
    (JOBS_PER_USER=..., COMMANDS_PER_MINUTE=...). `start_order`: these start first, one after another,
    each connected before the next starts (the first of them takes the lease); the rest then together."""
    folder = Path(tempfile.mkdtemp(prefix="cluster-e2e-"))
    pg: PostgresServer | None = None
    discord = FakeDiscord(shard_count=shard_count or 1, ack_deadline=3.0)
    guilds = [discord.guilds[discord.guild_id]]
    if shard_count is not None and shard_count > 1:
        guilds.append(discord.add_guild(shard=1, shard_count=shard_count, name="Second"))
    output = small_png()
    comfys = [FakeComfyUI(name=f"gpu{index}", node_delays={"ImageAddNoise": node_delay}) for index in range(SERVERS)]
    cluster = Cluster(discord, comfys, {}, guilds, folder)
    try:
        if postgres:
            pg = PostgresServer()
            await asyncio.to_thread(pg.start)
            cluster.dsn = await create_database(pg.dsn())
            cluster.db = await asyncpg.create_pool(cluster.dsn, min_size=1, max_size=3, timeout=10, command_timeout=10)
        if s3:
            from tests.results.s3_server import MotoServer, make_bucket

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
            cluster.s3 = MotoServer()
            await asyncio.to_thread(make_bucket, cluster.s3.url)
        for fake in comfys:
            fake.output_bytes = output
            await fake.start()
        await discord.start()
        for name, shard_ids in layout:
            own = folder / name
            own.mkdir()
            extra = dict(settings)
            if web == name:
                cluster.web_port = free_port()
                extra["WEB_PORT"] = str(cluster.web_port)
            cluster.bots[name] = BotProcess(name, shard_ids, bot_env(cluster, name, shard_count, shard_ids, own, extra), own)
        for name in start_order:
            await cluster.bots[name].start()
            await cluster.wait_connected(cluster.bots[name])
        rest = [bot for name, bot in cluster.bots.items() if name not in start_order]
        for bot in rest:
            await bot.start()
        await asyncio.gather(*(cluster.wait_connected(bot) for bot in rest))
        if postgres:
            await cluster.wait_leader()
        yield cluster
    finally:
        await asyncio.gather(*(bot.stop() for bot in cluster.bots.values()), return_exceptions=True)
        if cluster.db is not None:
            try:
                await asyncio.wait_for(cluster.db.close(), 5)
            except (Exception, asyncio.TimeoutError):
                cluster.db.terminate()
        await discord.stop()
        for fake in comfys:
            await fake.stop()
        if cluster.s3 is not None:
            cluster.s3.stop()
        if pg is not None:
            await asyncio.to_thread(pg.stop)
        if os.environ.get("E2E_LOGS"):  # a folder to keep the processes' logs in, for a failure's post-mortem
            for bot in cluster.bots.values():
                with contextlib.suppress(OSError):
                    shutil.copy(bot.log_path, Path(os.environ["E2E_LOGS"]) / bot.log_path.name)
        shutil.rmtree(folder, ignore_errors=True)
