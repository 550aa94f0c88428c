"""/pipeline: run, save, list, show and delete pipelines (jobs/pipelines.py), the operator's (PIPELINES_FILE)
and each person's own (the store). A pipeline runs as one job whose steps the scheduler chains
(jobs/stages.py); this cog starts its first step.
"""

# No `from __future__ import annotations` here: discord.py reads the command parameters' annotations at runtime.

import re

import discord
import structlog
from discord import app_commands

from cogs.common import AreaCog, refuse_if_limited, start_job
from cogs.generate import matching
from image_gen import SEED_LIMIT
from jobs import kinds, wording
from jobs.pipelines import (ACTIONS, MAX_STEPS, Pipeline, PipelineError, Step, check, check_name,
                            from_chain, load, parse_steps)
from safe_text import clip
from store import SavedPipeline

log = structlog.get_logger("bot")

PIPELINES_PER_PERSON = 25
WHOSE = {False: "**Yours**", True: "**This bot’s**"}
MESSAGE = re.compile(r"(?:https?://(?:\w+\.)?discord(?:app)?\.com/channels/[\d@me]+/\d+/)?(\d{15,22})/?$")
STEPS_HELP = ("Steps are written like `generate 768x768 -> upscale 2x -> img2img 0.3 \"more detail\" -> animate`; "
              "a step may end with a condition: `upscale 2x when width < 1024`. Steps: "
              + "; ".join(f"**{name}**: {action.describe}" for name, action in ACTIONS.items()) + ".")


