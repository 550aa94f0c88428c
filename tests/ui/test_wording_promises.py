"""What people read keeps the bot's promises (issue 17): who is next, what /status says, how a refusal,
a cancel, a timer, an upscale and /history read.

Fake Discord <-> real discord.py bot <-> real scheduler <-> fake ComfyUI, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time

from comfy.types import NodeStarted, Progress
from ui.progress import Progression
from jobs.queue_view import ServerStatus, Status
from cogs.generate import status_embed
from tests.bot_harness import bot_settings, result_of
from ui.views import LiveMessage


def fields_of(message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


async def reply_to(discord_fake, interaction):
    await interaction.wait_acked(3)
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and not m.loading and (m.content or m.embeds))


async def shows(discord_fake, interaction, predicate, timeout: float = 10.0):
    """The job message of `interaction` once its text satisfies `predicate` (edits are paced)."""
    return await discord_fake.wait_for_message(
        lambda m: m.id == interaction.original_message_id and predicate(m.content), timeout=timeout)


# 1 and 2: one view of the queue ----------------------------------------------------------------------


async def test_waiting_messages_and_status_agree_on_who_is_next(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url, jobs_per_user=5))  # two of our prompts per server
    learn = await discord_fake.slash("generate", {"prompt": "learn", "width": 64, "height": 64})
    assert (await result_of(discord_fake, learn, timeout=20)).attachments  # the bot now has an estimate
    comfy.node_delays["ImageAddNoise"] = 60  # the next job keeps the GPU busy for the rest of the test
    first = await discord_fake.slash("generate", {"prompt": "first", "width": 64, "height": 64})
    await shows(discord_fake, first, lambda text: text.startswith("🎨"))
    second, third, fourth = [await discord_fake.slash("generate", {"prompt": name, "width": 64, "height": 64})
                             for name in ("second", "third", "fourth")]

    await shows(discord_fake, second, lambda text: text == "⏳ Starting: your image is next on the GPU.")
    await shows(discord_fake, third, lambda text: text.startswith("⏳ Waiting for your image: 1 job is ahead of yours"))
    await shows(discord_fake, fourth, lambda text: text.startswith("⏳ Waiting for your image: 2 jobs are ahead of yours"))

    fields = fields_of(await reply_to(discord_fake, await discord_fake.slash("status")))
    assert fields["Your jobs"].splitlines() == [  # running first, then the next on the GPU, then the queue
        "• Your image “first”: running.",
        "• Your image “second”: starting, next on the GPU.",
        "• Your image “third”: 1 job is ahead of yours.",
        "• Your image “fourth”: 2 jobs are ahead of yours."]
    assert fields["Queue"].startswith("2 jobs waiting, 2 on the GPU. A new job would start in about ")
    assert "right away" not in fields["Queue"]


def test_status_says_right_away_only_when_nothing_waits_and_a_server_is_free():
    server = ServerStatus("gpu", True, 0, 2, None)
    idle = fields_of_embed(status_embed(Status([server], 0, 0, [], new_job_starts=0.0, free=True)))
    assert idle["Queue"] == "0 jobs waiting, 0 on the GPU. A new job would start right away."
    busy = fields_of_embed(status_embed(Status([server], 2, 2, [], new_job_starts=1.0, free=False)))
    assert busy["Queue"] == "2 jobs waiting, 2 on the GPU. A new job would start in about 5 s."


def fields_of_embed(embed) -> dict[str, str]:
    return {field.name: field.value for field in embed.fields}


async def test_a_state_recorded_while_an_edit_is_on_the_wire_is_sent_after_it():
    """'Starting' came while 'yours is next' was being sent: it was dropped, and the message lied."""
    sent: list[str] = []
    gate = asyncio.Event()

    async def edit(**content):  # Discord, answering the first edit only once the next state is recorded
        sent.append(content["content"])
        if len(sent) == 1:
            await asyncio.wait_for(gate.wait(), 5)

    live = LiveMessage(edit, interval=0.0)
    live.update(key="waiting", content="⏳ Waiting for your image: yours is next.")
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.01)
    live.update(key="starting", content="⏳ Starting: your image is next on the GPU.")
    gate.set()
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert sent == ["⏳ Waiting for your image: yours is next.", "⏳ Starting: your image is next on the GPU."]
    await live.stop()


# 3. a bad flag is refused privately ---------------------------------------------------------------------

PRESETS = {"anime": {"checkpoint": "sdxl.safetensors"}, "dreamshaper": {"checkpoint": "dreamshaper_8.safetensors"}}
FLAGS = "`--ar`, `--seed`, `--steps`, `--cfg`, `--no`, `--style`, `--model`, `--lora`"


async def test_a_bad_flag_is_refused_privately_offering_only_flags_that_work(comfy, discord_fake, running, tmp_path):
    bot = await running.start(bot_settings(tmp_path, comfy.url, workflow_set="default", model_presets=PRESETS))
    await discord_fake.wait_for(lambda: all(b.object_info is not None for b in bot.scheduler.pool.backends), 10)

    async def private_answer(options: dict) -> str:
        interaction = await discord_fake.slash("generate", options)
        await interaction.wait_acked(3)
        reply = discord_fake.messages[interaction.original_message_id]
        assert interaction.response_type == 4 and reply.flags & 64  # ephemeral: only the person sees it
        return reply.content

    assert await private_answer({"prompt": "a red fox --foo"}) == (
        f"I didn't queue that: `--foo` is not a flag I know. Flags you can use: {FLAGS}, "
        "and a model's own flag: `--anime`.")
    not_available = "the model `dreamshaper` is not available on this server right now. Models you can use: `anime`."
    assert await private_answer({"prompt": "a red fox --dreamshaper"}) == f"I didn't queue that: {not_available}"
    assert await private_answer({"prompt": "a red fox --model dreamshaper"}) == f"I didn't queue that: {not_available}"
    assert await private_answer({"prompt": "a red fox", "model": "dreamshaper"}) == \
        "The model `dreamshaper` is not available on this server right now. Models you can use: `anime`."
    assert await private_answer({"prompt": "a red fox --seed many"}) == \
        "I didn't queue that: --seed needs a whole number from 0 to 9007199254740991, like --seed 42."
    assert comfy.prompts == {} and await bot.store.get_job(1) is None


# 4. the smaller promises ----------------------------------------------------------------------------------


async def test_settings_with_nothing_saved_and_help_say_it_in_sentences(comfy, discord_fake, running, tmp_path):
    await running.start(bot_settings(tmp_path, comfy.url))
    nothing = await reply_to(discord_fake, await discord_fake.slash("settings"))
    assert nothing.ephemeral and nothing.content == (
        "You have no saved defaults, so each job uses the bot's own settings. "
        "Save one with `/settings`, like `/settings steps:30`.")
    shown = await discord_fake.slash("help")
    await shown.wait_acked(3)
    help_page = discord_fake.messages[shown.original_message_id]
    assert help_page.ephemeral  # Discord itself tells the person that only they can see it
    assert help_page.embeds[0]["footer"]["text"] == "Pick another topic below."


async def test_history_shows_when_each_result_was_made_in_the_readers_own_time(comfy, discord_fake, running,
                                                                             tmp_path):
    bot = await running.start(bot_settings(tmp_path, comfy.url))
    for prompt in ("a red fox", "a blue whale"):
        await result_of(discord_fake, await discord_fake.slash(
            "generate", {"prompt": prompt, "width": 64, "height": 64}), timeout=20)
    made = [(await bot.store.get_generation(number)).created_at for number in (2, 1)]  # newest first
    listed = await reply_to(discord_fake, await discord_fake.slash("history"))
    assert listed.content.splitlines()[1:] == [f"1. <t:{int(made[0])}:f>", f"2. <t:{int(made[1])}:f>"]
    assert "UTC" not in str(listed.components)


def test_the_countdown_says_finishing_when_its_time_is_up_and_the_clock_runs_across_stages(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = Progression()
    progress.apply(NodeStarted("3", "KSampler"))
    progress.apply(Progress(1, 20, "3"))
    clock[0] += 9.0
    progress.apply(Progress(19, 20, "3"))  # 0.5 s a step: one step, about half a second, is left
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 19 of 20), 9 s so far, finishing…"
    clock[0] += 20.0  # the last step takes far longer than the pace said: no "about 5 s left" meanwhile
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 19 of 20), 29 s so far, finishing…"
    progress.apply(NodeStarted("8", "VAEDecode"))
    clock[0] += 3.0
    assert progress.text().splitlines()[0] == "🎨 Decoding, 32 s so far."  # the clock runs on across the stage


def test_a_countdown_counts_down_between_steps(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = Progression()
    progress.apply(NodeStarted("3", "KSampler"))
    progress.apply(Progress(1, 40, "3"))
    clock[0] += 10.0
    progress.apply(Progress(11, 40, "3"))  # 1 s a step, 29 steps left
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 11 of 40), 10 s so far, about 30 s left."
    clock[0] += 20.0  # no step for 20 s: the countdown goes down, it does not stand still or grow
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 11 of 40), 30 s so far, about 10 s left."
    clock[0] += 10.0  # its time is up with 29 steps to go: no more promises rather than a wrong one
    assert progress.text().splitlines()[0] == "🎨 Drawing (step 11 of 40), 40 s so far."
