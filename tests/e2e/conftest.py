"""The cluster of the end-to-end test: three bot processes on one PostgreSQL database and one S3 bucket,
two guilds on two of the three shards, four fake ComfyUIs (tests/e2e/cluster_harness.py). Process A
starts first and alone, so it takes the dispatcher's lease: the process killed is then one that also
serves a guild, the harder case (its guild has no bot until it is restarted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.cluster_harness import Cluster, running_cluster

JOBS_PER_USER = 3
COMMANDS_PER_MINUTE = 60  # above the 15 commands a person sends here: no command is refused for speed


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster(start_order=("bot-a",), s3=True, JOBS_PER_USER=str(JOBS_PER_USER),
                               COMMANDS_PER_MINUTE=str(COMMANDS_PER_MINUTE)) as running:
        yield running
