"""What /workflow add shows its owner before a workflow is saved: what the bot found it can set, a
menu per parameter that has alternatives, and Save / Cancel; and the draft those act on.

A draft is the workflow just read, vetted and looked through: it lives in memory (`Drafts`), at most
DRAFT_SECONDS and DRAFTS_MAX of them (the oldest go first), because it is only what the person sent
a moment ago, and sending it again is all a lost one costs (a restart, or a click in another bot
process, answers that the draft is gone). Saved workflows are in the store. The menus and buttons are
`DynamicItem`s, so a click after a restart is answered in words, not left to fail.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import discord

from comfy.discover import LATENT_SOURCES, TEXT_INPUTS, Binding, Bindings
from comfy.graph import is_link
from safe_text import clip
from ui.buttons import _Guarded, answering

DRAFT_SECONDS = 15 * 60  # as long as Discord lets the bot edit the private answer
DRAFTS_MAX = 200
MENUS_MAX = 4  # five rows: four menus and the buttons
OPTIONS_MAX = 25
LINE = 160  # characters of one line about a binding
COG = "Workflows"

# the parameters offered in a menu, in this order, with the inputs that may hold each one
PLACES: dict[str, tuple[str, ...]] = {
    "prompt": (), "negative_prompt": (), "seed": ("seed", "noise_seed"), "steps": ("steps",), "cfg": ("cfg",),
    "width": ("width",), "height": ("height",), "batch": ("batch_size",), "sampler": ("sampler_name",),
    "scheduler": ("scheduler",), "denoise": ("denoise",), "checkpoint": ("ckpt_name", "unet_name")}
SIZED = {"width", "height", "batch"}  # only on latent sources


@dataclass
class Draft:
    """A workflow read by /workflow add and not yet saved."""

    id: int
    guild_id: int
    owner_id: int
    name: str
    tags: tuple[str, ...]
    graph: dict[str, Any]  # API format: what runs
    bindings: Bindings
    source_format: str  # what was uploaded: api, ui, png, webp
    runnable: tuple[str, ...]
    lacks: dict[str, list[str]]
    created: float = field(default_factory=time.monotonic)


class Drafts:
    """The drafts waiting for Save, each for DRAFT_SECONDS at most."""

    def __init__(self) -> None:
        self._drafts: dict[int, Draft] = {}

    def add(self, **values: Any) -> Draft:
        now = time.monotonic()
        self._drafts = {key: d for key, d in self._drafts.items() if now - d.created < DRAFT_SECONDS}
        while len(self._drafts) >= DRAFTS_MAX:
            self._drafts.pop(next(iter(self._drafts)))
        draft = Draft(id=secrets.randbelow(10**15) + 1, **values)
        self._drafts[draft.id] = draft
        return draft

    def get(self, draft_id: int) -> Draft | None:
        draft = self._drafts.get(draft_id)
        if draft is not None and time.monotonic() - draft.created >= DRAFT_SECONDS:
            self._drafts.pop(draft_id, None)
            return None
        return draft

    def pop(self, draft_id: int) -> Draft | None:
        draft = self.get(draft_id)
        self._drafts.pop(draft_id, None)
        return draft


def places(graph: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
    """Every (node, input) of the graph that could hold a parameter, by node id."""
    found = []
    for node in sorted(graph, key=lambda n: (0, int(n)) if n.isdigit() else (1, n)):
        body = graph[node]
        inputs = body["inputs"]
        if name in ("prompt", "negative_prompt"):
            keys = TEXT_INPUTS.get(body["class_type"]) or (("text",) if is_link(inputs.get("clip")) else ())
        elif name in SIZED and not LATENT_SOURCES.search(body["class_type"]):
            keys = ()
        else:
            keys = PLACES[name]
        found += [(node, key) for key in keys if key in inputs and not is_link(inputs[key])]
    return found


def chosen(bindings: Bindings, name: str) -> list[tuple[str, str]]:
    return [(b.node, b.input) for b in bindings.bindings if b.name == name and b.bound]


def pick(bindings: Bindings, graph: Mapping[str, Any], name: str, picked: list[tuple[str, str]]) -> Bindings:
    """The bindings with `name` set at exactly the `picked` places (none: the bot does not set it). A
    place another parameter held goes to the picked one's, and that one gets the places given up (so
    choosing the negative prompt's encoder for the prompt swaps the two)."""
    before = chosen(bindings, name)
    given_up = [place for place in before if place not in picked]
    kept: list[Binding] = []
    for binding in bindings.bindings:
        if binding.name == name:
            continue
        if (binding.node, binding.input) in picked:
            kept += [_binding(graph, binding.name, place) for place in given_up
                     if not any((b.node, b.input) == place for b in kept)]
            continue
        kept.append(binding)
    kept += [_binding(graph, name, place) for place in picked]
    return dataclasses.replace(bindings, bindings=tuple(kept))