class Pipelines(AreaCog):
    """/pipeline run|save|list|show|delete."""

    def __init__(self, bot) -> None:
        super().__init__(bot)
        self.operator: dict[str, Pipeline] = {}

    async def cog_load(self) -> None:
        await super().cog_load()
        try:
            self.operator = load(self.bot.settings.pipelines_file)
        except PipelineError as error:  # the bot still runs; people's own pipelines work
            log.error("pipelines_not_loaded", file=str(self.bot.settings.pipelines_file), error=str(error))

    async def pipelines_for(self, interaction: discord.Interaction) -> dict[str, Pipeline]:
        """The operator's pipelines and the person's own here, by name (the operator's win a tie)."""
        own = {}
        for saved in await self.bot.store.pipelines(interaction.guild_id or 0, interaction.user.id):
            try:
                steps = [Step.from_json(step) for step in saved.steps]
                own[saved.name] = check(saved.name, steps, operator=False)
            except PipelineError as error:  # a step this bot no longer runs: shown, not run
                log.info("pipeline_not_usable", name=saved.name, user_id=interaction.user.id, error=str(error))
        return {**own, **self.operator}

    pipeline = app_commands.Group(name="pipeline", description="Pipelines: several steps run as one job")

    @pipeline.command(name="run", description="Run a pipeline on a prompt: its steps one after another, one result")
    @app_commands.describe(name="The pipeline (see /pipeline list)", prompt="What to draw (flags work too)",
                           negative_prompt="What to avoid", seed="Same seed and settings give the same image",
                           model="Which model to use", style="A style: a prompt template")
    async def run(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32],
                  prompt: app_commands.Range[str, 1, 1500],
                  negative_prompt: app_commands.Range[str, 0, 1500] | None = None,
                  seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None, model: str | None = None,
                  style: app_commands.Range[str, 1, 32] | None = None) -> None:
        bot = self.bot
        found = (await self.pipelines_for(interaction)).get(name.strip().lower())
        if found is None:
            await interaction.response.send_message(
                f"There is no pipeline {wording.code(name)} here; /pipeline list shows the ones you can run.",
                ephemeral=True)
            return
        if not await bot.choices.model_offered(interaction, model) or await refuse_if_limited(bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        options = {"negative_prompt": negative_prompt, "seed": seed, "model": model, "style": style}
        try:
            request = await bot.choices.request_for(interaction, prompt, options, sized=True)
            request.update(found.steps[0].values)
            request.setdefault("batch", 1)
            refusal = self._unservable(found, request)
            if refusal:
                raise PipelineError(refusal)
        except ValueError as error:  # RequestError, FlagError, PipelineError: a sentence
            await interaction.edit_original_response(content=wording.failed("txt2img", str(error)))
            return
        request["pipeline"] = {"name": found.name, "steps": found.to_json(), "step": 0, "stages": []}
        await start_job(bot, interaction, "txt2img", request, message_id=callback.message_id if callback else None)

    def _unservable(self, found: Pipeline, request: dict) -> str | None:
        """Why some step of the pipeline cannot run on any server now, or None."""
        for number, (step, name) in enumerate(zip(found.steps, found.kinds, strict=True), start=1):
            kind = kinds.get(name)
            models = kind.models(self.bot.settings, request)
            reasons = self.bot.scheduler.pool.unservable(kind.workflow_for(request), models)
            if reasons:
                return f"step {number} ({step.label()}) cannot run on any server now: " + wording.unservable(models,
                                                                                                           reasons)
        return None

    @pipeline.command(name="save", description="Save a pipeline of your own, from its steps or a result's chain")
    @app_commands.describe(name="Its name: a-z, 0-9, - and _",
                           steps="Like: generate 768x768 -> upscale 2x -> img2img 0.3 \"detail\" -> animate",
                           result="Or a link to (or the id of) a result: the steps that led to it")
    async def save(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32],
                   steps: app_commands.Range[str, 1, 1000] | None = None,
                   result: app_commands.Range[str, 1, 200] | None = None) -> None:
        if (steps is None) == (result is None):
            await interaction.response.send_message("Give either `steps` or `result`. " + STEPS_HELP, ephemeral=True)
            return
        try:
            name = check_name(name)
            if name in self.operator:
                raise PipelineError(f"{wording.code(name)} is this bot's own pipeline; choose another name.")
            listed = parse_steps(steps) if steps is not None else await self._chain(result)
            made = check(name, listed, operator=False)
        except PipelineError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        saved = await self.bot.store.save_pipeline(
            SavedPipeline(interaction.guild_id or 0, interaction.user.id, made.name, made.to_json()),
            limit=PIPELINES_PER_PERSON)
        if not saved:
            await interaction.response.send_message(
                f"You have {PIPELINES_PER_PERSON} pipelines, the most; delete one first with /pipeline delete.",
                ephemeral=True)
            return
        await interaction.response.send_message(
            f"Saved your pipeline {wording.code(made.name)}: {made.summary()}.\n"
            f"Run it with `/pipeline run name:{made.name} prompt:…`.", ephemeral=True)

    async def _chain(self, result: str) -> list[Step]:
        """The steps of the jobs that led to the result posted in that message, first to last."""
        matched = MESSAGE.match(result.strip())
        generation = await self.bot.store.generation_by_message(int(matched[1])) if matched else None
        if generation is None:
            raise PipelineError("That is not a result of this bot: give a link to its message (Copy Message Link), "
                                "or its id.")
        chain = []
        for _ in range(MAX_STEPS + 1):
            job = await self.bot.store.get_job(generation.job_id) if generation.job_id else None
            if job is None:
                raise PipelineError("The bot no longer knows how that result was made.")
            chain.append((job.kind, job.request))
            if job.source_generation_id is None:
                break
            generation = await self.bot.store.get_generation(job.source_generation_id)
            if generation is None:
                raise PipelineError("The bot no longer knows how an earlier result of that chain was made.")
        else:
            raise PipelineError(f"That result took more than {MAX_STEPS} steps; a pipeline has at most {MAX_STEPS}.")
        if chain[-1][0] != "txt2img":
            raise PipelineError("That chain starts from an image someone gave, not a prompt; a pipeline starts by "
                                "generating (use `steps` instead).")
        return from_chain(chain[::-1])

    @pipeline.command(name="list", description="The pipelines you can run here")
    async def list_pipelines(self, interaction: discord.Interaction) -> None:
        found = await self.pipelines_for(interaction)
        lines = [f"{WHOSE[p.operator]} {wording.code(p.name)}: {p.summary()}"
                 for p in sorted(found.values(), key=lambda p: (p.operator, p.name))]
        text = "\n".join(lines) if lines else "There are no pipelines here yet."
        await interaction.response.send_message(
            clip(f"{text}\nRun one with `/pipeline run`; save your own with `/pipeline save`.", 1900),
            ephemeral=True)

    @pipeline.command(name="show", description="A pipeline's steps")
    @app_commands.describe(name="The pipeline")
    async def show(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32]) -> None:
        found = (await self.pipelines_for(interaction)).get(name.strip().lower())
        if found is None:
            await interaction.response.send_message(f"There is no pipeline {wording.code(name)} here.", ephemeral=True)
            return
        lines = [f"**{found.name}**" + (f": {found.description}" if found.description else ""),
                 *(f"{number}. {step.label()}" for number, step in enumerate(found.steps, start=1))]
        await interaction.response.send_message(clip("\n".join(lines), 1900), ephemeral=True)

    @pipeline.command(name="delete", description="Delete a pipeline of yours")
    @app_commands.describe(name="The pipeline")
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 32]) -> None:
        deleted = await self.bot.store.delete_pipeline(interaction.guild_id or 0, interaction.user.id,
                                                       name.strip().lower())
        await interaction.response.send_message(
            f"Deleted your pipeline {wording.code(name.strip().lower())}." if deleted else
            f"You have no pipeline {wording.code(name)} here (/pipeline list shows yours).", ephemeral=True)

    @run.autocomplete("name")
    @show.autocomplete("name")
    async def names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        return [app_commands.Choice(name=name, value=name) for name in await self.pipelines_for(interaction)
                if typed in name][:25]

    @run.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(self.bot.choices.model_names(interaction.channel), current)

    @delete.autocomplete("name")
    async def own_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        own = await self.bot.store.pipelines(interaction.guild_id or 0, interaction.user.id)
        return [app_commands.Choice(name=p.name, value=p.name) for p in own if current.lower() in p.name][:25]
