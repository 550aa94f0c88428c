"""The restart-proof buttons and menus on a job's messages, and the views that carry them.

Each is a `DynamicItem`: its `custom_id` names the generation and the image, and a click is handed to
the cog that answers it (cogs/images.py, cogs/history.py, cogs/admin.py, cogs/generate.py), which
loads everything else from the store, so a button works on a message posted before any number of
restarts. Nothing here holds job state.
"""

from __future__ import annotations

import re

import discord

from image_gen import upscale_fits
from jobs import kinds
from store import Generation
from ui.guarded import ID, _Guarded, answering  # noqa: F401  (cogs import them from here too)
from ui.share_button import ShareButton
from ui.video_buttons import AnimateFormButton, InterpolateButton, VideoUpscaleButton

VARY_SUBTLE, VARY_STRONG = 0.35, 0.75  # the strengths of Vary (subtle) and Vary (strong)


class UpscaleButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                    template=rf"cf:up:(?P<gen>{ID}):(?P<idx>\d{{1,2}}):(?P<factor>[248])"):
    def __init__(self, generation_id: int, index: int, factor: int, numbered: bool = False, row: int | None = None) -> None:
        self.generation_id, self.index, self.factor = generation_id, index, factor
        super().__init__(discord.ui.Button(
            label=f"Upscale {factor}x" + _number(index, numbered), style=discord.ButtonStyle.secondary,
            custom_id=f"cf:up:{generation_id}:{index}:{factor}", emoji="🔍", row=min(index, 4) if row is None else row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> UpscaleButton:
        return cls(int(match["gen"]), int(match["idx"]), int(match["factor"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Images").on_image_button(interaction, "upscale", self.generation_id, self.index, self.factor)


class AnimateButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:anim:(?P<gen>{ID}):(?P<idx>\d{{1,2}})"):
    def __init__(self, generation_id: int, index: int, numbered: bool = False) -> None:
        self.generation_id, self.index = generation_id, index
        super().__init__(discord.ui.Button(
            label="Animate" + _number(index, numbered), style=discord.ButtonStyle.primary,
            custom_id=f"cf:anim:{generation_id}:{index}", emoji="🎞️", row=min(index, 4)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> AnimateButton:
        return cls(int(match["gen"]), int(match["idx"]))

    async def clicked(self, interaction: discord.Interaction) -> None:  # a form first: frames, fps, motion, seed
        await answering(interaction, "Video").on_animate_image_button(interaction, self.generation_id, self.index)


class VaryButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                 template=rf"cf:vary:(?P<gen>{ID}):(?P<idx>\d{{1,2}}):(?P<how>[sS])"):
    """Vary (subtle) / Vary (strong): the image redrawn after its own prompt at a low or high strength."""

    def __init__(self, generation_id: int, index: int, strong: bool, numbered: bool = False) -> None:
        self.generation_id, self.index, self.strong = generation_id, index, strong
        super().__init__(discord.ui.Button(
            label=f"Vary ({'strong' if strong else 'subtle'})" + _number(index, numbered),
            style=discord.ButtonStyle.secondary, custom_id=f"cf:vary:{generation_id}:{index}:{'S' if strong else 's'}",
            emoji="🪄", row=min(index, 4)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> VaryButton:
        return cls(int(match["gen"]), int(match["idx"]), match["how"] == "S")

    async def clicked(self, interaction: discord.Interaction) -> None:
        strength = VARY_STRONG if self.strong else VARY_SUBTLE
        await answering(interaction, "Images").on_image_button(interaction, "img2img", self.generation_id, self.index,
                                                 strength=strength)


class ZoomButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                 template=rf"cf:zoom:(?P<gen>{ID}):(?P<idx>\d{{1,2}})(?::(?P<zoom>15))?"):
    """Zoom out 2x (or 1.5x): the image padded on every side, the new border filled after its prompt."""

    def __init__(self, generation_id: int, index: int, numbered: bool = False, row: int = 4, zoom: float = 2.0) -> None:
        self.generation_id, self.index, self.zoom = generation_id, index, zoom
        suffix = "" if zoom == 2.0 else ":15"  # 2x buttons keep the ids they have always had
        super().__init__(discord.ui.Button(label=f"Zoom out {zoom:g}x" + _number(index, numbered),
                                           style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:zoom:{generation_id}:{index}{suffix}", emoji="🔭", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ZoomButton:
        return cls(int(match["gen"]), int(match["idx"]), zoom=1.5 if match["zoom"] else 2.0)

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Images").on_image_button(interaction, "outpaint", self.generation_id, self.index,
                                                 zoom=self.zoom)


class RerollButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:reroll:(?P<gen>{ID})"):
    """Reroll: the same request again, with a new seed."""

    def __init__(self, generation_id: int, row: int = 4) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Reroll", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:reroll:{generation_id}", emoji="🎲", row=row))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> RerollButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Images").on_reroll_button(interaction, self.generation_id)


class RemixButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:remix:(?P<gen>{ID})"):
    """Remix: a form pre-filled with what made the result, sent again as a new job."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Remix", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:remix:{generation_id}", emoji="🎛️", row=1))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> RemixButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Images").on_remix_button(interaction, self.generation_id)


class CancelButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:cancel:(?P<job>{ID})"):
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger,
                                           custom_id=f"cf:cancel:{job_id}", emoji="✖️"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> CancelButton:
        return cls(int(match["job"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Generate").on_cancel_button(interaction, self.job_id)


def _number(index: int, numbered: bool) -> str:
    """" #2" on the buttons of a batch's second image, as its attachment is named "image-2"."""
    return f" #{index + 1}" if numbered else ""


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(generation: Generation, post_limit: int = 0) -> discord.ui.View | None:
    """Buttons under a result: per image (the first four of a batch, or five), the actions its kind offers.

    A single image also gets Reroll, Zoom out 2x and, where the result could still be posted within
    `post_limit` bytes, Upscale 8x as buttons. A batch fills the grid with its per-image rows, so
    those, and Upscale all, are the options of one select menu in the last row."""
    kind = kinds.KINDS.get(generation.kind)
    actions = (*(kind.buttons if kind is not None else ()), "keep")
    view = discord.ui.View(timeout=None)
    count = len(generation.files)
    more = more_options(generation, actions, post_limit)
    for index in range(min(count, 4 if more and count > 1 else 5)):
        if "upscale" in actions:
            view.add_item(UpscaleButton(generation.id, index, 2, count > 1))
            view.add_item(UpscaleButton(generation.id, index, 4, count > 1))
        if "vary" in actions:
            view.add_item(VaryButton(generation.id, index, False, count > 1))
            view.add_item(VaryButton(generation.id, index, True, count > 1))
        if "animate" in actions:
            view.add_item(AnimateButton(generation.id, index, count > 1))
    # the video actions some server could run when it was made; none on a video posted as WebP or GIF, as its
    # MP4 was too large for the channel already and would only grow
    mp4 = bool(generation.files) and str(generation.files[0]).endswith(".mp4")
    offered = (generation.params.get("offers") or ()) if mp4 else ()
    if "video_upscale" in actions and "video_upscale" in offered:
        view.add_item(VideoUpscaleButton(generation.id, 2))
    if "interpolate" in actions and "interpolate" in offered:
        view.add_item(InterpolateButton(generation.id))
    if "animate_form" in actions:
        view.add_item(AnimateFormButton(generation.id))
    if count > 1 and len(more) > len(KEEP):
        view.add_item(MoreSelect(generation.id, more))
        return view
    for value, _, _, _ in more:  # one image, or nothing but Favorite and Delete: buttons after the rest
        action, _, _ = value.partition(":")
        view.add_item(RerollButton(generation.id, row=1) if action == "reroll" else
                      RemixButton(generation.id) if action == "remix" else
                      ZoomButton(generation.id, 0, row=1) if action == "zoom" else
                      ZoomButton(generation.id, 0, row=1, zoom=1.5) if action == "zoom15" else
                      UpscaleButton(generation.id, 0, 8, row=1) if action == "up8" else
                      FavoriteButton(generation.id) if action == "favorite" else ShareButton(generation.id) if action == "share" else
                      DeleteButton(generation.id) if action == "delete" else ReportButton(generation.id))
    return view


def more_options(generation: Generation, actions: tuple[str, ...], post_limit: int) -> list[tuple[str, str, str, str]]:
    """The less common actions on a result, as (value, label, description, emoji): Reroll, Remix,
    Upscale all, Favorite and Delete, and per image Zoom out 2x and 1.5x and Upscale 8x (when the result
    could still be posted). At most 25, Discord's limit for a menu: a batch of ten has these for its
    first six images."""
    count, params = len(generation.files), generation.params
    options = []
    if "reroll" in actions:
        options.append(("reroll", "Reroll", "The same request again, with a new seed", "🎲"))
    if "remix" in actions:
        options.append(("remix", "Remix", "Change the prompt, seed or size, and send it again", "🎛️"))
    if "upscale" in actions and count > 1:
        options += [(f"all:{factor}", f"Upscale all {factor}x", f"Every image of this batch, {factor} times larger",
                     "🔍") for factor in (2, 4)]
    if "keep" in actions:
        options += KEEP
    for index in range(min(count, 10)):
        if "zoom" in actions:
            options.append((f"zoom:{index}", "Zoom out 2x" + _number(index, count > 1),
                            "A new border all around, drawn after the prompt", "🔭"))
            options.append((f"zoom15:{index}", "Zoom out 1.5x" + _number(index, count > 1),
                            "A narrower border all around, drawn after the prompt", "🔭"))
        if "upscale" in actions and upscale_fits(int(params.get("width") or 0), int(params.get("height") or 0), 8,
                                                  post_limit):
            options.append((f"up8:{index}", "Upscale 8x" + _number(index, count > 1),
                            "Eight times larger: for printing", "🔍"))
    return options[:25]


KEEP = [("favorite", "Favorite", "Keep it in /favorites (or take it out)", "⭐"),
        ("delete", "Delete", "Remove this result (its owner or a moderator)", "🗑️"),
        ("report", "Report", "Show it to this server's moderators", "🚩"), ("share", "Share", "A public page of it", "🔗")]


class FavoriteButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:fav:(?P<gen>{ID})"):
    """Favorite: the clicker's own mark on a result, shown by /favorites and the gallery; a toggle."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Favorite", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:fav:{generation_id}", emoji="⭐", row=2))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> FavoriteButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "History").on_favorite_button(interaction, self.generation_id)


class DeleteButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                   template=rf"cf:del:(?P<gen>{ID})(?P<sure>:ok)?"):
    """Delete, for the result's owner and moderators: asks once, then removes the message and the result."""

    def __init__(self, generation_id: int, sure: bool = False) -> None:
        self.generation_id, self.sure = generation_id, sure
        super().__init__(discord.ui.Button(
            label="Yes, delete it" if sure else "Delete", emoji="🗑️",
            style=discord.ButtonStyle.danger if sure else discord.ButtonStyle.secondary,
            custom_id=f"cf:del:{generation_id}" + (":ok" if sure else ""), row=2))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DeleteButton:
        return cls(int(match["gen"]), bool(match["sure"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "History").on_delete_button(interaction, self.generation_id, self.sure)


class ReportButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"cf:report:(?P<gen>{ID})"):
    """Report: the result goes to the server's mod-log channel, with who reported it."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Report", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:report:{generation_id}", emoji="🚩", row=2))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ReportButton:
        return cls(int(match["gen"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Admin").on_report_button(interaction, self.generation_id)


class ModerateButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                     template=rf"cf:mod:(?P<gen>{ID}):(?P<action>delete|block)"):
    """In the mod-log, under a report: delete the result, or block its author here."""

    def __init__(self, generation_id: int, action: str) -> None:
        self.generation_id, self.action = generation_id, action
        super().__init__(discord.ui.Button(
            label="Delete it" if action == "delete" else "Block the author", emoji="🗑️" if action == "delete" else "⛔",
            style=discord.ButtonStyle.danger, custom_id=f"cf:mod:{generation_id}:{action}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ModerateButton:
        return cls(int(match["gen"]), match["action"])

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Admin").on_moderate_button(interaction, self.generation_id, self.action)


class MoreSelect(_Guarded, discord.ui.DynamicItem[discord.ui.Select], template=rf"cf:more:(?P<gen>{ID})"):
    """A batch's less common actions, one select menu (the button grid is full)."""

    def __init__(self, generation_id: int, options: list[tuple[str, str, str, str]] | list[discord.SelectOption]) -> None:
        self.generation_id = generation_id
        choices = [option if isinstance(option, discord.SelectOption) else
                   discord.SelectOption(value=option[0], label=option[1], description=option[2], emoji=option[3])
                   for option in options]
        super().__init__(discord.ui.Select(custom_id=f"cf:more:{generation_id}", placeholder="More: reroll, zoom out, "
                                           "upscale all…", options=choices, row=4))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> MoreSelect:
        return cls(int(match["gen"]), item.options)

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Images").on_more_select(interaction, self.generation_id, (self.item.values or [""])[0])
