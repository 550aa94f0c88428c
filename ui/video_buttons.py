"""The buttons on a video result (Upscale every frame, Interpolate, Animate again…), answered by cogs/video.py.
Like every button they are `DynamicItem`s whose custom_id names the generation, so they work after restarts.
"""

from __future__ import annotations

import re

import discord

from ui.guarded import ID, _Guarded, answering


class VideoUpscaleButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                         template=rf"cf:vup:(?P<gen>{ID}):(?P<factor>[24])"):
    """Upscale on a video: every frame upscaled with the upscale model, at the same frame rate."""

    def __init__(self, generation_id: int, factor: int) -> None:
        self.generation_id, self.factor = generation_id, factor
        super().__init__(discord.ui.Button(label=f"Upscale {factor}x", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:vup:{generation_id}:{factor}", emoji="🔍", row=0))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> VideoUpscaleButton:
        return cls(int(match["gen"]), int(match["factor"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Video").on_video_button(interaction, "video_upscale", self.generation_id,
                                                              factor=self.factor)


class InterpolateButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:interp:(?P<gen>{ID})"):
    """Interpolate: a frame made between every two, at twice the frame rate (a server with RIFE)."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Interpolate (2x fps)", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:interp:{generation_id}", emoji="🎚️", row=0))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> InterpolateButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Video").on_video_button(interaction, "interpolate", self.generation_id)


class AnimateFormButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:animform:(?P<gen>{ID})"):
    """Animate again…: a form with the animation's frames, frame rate, motion and seed, to change and send."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Animate again…", style=discord.ButtonStyle.primary,
                                           custom_id=f"cf:animform:{generation_id}", emoji="🎞️", row=0))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> AnimateFormButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Video").on_animate_form_button(interaction, self.generation_id)
