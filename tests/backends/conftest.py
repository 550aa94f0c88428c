"""The fake RunPod Serverless endpoint the RunPod tests of the bot share (tests/fakes/runpod.py)."""

from __future__ import annotations

import pytest

from tests.fakes.runpod import FakeRunPod


@pytest.fixture
async def runpod():
    """A fake endpoint whose jobs take 0.2 s; a test sets other delays on it before it starts the bot."""
    fake = FakeRunPod(execution_time=0.2)
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.unhandled == []
