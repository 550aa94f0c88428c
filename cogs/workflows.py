"""/workflow: the ComfyUI workflows people bring (add, list, show, share, delete, rate, restore); run
one with `/generate workflow:` (cogs/generate.py, jobs/user_workflow.py).

`add` reads the attachment (its size checked before it is fetched; jobs/user_workflow.read): the API
format, the editor's format (converted with the servers' node lists, as the editor does:
comfy/ui_format.py), or a PNG or WebP ComfyUI saved (comfy/embedded.py). It is vetted against every
server (comfy/vetting.py), and what the bot can set is found (comfy/discover.py) and shown to the
owner privately, as an answer only they see (not a DM, which fails for people who close them, and
keeps the answer where they asked), with a menu per parameter that has alternatives and Save / Cancel. Nothing is saved before Save; the
draft is kept in memory for a while (ui/workflow_views.py says why). Every refusal is the library's
sentence.

Each person's workflows are their own in each Discord server; the owner, or a moderator (Manage
Messages), shares one with the server or stops sharing it, and deletes it. Each save is a new version;
`restore` makes an older one the newest again.
"""

# No `from __future__ import annotations` here: discord.py reads the command parameters' annotations.

import asyncio
from typing import Any

import aiohttp
import discord
import structlog
from discord import app_commands

from cogs.common import AreaCog, start_job
from comfy.discover import Bindings, find_bindings
from comfy.embedded import MAX_BYTES as IMAGE_BYTES
from comfy.vetting import MAX_BYTES as JSON_BYTES, vet
from jobs import user_workflow, wording
from jobs.flags import parse
from results.folder import OutputError
from safe_text import clip
from store import UserWorkflow
from ui.workflow_views import Draft, DraftCancelButton, DraftSaveButton, Drafts, PickSelect, chosen, describe, \
    draft_view, pick

log = structlog.get_logger("bot")

WORKFLOWS_PER_PERSON = 50  # in one Discord server
SHOWN_VERSIONS = 10
NOT_FOUND = "There is no workflow called {} that you can see here; /workflow list shows them."


def servers(bot: Any) -> tuple[list[dict], list[str]]:
    """The node lists of the servers known now (a RunPod endpoint has none), and their names."""
    known = [b for b in bot.scheduler.pool.backends if b.object_info is not None and not b.remote]
    return [b.object_info for b in known], [b.label for b in known]


def is_moderator(interaction: discord.Interaction) -> bool:
    return bool(interaction.guild_id is not None and interaction.permissions.manage_messages)


def summary(workflow: UserWorkflow, user_id: int) -> str:
    """One line of /workflow list."""
    parts = [f"`{clip(workflow.name, 80)}` v{workflow.version}",
             "yours" if workflow.owner_id == user_id else f"by <@{workflow.owner_id}>"]
    if workflow.shared:
        parts.append("shared")
    if workflow.rating is not None:
        parts.append(f"★ {workflow.rating:.1f} ({workflow.ratings})")
    if workflow.tags:
        parts.append("tags: " + ", ".join(workflow.tags))
    return " · ".join(parts)


async def fetch(bot: Any, attachment: discord.Attachment) -> bytes:
    """The attachment's bytes, its size checked first, then fetched as every attachment is (results/inputs.py:
    from Discord's CDN only, streamed under DOWNLOAD_LIMIT, within a minute); ValueError with the sentence."""
    image = (attachment.content_type or "").startswith("image/") or \
        attachment.filename.lower().endswith((".png", ".webp"))
    limit = IMAGE_BYTES if image else JSON_BYTES
    too_big = ValueError(f"The file is {attachment.size:,} bytes; the most {'an image' if image else 'a workflow'} "
                         f"may be is {limit:,} bytes.")
    if attachment.size > limit:
        raise too_big
    path = await bot.inputs.fetch(attachment.url, "workflow-upload", checked=False)
    try:
        data = await asyncio.to_thread(path.read_bytes)
    finally:
        await bot.outputs.discard(path)
    if len(data) > limit:  # larger than Discord said
        raise too_big
    return data


