"""Shared fixtures: a fake ComfyUI on 127.0.0.1, a connected client, an engine on the selftest set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from comfy.client import ComfyClient
from config import Settings
from results.folder import OutputFolder
from backends.runner import Engine
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, discord_log_errors
from tests.postgres import PostgresServer, PostgresUnavailable, create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"checkpoints": ["v1-5-pruned-emaonly.safetensors", "sdxl.safetensors"],
          "upscale_models": ["RealESRGAN_x4plus.pth"]}


@pytest.fixture
async def comfy():
    fake = FakeComfyUI(models={key: list(value) for key, value in MODELS.items()})
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "workflows_dir": ROOT / "workflows",
        "workflow_set": "selftest",
        "outputs_dir": tmp_path / "outputs",
        "data_dir": tmp_path / "data",
        "comfyui_timeout": 2.0,
        "job_timeout": 20.0,
        "server_grace": 5.0,  # the tests of outages are quicker than the default minute
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path, comfy):
    return make_settings(tmp_path, comfyui_url=comfy.url)


TEST_CLIENT = {"timeout": 2.0, "idle_timeout": 0.6, "backoff": (0.05, 0.4)}  # short bounds for tests


def make_client(url: str, **overrides) -> ComfyClient:
    return ComfyClient(url, **{**TEST_CLIENT, **overrides})


@pytest.fixture
async def client(comfy):
    async with make_client(comfy.url) as connected:
        await connected.wait_connected(5)
        yield connected


async def make_engine(client: ComfyClient, settings: Settings) -> Engine:
    from comfy.workflows import load_set

    outputs = OutputFolder(settings.outputs_dir, settings.output_limit)
    await outputs.open()
    return Engine(client, load_set(settings.workflow_dir()), outputs, settings)


@pytest.fixture
async def engine(client, settings):
    return await make_engine(client, settings)


# the whole bot end to end ----------------------------------------------------------


@pytest.fixture
async def discord_fake(monkeypatch):
    fake = FakeDiscord(ack_deadline=3.0)
    await fake.start()
    fake.install(monkeypatch)
    yield fake
    await fake.stop()
    assert fake.unhandled == []


@pytest.fixture(autouse=True)
def no_discord_errors(caplog):
    """discord.py only logs exceptions in callbacks: any such log fails the test."""
    yield
    errors = discord_log_errors(caplog.get_records("call"))
    if errors:
        pytest.fail("discord.py logged errors:\n" + "\n".join(errors))


@pytest.fixture
async def running(discord_fake):
    from tests.bot_harness import Running

    harness = Running(discord_fake)
    yield harness
    await harness.stop()


@pytest.fixture
async def rig(tmp_path):
    """Fake ComfyUI servers and scheduler "processes" on them (tests/pool_harness.py)."""
    from tests.pool_harness import PoolRig

    pool_rig = PoolRig(tmp_path)
    yield pool_rig
    assert await pool_rig.close() == []


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL (DSN) of the `postgres` database of a throwaway server, started once for the session.

    The server listens only on a Unix socket in its temporary folder; it is stopped (pg_ctl stop -m
    fast) and the folder deleted when the session ends. Missing binaries fail the tests, as missing
    Chromium does: `make test` installs them (`make postgres`).
    """
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        unavailable = str(exc)
    else:
        unavailable = None
    if unavailable is not None:
        pytest.fail(unavailable, pytrace=False)
    try:
        yield server.dsn()
    finally:
        server.stop()


@pytest.fixture
async def pg_dsn(postgres: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on that server, dropped after the test."""
    dsn = await create_database(postgres)
    try:
        yield dsn
    finally:
        await drop_database(dsn)
