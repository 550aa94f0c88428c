"""Fixtures of the fakes' own tests: a FakeDiscord factory, and discord.py's logged errors as failures."""

from __future__ import annotations

import pytest

from tests.fakes.discord import FakeDiscord, discord_log_errors


@pytest.fixture(autouse=True)
def fail_on_discord_errors(caplog):
    """discord.py only logs exceptions raised in commands/views: turn them into test failures."""
    yield
    errors = discord_log_errors(caplog.get_records("setup") + caplog.get_records("call"))
    if errors:
        pytest.fail("discord.py logged errors:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
async def make_fake(monkeypatch):
    fakes: list[FakeDiscord] = []

    async def factory(**kwargs) -> FakeDiscord:
        fake = FakeDiscord(**kwargs)
        await fake.start()
        fake.install(monkeypatch)
        fakes.append(fake)
        return fake

    yield factory
    for fake in fakes:
        await fake.stop()
        assert not fake.unhandled, fake.unhandled
