"""People using the cluster through the fake Discord, and what the fakes saw of it: `send` runs a
/generate, `outcome` says how the fake Discord shows it ended (a result, a refusal over the limit, a
failure), `results_of` counts the result messages of one job (by the nonce that names its progress
message), and `dispatch_order` lists the prompts the fake ComfyUIs received, oldest first, with the
client id each came with and the person and job its prompt text names.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, Guild, Interaction, Message

LIMIT_WORDS = "the limit is"  # wording.too_many_jobs, in both refusals (before and after the defer)
TEXT = re.compile(r"e2e (p\d+) (n[\w-]+)")  # the prompt text of a job: person and number


def person_id(index: int) -> str:
    return str(7000 + index)


def job_text(person: int, number: int) -> str:
    return f"e2e p{person:02d} n{number:02d}"


@dataclass
class Sent:
    """One /generate as a person sent it."""

    person: int
    text: str
    guild: Guild
    interaction: Interaction
    sent_at: float  # perf_counter() when it was sent (the fake ComfyUIs' clock)


async def send(discord: FakeDiscord, person: int, text: str, guild: Guild) -> Sent:
    sent_at = time.perf_counter()
    interaction = await discord.slash("generate", {"prompt": text, "width": 64, "height": 64},
                                      user_id=person_id(person), username=f"person{person}", channel_id=guild.channel_id)
    return Sent(person, text, guild, interaction, sent_at)


def progress_of(interaction: Interaction) -> str | None:
    return interaction.original_message_id


def results_index(discord: FakeDiscord) -> dict[str, list[Message]]:
    """progress message id -> every channel message posted for that job (nonce `<progress>.<n>`)."""
    index: dict[str, list[Message]] = defaultdict(list)
    for message in list(discord.messages.values()):
        if message.nonce is not None and not message.deleted:
            index[str(message.nonce).split(".", 1)[0]].append(message)
    return index


def outcome(discord: FakeDiscord, interaction: Interaction) -> tuple[str, Message] | None:
    """("result" | "refused" | "failed", the message that shows it), or None while it is not over."""
    progress = progress_of(interaction)
    if progress is None:
        return None
    for suffix, kind in ((".0", "result"), (".99", "failed")):
        posted = _find_nonce(discord, progress + suffix)
        if posted is not None:
            return (kind if posted.attachments or kind == "failed" else "failed"), posted
    message = discord.messages.get(progress)
    if message is not None and LIMIT_WORDS in message.content:
        return "refused", message
    if message is not None and message.content.startswith(("❌", "⏱️")):
        return "failed", message
    return None


_INDEX: dict[int, tuple[int, dict[str, Message]]] = {}


def _find_nonce(discord: FakeDiscord, nonce: str) -> Message | None:
    """The fake's channel messages by nonce, indexed as they arrive (a scan per check would grow)."""
    seen, index = _INDEX.get(id(discord), (0, {}))
    messages = list(discord.messages.values())
    for message in messages[seen:]:
        if message.nonce is not None:
            index[str(message.nonce)] = message
    _INDEX[id(discord)] = (len(messages), index)
    return index.get(nonce)


async def finished(discord: FakeDiscord, sent: Sent, timeout: float) -> tuple[str, Message]:
    return await discord.wait_for(lambda: outcome(discord, sent.interaction), timeout)


@dataclass(frozen=True)
class Prompt:
    server: int
    prompt_id: str
    client_id: str | None
    received: float
    person: str | None  # "p07", from the prompt's text
    text: str | None  # "e2e p07 n03"
    job_id: int | None  # from the prompt id, cf<instance>-<job>-<random>


def dispatch_order(comfys: list[FakeComfyUI]) -> list[Prompt]:
    """Every prompt the fake ComfyUIs received, in the order they received them."""
    found = []
    for server, fake in enumerate(comfys):
        for prompt_id, body in fake.prompts.items():
            match = TEXT.search(str(body.get("prompt")))
            parts = prompt_id.split("-")
            job_id = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
            found.append(Prompt(server, prompt_id, body.get("client_id"), fake.prompt_received[prompt_id],
                                match.group(1) if match else None, match.group(0) if match else None, job_id))
    return sorted(found, key=lambda prompt: prompt.received)


def first_prompts(order: list[Prompt]) -> list[Prompt]:
    """Each job's first prompt (a job sent again, e.g. after a takeover, counts once), in order."""
    seen: set[object] = set()
    firsts = []
    for prompt in order:
        key = prompt.job_id if prompt.job_id is not None else prompt.prompt_id
        if key not in seen:
            seen.add(key)
            firsts.append(prompt)
    return firsts
