"""Jobs and clicks through the fake Discord, for bench/bot_latency.py: `generate` sends a /generate,
`click` a button click, and both wait for the message that ends the job; `in_flight` runs many with a
bound on how many are in flight at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from bench.bot_process import Bot
from tests.fakes.discord import FakeDiscord, Interaction, Message

USERS = 32  # distinct users, so per-user limits do not serialise the jobs
JOB_TIMEOUT = 60.0  # seconds for one job, interaction to result
PHASE_TIMEOUT = 900.0  # seconds for any one phase


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
