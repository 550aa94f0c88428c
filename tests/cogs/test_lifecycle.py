"""The bot's life against Discord: readiness follows the real gateway connection, every stop is quick
and keeps what was posted, and a start that cannot work ends in one line that says what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.bot_harness import bot_settings, result_of
from tests.fakes.discord import FakeDiscord
from tests.web.test_metrics_bot import free_port, get

ROOT = Path(__file__).resolve().parents[2]


class FlakyDiscord(FakeDiscord):
    """The fake Discord, whose gateway can drop every connection and then turn new ones away:
    `hold` keeps them open without a HELLO (the client waits), `refuse` answers 503 (the client
    backs off and retries), `deny` closes them with 4004 (authentication failed)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.mode = "open"  # "open", "hold" or "refuse"
        self.turned_away = 0
        self._held: list[web.WebSocketResponse] = []

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "refuse":
            self.turned_away += 1
            self._notify()
            return web.Response(status=503, text="gateway unavailable")
        if self.mode == "open":
            return await super()._gateway(request)
        if self.mode == "deny":
            return await self._deny(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.turned_away += 1
        self._held.append(ws)
        self._notify()
        async for _ in ws:  # until the test lets it go
            pass
        return ws

    async def _deny(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close(code=4004, message=b"Authentication failed.")
        return ws

    async def drop(self, mode: str) -> None:
        """Close every gateway connection (code 1001, "going away") and treat new ones as `mode` says."""
        self.mode = mode
        for conn in [c for c in self._connections if c.live]:
            await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake discord dropped it"), 5)

    async def open(self) -> None:
        """Let the gateway work again; a held connection is closed so that the client tries anew."""
        self.mode = "open"
        held, self._held = self._held, []
        for ws in held:
            await asyncio.wait_for(ws.close(code=1001, message=b"try again"), 5)


@pytest.fixture
async def flaky(monkeypatch):
    fake = FlakyDiscord(ack_deadline=3.0)
    await fake.start()
    fake.install(monkeypatch)
    yield fake
    await fake.open()
    await fake.stop()
    assert fake.unhandled == []


@pytest.fixture
async def running_flaky(flaky):
    from tests.bot_harness import Running

    harness = Running(flaky)
    yield harness
    await harness.stop()


async def metric(base: str, name: str) -> str:
    status, text = await get(f"{base}/metrics")
    return next(line for line in text.splitlines() if line.startswith(name + " "))


async def until(check, timeout: float = 10.0):
    """Wait (bounded) until the coroutine function `check` returns something true; return it."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.05)
    return result


# 1. /readyz and comfybot_discord_connected follow the gateway -------------------------------------


async def test_readiness_follows_the_gateway_through_a_drop_and_a_resume(comfy, flaky, running_flaky, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bot = await running_flaky.start(bot_settings(tmp_path, comfy.url, web_port=port))
    await flaky.wait_for(lambda: bot.scheduler.pool.any_healthy(), timeout=5)
    assert await until(lambda: _ready(base)) == (200, "ready")
    assert await until(lambda: _connected(base, "1.0"))

    await flaky.drop("hold")  # the gateway drops, and reconnecting hangs
    await flaky.wait_for(lambda: flaky.turned_away, timeout=5)
    status, text = await get(f"{base}/readyz")
    assert status == 503
    assert text.startswith("not ready: the connection to Discord dropped "), text
    assert text.endswith(" ago; the bot is reconnecting"), text
    assert await metric(base, "comfybot_discord_connected") == "comfybot_discord_connected 0.0"

    await flaky.open()  # the bot resumes its session
    await flaky.wait_ready(timeout=10)
    assert await until(lambda: _ready(base)) == (200, "ready")
    assert await metric(base, "comfybot_discord_connected") == "comfybot_discord_connected 1.0"
    resumes = [entry for entry in flaky.gateway_received if entry["op"] == 6]
    assert len(resumes) == 1 and resumes[0]["d"]["session_id"]



async def test_a_sharded_bot_is_ready_only_while_every_shard_is_connected(comfy, monkeypatch, tmp_path):
    from tests.bot_harness import Running

    fake = FlakyDiscord(shard_count=2)
    await fake.start()
    fake.install(monkeypatch)
    harness = Running(fake)
    try:
        bot = await harness.start(bot_settings(tmp_path, comfy.url, discord_sharded=True))
        await asyncio.wait_for(bot.wait_until_ready(), 10)  # both shards connected
        assert bot.ready() == (True, "")
        await fake.drop("hold")
        await fake.wait_for(lambda: fake.turned_away, timeout=10)  # discord.py reconnects one shard at a time
        ready, reason = bot.ready()
        assert not ready and reason.startswith("the connection to Discord dropped "), reason
        assert bot.metrics.render()[0].decode().count("\ncomfybot_discord_connected 0.0\n") == 1
        await fake.open()
        await fake.wait_for(lambda: bot.ready() == (True, ""), timeout=10)
    finally:
        await harness.stop()
        await fake.open()
        await fake.stop()

async def _connected(base: str, value: str) -> bool:
    return await metric(base, "comfybot_discord_connected") == f"comfybot_discord_connected {value}"


async def _ready(base: str):
    answer = await get(f"{base}/readyz")
    return answer if answer[0] == 200 else None


# 2. every stop is quick, and keeps what was posted ----------------------------------------------------

LAUNCHER = """\
import os, runpy, sys
import yarl
import discord.gateway, discord.http

discord.http.Route.BASE = os.environ["FAKE_DISCORD_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["FAKE_DISCORD_GATEWAY"])
if os.environ.get("RECONNECT_DELAY"):  # discord.py's backoff as it is after a few failed tries (random, growing)
    import discord.backoff
    discord.backoff.ExponentialBackoff.delay = lambda self: float(os.environ["RECONNECT_DELAY"])
sys.path.insert(0, os.environ["BOT_ROOT"])
sys.argv = [os.path.join(os.environ["BOT_ROOT"], "bot.py")]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def bot_env(tmp_path: Path, api: str, gateway: str, **env: str) -> dict[str, str]:
    values = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WORKFLOWS_DIR": str(ROOT / "workflows"),
              "WORKFLOW_SET": "selftest", "OUTPUTS_DIR": str(tmp_path / "outputs"),
              "DATA_DIR": str(tmp_path / "data"), "COMFYUI_TIMEOUT": "5", "DISCORD_TOKEN": "fake-token",
              "COMFYUI_URL": "http://127.0.0.1:9", "LOG_LEVEL": "info", "BOT_ROOT": str(ROOT),
              "FAKE_DISCORD_API": api, "FAKE_DISCORD_GATEWAY": gateway, **env}
    return values


async def start_process(tmp_path: Path, env: dict[str, str], output: Path) -> asyncio.subprocess.Process:
    launcher = tmp_path / "launch_bot.py"
    launcher.write_text(LAUNCHER)
    with output.open("wb") as sink:
        return await asyncio.create_subprocess_exec(sys.executable, str(launcher), cwd=tmp_path, env=env,
                                                    stdout=sink, stderr=asyncio.subprocess.STDOUT)


async def ended(process: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The exit status, or None (and the process killed) when it did not end within `timeout` seconds."""
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None


@pytest.mark.parametrize("mode", ["hold", "refuse"])
async def test_sigterm_while_discord_is_unreachable_stops_the_process(flaky, tmp_path, mode):
    output = tmp_path / "bot.log"
    env = bot_env(tmp_path, flaky.api_url, flaky.gateway_url, RECONNECT_DELAY="60")
    process = await start_process(tmp_path, env, output)
    try:
        await flaky.wait_ready(timeout=20)
        await flaky.drop(mode)  # the gateway drops and turns the reconnects away
        await flaky.wait_for(lambda: flaky.turned_away, timeout=10)
        await asyncio.sleep(0.3)  # discord.py is now waiting: for a HELLO, or before its next try
        process.send_signal(signal.SIGTERM)
        code = await ended(process, 15)  # the test's own bound; compose gives 30 s
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.read_text()
    assert code == 0, f"exit status {code} after SIGTERM; output:\n{text}"
    assert "discord_disconnected" in text and "bot_stopping" in text
    last = text.rstrip().splitlines()[-1]
    assert "bot_stopped" in last and "status=0" in last, text


async def test_a_stop_while_a_result_is_being_posted_records_it_and_the_restart_posts_nothing(
        comfy, discord_fake, running, tmp_path):
    discord_fake.nonce_window = 0  # Discord's nonce dedupe off: only the bot's own record can prevent a repost
    discord_fake.max_hold = 1.0  # the post's answer comes a second after the stop began
    settings = bot_settings(tmp_path, comfy.url)
    await running.start(settings)
    discord_fake.hold_channel_posts(1)
    interaction = await discord_fake.slash("generate", {"prompt": "stop now", "width": 64, "height": 64})
    posted = await discord_fake.wait_for_held_post(timeout=20)  # on Discord; the bot has not heard back yet
    await running.stop()

    bot = await running.start(settings)
    progress = interaction.original_message_id
    await discord_fake.wait_for(lambda: discord_fake.messages[progress].deleted, timeout=10)
    results = [m for m in discord_fake.messages.values() if str(m.nonce) == f"{progress}.0"]
    assert results == [posted] and posted.content == "✅ <@5001>, your image is ready."
    done = await until(lambda: bot.store.jobs_in(["done"]))
    assert [job.message_id for job in done] == [int(progress)]
    generation = await bot.store.get_generation(done[0].generation_id)
    assert generation.message_id == int(posted.id)
    assert [held.outcome for held in discord_fake.held_posts] == ["timeout"]  # the stop waited for the answer


# 3. a start that cannot work ends in one line ---------------------------------------------------------


async def run_to_end(tmp_path: Path, env: dict[str, str]) -> tuple[int | None, str]:
    output = tmp_path / "bot.log"
    process = await start_process(tmp_path, env, output)
    code = await ended(process, 20)
    return code, output.read_text()


@pytest.mark.parametrize("setting", ["DATA_DIR", "OUTPUTS_DIR"])
async def test_a_folder_the_bot_cannot_write_is_named_in_one_line(discord_fake, tmp_path, setting):
    blocker = tmp_path / "a-file"  # the tests run as root: a folder inside a regular file cannot be written
    blocker.write_text("not a folder")
    env = bot_env(tmp_path, discord_fake.api_url, discord_fake.gateway_url, **{setting: str(blocker / "inside")})
    code, text = await run_to_end(tmp_path, env)
    what = {"DATA_DIR": "data folder", "OUTPUTS_DIR": "output folder"}[setting]
    assert (code, text) == (2, f"config error: {setting}: cannot write to the {what} {blocker / 'inside'}: "
                               f"Not a directory. Set {setting} to a folder the bot can write, or fix its owner.\n")


async def test_a_first_gateway_connection_that_fails_after_the_login_ends_in_one_line(discord_fake, tmp_path):
    env = bot_env(tmp_path, discord_fake.api_url, "ws://127.0.0.1:9/gateway")
    code, text = await run_to_end(tmp_path, env)
    assert code == 1 and "Traceback" not in text, text
    assert text.splitlines()[-1].startswith(
        "error: logged in to Discord, but cannot connect to its gateway (ClientConnectorError: Cannot connect to "
        "host 127.0.0.1:9 "), text
    assert text.splitlines()[-1].endswith(
        "; check that the network lets the bot open websockets to gateway.discord.gg, then start it again"), text


async def test_a_gateway_that_refuses_the_token_ends_in_one_line(flaky, tmp_path):
    flaky.mode = "deny"
    code, text = await run_to_end(tmp_path, bot_env(tmp_path, flaky.api_url, flaky.gateway_url))
    assert code == 2 and "Traceback" not in text, text
    assert text.splitlines()[-1] == ("config error: DISCORD_TOKEN: Discord's gateway refused this token (reset it "
                                     "in the Developer Portal)"), text


async def test_a_database_that_cannot_be_reached_ends_in_one_line_without_its_password(discord_fake, tmp_path):
    missing = tmp_path / "no-server-here"  # a socket folder with no PostgreSQL in it
    env = bot_env(tmp_path, discord_fake.api_url, discord_fake.gateway_url,
                  DATABASE_URL=f"postgresql://bot:s3cret-pw@/bot?host={missing}")
    code, text = await run_to_end(tmp_path, env)
    assert code == 1 and "Traceback" not in text and "s3cret-pw" not in text, text
    assert text.splitlines()[-1].startswith(
        "error: the bot cannot use its database: PostgreSQL database bot on a local socket cannot be reached ("), text