def asked_values(options: dict, flags: dict, batch: int) -> set[str]:
    """The request values the person asked for here, by option or flag (not their saved defaults)."""
    asked = {key for key in ("negative_prompt", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height")
             if options.get(key) is not None or key in flags}
    if options.get("aspect") or "aspect" in flags:
        asked |= {"width", "height"}
    if options.get("model") or "model" in flags:
        asked.add("checkpoint")
    if options.get("lora") or flags.get("loras"):
        asked.add("loras")
    if flags.get("no"):
        asked.add("negative_prompt")
    if batch > 1:
        asked.add("batch")
    return asked


class Workflows(AreaCog):
    """/workflow and the Save / Cancel / menus of a draft."""

    dynamic_items = (PickSelect, DraftSaveButton, DraftCancelButton)

    def __init__(self, bot: Any) -> None:
        super().__init__(bot)
        self.drafts = Drafts()

    workflow = app_commands.Group(name="workflow", description="Your own ComfyUI workflows: add, share, rate, run")

    # add ---------------------------------------------------------------------------------

    @workflow.command(name="add", description="Add a ComfyUI workflow: its JSON (either Save) or an image ComfyUI saved")
    @app_commands.describe(file="The workflow: Save or Save (API) JSON, or a PNG/WebP from ComfyUI",
                           name="What to call it (a new version if you have one of this name)",
                           tags="Words to find it by, separated by commas")
    async def add(self, interaction: discord.Interaction, file: discord.Attachment,
                  name: app_commands.Range[str, 1, 60], tags: app_commands.Range[str, 0, 200] | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        infos, labels = servers(self.bot)
        try:  # parsing, converting and vetting take milliseconds per hundred nodes: off the event loop
            graph, source = await asyncio.to_thread(user_workflow.read, await fetch(self.bot, file), infos)
        except ValueError as error:
            await interaction.edit_original_response(content=f"That workflow cannot be added: {error}")
            return
        except (OutputError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("workflow_download_failed", error=str(error), error_type=type(error).__name__)
            await interaction.edit_original_response(content="The file could not be fetched from Discord; try again.")
            return
        verdict = await asyncio.to_thread(vet, graph, infos, self.bot.settings, names=labels)
        if not verdict.ok:
            log.info("workflow_refused", user_id=interaction.user.id, refusals=len(verdict.refusals))
            await interaction.edit_original_response(
                content=clip("That workflow cannot be added: " + " ".join(verdict.refusals), 1900))
            return
        bindings = await asyncio.to_thread(find_bindings, graph, user_workflow.merged(infos))
        draft = self.drafts.add(guild_id=interaction.guild_id or 0, owner_id=interaction.user.id, name=name.strip(),
                                tags=tuple(t.strip() for t in (tags or "").split(",") if t.strip()), graph=graph,
                                bindings=bindings, source_format=source, runnable=verdict.runnable,
                                lacks=verdict.lacks)
        await interaction.edit_original_response(content=describe(draft), view=draft_view(draft))

    async def _draft(self, interaction: discord.Interaction, draft_id: int) -> Draft | None:
        draft = self.drafts.get(draft_id)
        if draft is None or draft.owner_id != interaction.user.id:
            await interaction.response.edit_message(
                content="This draft is gone (it is kept for 15 minutes, and not across a restart of the bot); "
                        "send /workflow add again.", view=None)
            return None
        return draft

    async def on_draft_pick(self, interaction: discord.Interaction, draft_id: int, name: str,
                            picked: list[tuple[str, str]]) -> None:
        draft = await self._draft(interaction, draft_id)
        if draft is None:
            return
        draft.bindings = pick(draft.bindings, draft.graph, name, picked)
        where = ", ".join(f"node {node} '{key}'" for node, key in chosen(draft.bindings, name)) or "nothing"
        await interaction.response.edit_message(
            content=describe(draft, f"{name} now sets {where}. Correct another choice, or **Save**."),
            view=draft_view(draft))

    async def on_draft_save(self, interaction: discord.Interaction, draft_id: int) -> None:
        draft = await self._draft(interaction, draft_id)
        if draft is None:
            return
        self.drafts.pop(draft_id)
        saved = await self.bot.store.save_workflow(
            draft.guild_id, draft.owner_id, draft.name, draft.graph, bindings=draft.bindings.to_json(),
            source_format=draft.source_format, limit=WORKFLOWS_PER_PERSON, tags=draft.tags or None)
        if saved is None:
            await interaction.response.edit_message(
                content=f"You have {WORKFLOWS_PER_PERSON} workflows here, the most; delete one with "
                        "/workflow delete first.", view=None)
            return
        log.info("workflow_saved", workflow_id=saved.id, version=saved.version, user_id=draft.owner_id)
        again = " (the earlier versions stay; /workflow restore brings one back)" if saved.version > 1 else ""
        await interaction.response.edit_message(
            content=f"Saved {wording.code(saved.name)} as version {saved.version}{again}. Run it with "
                    f"`/generate workflow:{clip(saved.name, 60)}`; share it with /workflow share.", view=None)

    async def on_draft_cancel(self, interaction: discord.Interaction, draft_id: int) -> None:
        self.drafts.pop(draft_id)
        await interaction.response.edit_message(content="Cancelled; nothing was saved.", view=None)

    # finding one -------------------------------------------------------------------------

    async def find(self, interaction: discord.Interaction, text: str, *, any_here: bool = False) -> UserWorkflow | None:
        """The workflow `text` names for this person here: "#id" (what autocomplete gives), their own of
        that name, or one shared here. `any_here`: a moderator may name anyone's by "#id"."""
        store, guild, user = self.bot.store, interaction.guild_id or 0, interaction.user.id
        text = text.strip()
        if text.startswith("#") and text[1:].isdigit() and len(text) < 19:
            found = await store.workflow(int(text[1:]))
            if found is not None and found.deleted_at is None and found.guild_id == guild and (
                    found.owner_id == user or found.shared or any_here):
                return found
            return None
        own = await store.workflow_by_name(guild, user, text)
        if own is not None:
            return own
        return next((w for w in await store.workflows_for(guild, user, query=text, limit=25) if w.name == text), None)

    async def _found(self, interaction: discord.Interaction, text: str, **options: Any) -> UserWorkflow | None:
        found = await self.find(interaction, text, **options)
        if found is None:
            await interaction.response.send_message(NOT_FOUND.format(wording.code(clip(text, 80))), ephemeral=True)
        return found

    async def names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete: the person's own workflows and those shared here whose name or tags hold the words typed."""
        found = await self.bot.store.workflows_for(interaction.guild_id or 0, interaction.user.id,
                                                   query=current or None, limit=25)
        return [app_commands.Choice(name=clip(f"{w.name} · v{w.version}" + (
            "" if w.owner_id == interaction.user.id else " · shared"), 100), value=f"#{w.id}") for w in found]

    # /generate workflow: --------------------------------------------------------------------

    async def start(self, interaction: discord.Interaction, text: str, prompt: str, options: dict, batch: int,
                    callback: Any, *, priority: int) -> None:
        """/generate workflow:<name>, after defer: the person's values bound into that workflow's current
        version, as a job of kind "workflow"; a value it has no place for is refused in words."""
        bot = self.bot
        found = await self.find(interaction, text)
        if found is None:
            await interaction.edit_original_response(content=wording.failed(
                user_workflow.NAME, "t" + NOT_FOUND.format(wording.code(clip(text, 80)))[1:]))
            return
        try:
            composed = await bot.choices.request_for(interaction, prompt, options, sized="asked")
            flags = parse(prompt, presets=list(bot.settings.model_presets),
                          styles=list(await bot.choices.styles_for(interaction))).values
            asked = asked_values(options, flags, batch)
            request = {key: value for key, value in composed.items()
                       if key not in user_workflow.ASKED or key in asked or key == "prompt"}
            if "checkpoint" not in asked:  # the workflow's own model, not the default one
                request.pop("model", None)
                request.pop("model_reason", None)
            if batch > 1:
                request["batch"] = batch
            version = await bot.store.version(found.id, found.version)
            infos, labels = servers(bot)
            request = await asyncio.to_thread(  # binds and vets the graph again: off the event loop
                user_workflow.request_for, bot.settings, found.id, found.name, version.version, version.graph,
                version.bindings, request, asked, infos, labels)
        except ValueError as error:  # RequestError, FlagError: a sentence
            await interaction.edit_original_response(content=wording.failed(user_workflow.NAME, str(error)))
            return
        await start_job(bot, interaction, user_workflow.NAME, request,
                        message_id=callback.message_id if callback else None, priority=priority)

    # list, show ----------------------------------------------------------------------------

    @workflow.command(name="list", description="Your workflows and those shared here, by name or tag")
    @app_commands.describe(query="Words in the name or tags", tag="Only those with this tag")
    async def list_workflows(self, interaction: discord.Interaction,
                             query: app_commands.Range[str, 1, 100] | None = None,
                             tag: app_commands.Range[str, 1, 32] | None = None) -> None:
        found = await self.bot.store.workflows_for(interaction.guild_id or 0, interaction.user.id, query=query,
                                                   tag=tag, limit=25)
        if not found:
            text = ("No workflow here matches that." if query or tag
                    else "There are no workflows here yet; add one with /workflow add.")
        else:
            text = "\n".join(f"• {summary(w, interaction.user.id)}" for w in found)
        await interaction.response.send_message(clip(text, 1900), ephemeral=True)

    @workflow.command(name="show", description="What a workflow sets, its versions, rating and servers")
    @app_commands.describe(name="The workflow")
    async def show(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        found = await self._found(interaction, name)
        if found is None:
            return
        versions = await self.bot.store.versions(found.id)
        current = next(v for v in versions if v.version == found.version)
        infos, labels = servers(self.bot)
        verdict = vet(current.graph, infos, self.bot.settings, names=labels)
        lines = [summary(found, interaction.user.id),
                 f"Runs on {', '.join(verdict.runnable)}." if verdict.runnable else
                 f"No server can run it now: {' '.join(verdict.refusals)}",
                 "What the bot sets:", *[f"• {clip(line, 160)}" for line in Bindings.from_json(current.bindings).lines()],
                 "Versions:"]
        lines += [f"• v{v.version}" + (f", restored from v{v.restored_from}" if v.restored_from else "")
                  + f", <t:{int(v.created_at)}:R>" for v in versions[:SHOWN_VERSIONS]]
        if len(versions) > SHOWN_VERSIONS:
            lines.append(f"… and {len(versions) - SHOWN_VERSIONS} older ones")
        await interaction.response.send_message(clip("\n".join(lines), 1900), ephemeral=True)

    # share, delete, restore, rate ----------------------------------------------------------

    @workflow.command(name="share", description="Share a workflow with this server, or stop (owner or moderator)")
    @app_commands.describe(name="The workflow", shared="False to stop sharing it")
    async def share(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100],
                    shared: bool = True) -> None:
        found = await self._found(interaction, name, any_here=is_moderator(interaction))
        if found is None:
            return
        if found.owner_id != interaction.user.id and not is_moderator(interaction):
            await interaction.response.send_message(
                "Only its owner, or a moderator (Manage Messages), can share a workflow or stop sharing it.",
                ephemeral=True)
            return
        if interaction.guild_id is None:
            await interaction.response.send_message("Workflows are shared with a Discord server; use this in one.",
                                                    ephemeral=True)
            return
        await self.bot.store.share(found.id, shared, interaction.user.id)
        text = "is shared with this server" if shared else "is no longer shared; only its owner sees it"
        await interaction.response.send_message(f"{wording.code(found.name)} {text}.", ephemeral=True)

    @workflow.command(name="delete", description="Delete a workflow (owner or moderator)")
    @app_commands.describe(name="The workflow")
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        found = await self._found(interaction, name, any_here=is_moderator(interaction))
        if found is None:
            return
        if found.owner_id != interaction.user.id and not is_moderator(interaction):
            await interaction.response.send_message(
                "Only its owner, or a moderator (Manage Messages), can delete a workflow.", ephemeral=True)
            return
        await self.bot.store.delete_workflow(found.id)
        log.info("workflow_deleted", workflow_id=found.id, user_id=interaction.user.id)
        await interaction.response.send_message(
            f"Deleted {wording.code(found.name)}. Results made with it keep their buttons.", ephemeral=True)

    @workflow.command(name="restore", description="Make an older version of your workflow the newest again")
    @app_commands.describe(name="The workflow", version="The version to bring back (/workflow show lists them)")
    async def restore(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100],
                      version: app_commands.Range[int, 1, 1_000_000]) -> None:
        found = await self._found(interaction, name)
        if found is None:
            return
        if found.owner_id != interaction.user.id:
            await interaction.response.send_message("Only its owner can restore a version of a workflow.",
                                                    ephemeral=True)
            return
        restored = await self.bot.store.restore_version(found.id, version, interaction.user.id)
        if restored is None:
            await interaction.response.send_message(
                f"{wording.code(found.name)} has no version {version}; /workflow show lists them.", ephemeral=True)
            return
        await interaction.response.send_message(
            f"Restored version {version} of {wording.code(found.name)} as version {restored.version}.", ephemeral=True)

    @workflow.command(name="rate", description="Rate a workflow from 1 to 5 stars")
    @app_commands.describe(name="The workflow", stars="1 to 5")
    async def rate(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 100],
                   stars: app_commands.Range[int, 1, 5]) -> None:
        found = await self._found(interaction, name)
        if found is None:
            return
        rated = await self.bot.store.rate(found.id, interaction.user.id, stars)
        if rated is None:
            await interaction.response.send_message(NOT_FOUND.format(wording.code(found.name)), ephemeral=True)
            return
        average, count = rated
        await interaction.response.send_message(
            f"You gave {wording.code(found.name)} {stars} star{'s' if stars > 1 else ''}; its average is now "
            f"{average:.1f} from {wording.plural(count, 'rating')}.", ephemeral=True)

    @show.autocomplete("name")
    @share.autocomplete("name")
    @delete.autocomplete("name")
    @restore.autocomplete("name")
    @rate.autocomplete("name")
    async def name_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.names(interaction, current)