def _binding(graph: Mapping[str, Any], name: str, place: tuple[str, str]) -> Binding:
    node, key = place
    return Binding(name, node, graph[node]["class_type"], key, graph[node]["inputs"][key])


def describe(draft: Draft, note: str = "") -> str:
    """The private message about a draft: where it runs, what the bot sets, and what to do."""
    formats = {"api": "API format", "ui": "the editor's format, converted", "png": "a PNG's workflow",
               "webp": "a WebP's workflow"}
    lines = [f"**{clip(draft.name, 100)}** ({formats.get(draft.source_format, draft.source_format)}, "
             f"{len(draft.graph)} nodes) can run on {', '.join(draft.runnable)}."]
    lines += [f"{clip(server, 60)} cannot: it lacks {clip('; '.join(lacks), 300)}."
              for server, lacks in draft.lacks.items() if lacks]
    found = draft.bindings.lines()
    lines.append("What the bot can set:" if found else "The bot found nothing it can set in it; it runs as it is.")
    lines += [f"• {clip(line, LINE)}" for line in found]
    lines.append(note or "Correct a choice with the menus, then **Save**. Nothing is kept before you save.")
    return clip("\n".join(lines), 1900)


def draft_view(draft: Draft) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    menus = [name for name in PLACES if len(places(draft.graph, name)) > 1][:MENUS_MAX]
    for row, name in enumerate(menus):
        view.add_item(PickSelect(draft.id, name, draft, row=row))
    view.add_item(DraftSaveButton(draft.id))
    view.add_item(DraftCancelButton(draft.id))
    return view


class PickSelect(_Guarded, discord.ui.DynamicItem[discord.ui.Select],
                 template=r"cf:wf:pick:(?P<draft>\d{1,18}):(?P<name>[a-z_]{1,20})"):
    """Which inputs of the workflow a parameter sets; none picked: the bot leaves it as it is."""

    def __init__(self, draft_id: int, name: str, draft: Draft | None = None, row: int | None = None) -> None:
        self.draft_id, self.name = draft_id, name
        options = [discord.SelectOption(label="(none)", value="-")]
        if draft is not None:
            now = chosen(draft.bindings, name)
            options = [discord.SelectOption(
                label=clip(f"node {node} ({draft.graph[node]['class_type']}) {key}", 100), value=f"{node}.{key}",
                description=clip(repr(draft.graph[node]["inputs"][key]), 100), default=(node, key) in now)
                for node, key in places(draft.graph, name)[:OPTIONS_MAX]]
        super().__init__(discord.ui.Select(
            custom_id=f"cf:wf:pick:{draft_id}:{name}", placeholder=f"{name}: which input sets it", row=row,
            options=options, min_values=0, max_values=len(options)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> PickSelect:
        return cls(int(match["draft"]), match["name"])

    async def clicked(self, interaction: discord.Interaction) -> None:
        picked = [tuple(value.rsplit(".", 1)) for value in self.item.values]
        await answering(interaction, COG).on_draft_pick(interaction, self.draft_id, self.name, picked)


class DraftSaveButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                      template=r"cf:wf:save:(?P<draft>\d{1,18})"):
    def __init__(self, draft_id: int) -> None:
        self.draft_id = draft_id
        super().__init__(discord.ui.Button(label="Save", style=discord.ButtonStyle.success,
                                           custom_id=f"cf:wf:save:{draft_id}", row=4))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DraftSaveButton:
        return cls(int(match["draft"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, COG).on_draft_save(interaction, self.draft_id)


class DraftCancelButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                        template=r"cf:wf:cancel:(?P<draft>\d{1,18})"):
    def __init__(self, draft_id: int) -> None:
        self.draft_id = draft_id
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:wf:cancel:{draft_id}", row=4))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DraftCancelButton:
        return cls(int(match["draft"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, COG).on_draft_cancel(interaction, self.draft_id)
