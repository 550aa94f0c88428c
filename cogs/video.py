"""The video side: /video (a video from a prompt, where a server has AnimateDiff), and the buttons on a video
result: Upscale (every frame), Interpolate (twice the frame rate, where a server has RIFE) and Animate
again… (a form with the animation's frames, frame rate, motion and seed).

Every handler answers in words: what it started, or why it could not. A form carries the generation in
its custom_id, and its answer is read from the interaction, so nothing waits in memory.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import asyncio
import re

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from cogs.choices import is_nsfw
from cogs.common import AreaCog, refuse_if_limited, start_job, tell
from cogs.images import modal_values
from image_gen import SEED_LIMIT, RequestError
from jobs import kinds, wording
from results.folder import OutputError
from safe_text import clip
from ui.video_buttons import AnimateFormButton, InterpolateButton, VideoUpscaleButton
from ui.views import animate_modal
from video_gen import MAX_FPS, TEXT_FRAMES, check_animation

log = structlog.get_logger("bot")

ANIMATE_MODAL = re.compile(r"cf:animform:(?P<gen>\d{1,18})")  # Animate again, on an animation
ANIMATE_IMAGE_MODAL = re.compile(r"cf:animimg:(?P<gen>\d{1,18}):(?P<idx>\d{1,2})")  # Animate, under an image
NO_TEXT_VIDEO = ("No server of this bot can make videos from text right now: it needs the AnimateDiff-Evolved "
                 "nodes and a motion model. Animate an image instead (its Animate button, or Apps → "
                 "Animate this image).")
NOT_OFFERED = {"video_upscale": "Upscaling videos is not available on this bot's servers right now.",
               "interpolate": "Interpolate is not available on this bot's servers right now: it needs the "
                              "ComfyUI-Frame-Interpolation nodes."}
NOT_KNOWN = "That result is not known to this bot any more."


class Video(AreaCog):
    """/video and the buttons and form on a video result: each starts a job."""

    dynamic_items = (VideoUpscaleButton, InterpolateButton, AnimateFormButton)

    @app_commands.command(name="video", description="Make a short video from a text description (AnimateDiff)")
    @app_commands.describe(prompt="What the video shows", negative_prompt="What to avoid",
                           frames=f"How many frames (1-{TEXT_FRAMES[1]}, default {TEXT_FRAMES[0]})",
                           fps=f"Frames per second (1-{MAX_FPS})", seed="Same seed and settings give the same video")
    async def video(self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1500],
                    negative_prompt: app_commands.Range[str, 0, 1500] | None = None,
                    frames: app_commands.Range[int, 1, TEXT_FRAMES[1]] | None = None,
                    fps: app_commands.Range[int, 1, MAX_FPS] | None = None,
                    seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None) -> None:
        if not self.bot.choices.text_video_offered():
            await interaction.response.send_message(NO_TEXT_VIDEO, ephemeral=True)
            return
        if await refuse_if_limited(self.bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        request = {"prompt": clip(prompt, 1500), "negative_prompt": negative_prompt or "", "frames": frames,
                   "fps": fps, "seed": seed, "offers": self.bot.choices.offered_video_actions()}
        if self.bot.settings.sfw_negative and not is_nsfw(interaction.channel):
            request["sfw_negative"] = self.bot.settings.sfw_negative
        await start_job(self.bot, interaction, "text_to_video", request,
                        message_id=callback.message_id if callback else None)

    async def on_video_button(self, interaction: discord.Interaction, kind: str, generation_id: int,
                              factor: int = 0) -> None:
        """Upscale or Interpolate clicked on a video: a new job whose input is that video."""
        if kind not in self.bot.choices.offered_video_actions():
            await interaction.response.send_message(NOT_OFFERED[kind], ephemeral=True)
            return
        if await refuse_if_limited(self.bot, interaction):
            return
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or not generation.files:
            await interaction.response.send_message(NOT_KNOWN, ephemeral=True)
            return
        posted_as = generation.files[0].rsplit(".", 1)[-1].lower()
        if posted_as != "mp4":
            done = "upscaled" if kind == "video_upscale" else "interpolated"
            await interaction.response.send_message(
                f"This video was posted as {'WebP' if posted_as == 'webp' else posted_as.upper()}, as its MP4 is too "
                f"large for this channel; {done}, it would not fit either.", ephemeral=True)
            return
        callback = await interaction.response.defer(thinking=True)
        try:
            name = await self.bot.get_cog("Images")._input_image(interaction, generation, 0)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        job = await self.bot.store.get_job(generation.job_id) if generation.job_id else None
        params = generation.params
        request = {**kinds.derived(job.request if job is not None else {}, params), "input": name,
                   "frames": params.get("frames"), "fps": params.get("fps"),
                   "offers": self.bot.choices.offered_video_actions()}
        if kind == "video_upscale":
            request["factor"] = factor
        await start_job(self.bot, interaction, kind, request, message_id=callback.message_id if callback else None,
                        source_generation_id=generation_id, source_index=0)

    async def on_animate_form_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Animate again…: the form, filled in with what made the animation."""
        generation = await self.bot.store.get_generation(generation_id)
        job = await self.bot.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or job.kind != "animate":
            await interaction.response.send_message(NOT_KNOWN, ephemeral=True)
            return
        settings, params = self.bot.settings, generation.params
        values = {"frames": params.get("frames") or settings.default_frames,
                  "fps": params.get("fps") or settings.default_fps,
                  "motion": params.get("motion") or job.request.get("motion") or settings.default_motion,
                  "seed": params.get("seed")}
        await interaction.response.send_modal(animate_modal(generation_id, values))

    async def on_animate_image_button(self, interaction: discord.Interaction, generation_id: int, index: int) -> None:
        """Animate under an image: the form, filled in with the operator's defaults (the seed empty: a new one)."""
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or index >= len(generation.files):
            await interaction.response.send_message(NOT_KNOWN, ephemeral=True)
            return
        settings = self.bot.settings
        values = {"frames": settings.default_frames, "fps": settings.default_fps, "motion": settings.default_motion}
        await interaction.response.send_modal(animate_modal(generation_id, values, index))

    async def on_animate_image_submit(self, interaction: discord.Interaction, generation_id: int, index: int,
                                      fields: dict) -> None:
        try:
            changes = animate_changes(self.bot.settings, fields)
        except RequestError as error:
            await tell(interaction, f"That animation cannot be made: {clip(str(error), 300)}.")
            return
        await self.bot.get_cog("Images").on_image_button(interaction, "animate", generation_id, index, values=changes)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Animate again's form, read from the interaction itself: it needs nothing in memory."""
        if interaction.type != discord.InteractionType.modal_submit:
            return
        data = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        match, of_image = ANIMATE_MODAL.fullmatch(custom_id), ANIMATE_IMAGE_MODAL.fullmatch(custom_id)
        if match is None and of_image is None:
            return
        try:
            if of_image is not None:
                await self.on_animate_image_submit(interaction, int(of_image["gen"]), int(of_image["idx"]),
                                                   modal_values(data.get("components")))
                return
            await self.on_animate_submit(interaction, int(match["gen"]), modal_values(data.get("components")))
        except Exception as error:
            await self.bot.on_item_error(interaction, error, str(data.get("custom_id", "")))

    async def on_animate_submit(self, interaction: discord.Interaction, generation_id: int, fields: dict) -> None:
        generation = await self.bot.store.get_generation(generation_id)
        job = await self.bot.store.get_job(generation.job_id) if generation and generation.job_id else None
        if job is None or job.kind != "animate":
            await tell(interaction, NOT_KNOWN)
            return
        try:
            changes = animate_changes(self.bot.settings, fields)
        except RequestError as error:
            await tell(interaction, f"That animation cannot be made: {clip(str(error), 300)}.")
            return
        if await refuse_if_limited(self.bot, interaction):
            return
        callback = await interaction.response.defer(thinking=True)
        try:
            name = await self._source_image(interaction, job)
        except (OutputError, ValueError) as error:
            await interaction.edit_original_response(content=wording.cannot_use(str(error)))
            return
        request = {**kinds.derived(job.request, generation.params, again=True), **changes, "input": name,
                   "offers": self.bot.choices.offered_video_actions()}
        await start_job(self.bot, interaction, "animate", request, message_id=callback.message_id if callback else None,
                        source_generation_id=job.source_generation_id, source_index=job.source_index)

    async def _source_image(self, interaction: discord.Interaction, job) -> str:
        """The image the animation was made from, pinned: its file in the output folder, or, once pruned,
        the image of the result it came from (fetched from Discord's CDN if need be)."""
        path = self.bot.settings.outputs_dir / str(job.request.get("input"))
        if job.request.get("input") and await asyncio.to_thread(path.is_file):
            try:
                self.bot.outputs.pin(path)
                return path.name
            except OutputError:
                pass  # pruned between the check and the pin
        source = await self.bot.store.get_generation(job.source_generation_id) if job.source_generation_id else None
        if source is None or not source.attachment_urls:
            raise ValueError("the image it was animated from is gone from the bot's folder")
        index = min(int(job.source_index or 0), len(source.files) - 1)
        return (await self.bot.inputs.fetch(source.attachment_urls[index], source.files[index])).name


def animate_changes(settings, fields: dict) -> dict:
    """The request values Animate again's form sets; RequestError, in words, for one that is not a number or
    out of range."""
    changes: dict = {}
    examples = {"frames": settings.default_frames, "fps": settings.default_fps, "motion": settings.default_motion}
    for name, label in (("frames", "frames"), ("fps", "frames per second"), ("motion", "motion")):
        text = str(fields.get(name) or "").strip()
        if not text.isdigit() or len(text) > 6:
            raise RequestError(f"{label} must be a whole number, like {examples[name]}")
        changes[name] = int(text)
    check_animation(settings, changes["frames"], changes["fps"], changes["motion"])
    seed = str(fields.get("seed") or "").strip()
    if seed and (not seed.isdigit() or int(seed) >= SEED_LIMIT):
        raise RequestError("the seed must be a whole number, or empty for a new one")
    changes["seed"] = int(seed) if seed else None
    return changes
