"""Finding work again: /history and /favorites (a contact sheet of nine, pages and a menu to open
one), the Favorite and Delete buttons under every result, and /gallery's private link to the web
gallery. Searches are kept in the store, so the page buttons work after any restart.

`History` is the cog: the commands, and the handlers of its buttons and menus.
"""

# No `from __future__ import annotations` here: discord.py reads the parameters' annotations.

import datetime as dt
import io
import re
import time
from pathlib import Path

import discord
import structlog
from discord import app_commands

from cogs.common import AreaCog

from jobs import wording
from ui.contact_sheet import contact_sheet
from safe_text import clip
from cogs.generate import matching
from store.gallery import Query
from ui.buttons import ID, DeleteButton, FavoriteButton, _Guarded, answering, result_view
from ui.views import jump_url, result_embed
from links import gallery_url, link_secret
from results.folder import OutputError

log = structlog.get_logger("bot")

PAGE = 9
KIND_NAMES = {"txt2img": "Text to image", "img2img": "Edited", "inpaint": "Inpainted", "outpaint": "Zoomed out",
              "controlnet": "ControlNet", "upscale": "Upscaled", "animate": "Animation"}


class History(AreaCog):
    """/history, /favorites and /gallery, and the Favorite and Delete buttons under every result."""

    # dynamic_items: set below, once its buttons are defined

    @app_commands.command(name="history", description="Your results here, newest first, nine at a time")
    @app_commands.describe(search="Words in the prompt", kind="Only this kind of result", model="Only this model",
                           favorites="Only your favorites", since="From this day (YYYY-MM-DD)",
                           until="Up to and including this day (YYYY-MM-DD)",
                           user="Moderators: someone else's results")
    @app_commands.choices(kind=[app_commands.Choice(name=label, value=name) for name, label in KIND_NAMES.items()])
    async def history(self, interaction: discord.Interaction, search: app_commands.Range[str, 1, 100] | None = None,
                      kind: app_commands.Choice[str] | None = None, model: app_commands.Range[str, 1, 100] | None = None,
                      favorites: bool = False, since: app_commands.Range[str, 1, 10] | None = None,
                      until: app_commands.Range[str, 1, 10] | None = None, user: discord.User | None = None) -> None:
        await self._start(interaction, search, kind.value if kind else None, model, favorites, since, until, user)

    @app_commands.command(name="favorites", description="The results you marked with ⭐, newest first")
    @app_commands.describe(search="Words in the prompt")
    async def favorites(self, interaction: discord.Interaction,
                        search: app_commands.Range[str, 1, 100] | None = None) -> None:
        await self._start(interaction, search, None, None, True, None, None, None)

    @app_commands.command(name="gallery", description="A private link to your results here, in a web gallery")
    async def gallery(self, interaction: discord.Interaction) -> None:
        settings = self.bot.settings
        if settings.web_port is None or settings.web_base_url is None:
            await interaction.response.send_message(
                "This bot has no web gallery; the operator can turn it on with WEB_PORT and WEB_BASE_URL.",
                ephemeral=True)
            return
        secret = await link_secret(self.bot.store, settings)
        url = gallery_url(settings, secret, interaction.user.id, interaction.guild_id, time.time())
        await interaction.response.send_message(
            f"Your gallery for this server, for the next {settings.gallery_link_hours:g} hours (only for you; "
            f"anyone with the link can see it, so keep it to yourself):\n{url}", ephemeral=True)

    @history.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching([*self.bot.settings.model_presets, self.bot.settings.checkpoint], current)

    async def _start(self, interaction: discord.Interaction, search, kind, model, favorites, since, until,
                     user) -> None:
        whose = user.id if user is not None else interaction.user.id
        if whose != interaction.user.id and not (interaction.permissions.manage_messages
                                                 or interaction.user.id in self.bot.settings.admin_user_ids):
            await interaction.response.send_message("Only moderators can see another member's history.",
                                                    ephemeral=True)
            return
        try:
            start, end = day(since, "since"), day(until, "until")
        except ValueError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        query = Query(whose, interaction.guild_id, text=search or "", kind=kind, model=model, favorites=favorites,
                      since=start, until=end + 86400 if end is not None else None)
        query_id = await self.bot.store.save_query(interaction.user.id, query)
        await self.show_history(interaction, query_id, 0)


    # the buttons and menus -------------------------------------------------------------

    async def on_favorite_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or generation.deleted_at is not None:
            await interaction.response.send_message("That result is not kept any more.", ephemeral=True)
            return
        marked = generation_id in await self.bot.store.favorite_ids(interaction.user.id, [generation_id])
        await self.bot.store.set_favorite(interaction.user.id, generation_id, not marked)
        await interaction.response.send_message(
            "⭐ Taken out of your favorites." if marked else "⭐ Added to your favorites: /favorites shows them.",
            ephemeral=True)

    async def on_delete_button(self, interaction: discord.Interaction, generation_id: int, sure: bool) -> None:
        """Delete: its owner or a moderator; asked once. The message goes, the result is kept out of history
        and the gallery, and its files go to the output cap."""
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or generation.deleted_at is not None:
            await interaction.response.send_message("That result is already deleted.", ephemeral=True)
            return
        if interaction.user.id != generation.user_id and not interaction.permissions.manage_messages:
            await interaction.response.send_message("Only the person who made this, or a moderator, can delete it.",
                                                    ephemeral=True)
            return
        if not sure:
            view = discord.ui.View(timeout=None)
            view.add_item(DeleteButton(generation_id, sure=True))
            await interaction.response.send_message("Delete this result for good? The message and its files go.",
                                                    view=view, ephemeral=True)
            view.stop()
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.store.mark_deleted(generation_id)
        for name in generation.files:
            try:  # from the bucket too with OUTPUT_STORE; if the store fails, retention takes it later
                await self.bot.outputs.remove(name)
            except OutputError as error:
                log.warning("result_file_not_removed", file=name, error=str(error))
        if generation.message_id is not None:
            try:
                await self.bot.get_partial_messageable(generation.channel_id).get_partial_message(
                    generation.message_id).delete()
            except discord.NotFound:
                pass
            except discord.HTTPException as error:
                log.warning("result_message_kept", generation_id=generation_id, status=error.status)
        log.info("generation_deleted", generation_id=generation_id, by=interaction.user.id)
        await interaction.edit_original_response(content="🗑️ Deleted.", view=None)

    async def show_history(self, interaction: discord.Interaction, query_id: int, page: int) -> None:
        """A page of a saved search, as the response to a deferred interaction."""
        saved = await self.bot.store.saved_query(query_id)
        if saved is None or saved[0] != interaction.user.id:
            await interaction.edit_original_response(content="That list is not yours; run /history yourself.",
                                                     attachments=[], view=None)
            return
        query = saved[1]
        found, total = await self.bot.store.find_generations(query, offset=page * PAGE, limit=PAGE)
        if not found:
            await interaction.edit_original_response(content=nothing_found(query, interaction.user.id),
                                                     attachments=[], view=None)
            return
        sheet = await contact_sheet([await self._sheet_tile(generation) for generation in found])
        view = history_view(query_id, page, total, found)
        await interaction.edit_original_response(
            content=summary(query, interaction.user.id, page, total, found),
            attachments=[discord.File(io.BytesIO(sheet), filename="history.webp")], view=view)
        view.stop()

    async def _sheet_tile(self, generation) -> Path | None:
        """The result's cached gallery thumbnail (made once), or its file when it has none (a video, gone)."""
        if not generation.files:
            return None
        return await self.bot.thumbs.get(generation.files[0]) or self.bot.settings.outputs_dir / generation.files[0]

    async def open_result(self, interaction: discord.Interaction, generation_id: int) -> None:
        """One result from /history, privately: its embed, its image and the usual buttons, and where it was posted."""
        generation = await self.bot.store.get_generation(generation_id)
        allowed = generation is not None and generation.deleted_at is None and (
            generation.user_id == interaction.user.id or interaction.permissions.manage_messages)
        if not allowed:
            await interaction.response.send_message("That result is not kept any more.", ephemeral=True)
            return
        embed = result_embed(generation)
        if generation.attachment_urls and not generation.files[0].lower().endswith((".mp4", ".webm")):
            embed.set_image(url=generation.attachment_urls[0])
        posted = f"Posted here: {jump_url(vars(generation))}" if generation.message_id else "Not posted."
        view = result_view(generation, interaction.filesize_limit or self.bot.settings.upload_limit)
        await interaction.response.send_message(posted, embed=embed, view=view, ephemeral=True)
        view.stop()


class HistoryPage(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                  template=rf"cf:hist:(?P<query>{ID}):(?P<page>\d{{1,6}})"):
    """Newer / Older under a contact sheet: the same search, another page."""

    def __init__(self, query_id: int, page: int, label: str = "", disabled: bool = False) -> None:
        self.query_id, self.page = query_id, page
        super().__init__(discord.ui.Button(label=label or "Page", style=discord.ButtonStyle.secondary, row=0,
                                           custom_id=f"cf:hist:{query_id}:{page}", disabled=disabled))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "HistoryPage":
        return cls(int(match["query"]), int(match["page"]))

    async def clicked(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await answering(interaction, "History").show_history(interaction, self.query_id, self.page)


class HistoryOpen(_Guarded, discord.ui.DynamicItem[discord.ui.Select], template=r"cf:histopen"):
    """The menu under a contact sheet: open one of its nine results, privately."""

    def __init__(self, options: list[discord.SelectOption]) -> None:
        super().__init__(discord.ui.Select(custom_id="cf:histopen", placeholder="Open one", options=options, row=1))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> "HistoryOpen":
        return cls(item.options)

    async def clicked(self, interaction: discord.Interaction) -> None:
        value = (self.item.values or [""])[0]
        if not value.isdigit() or len(value) > 18:
            await interaction.response.send_message("That result is not kept any more.", ephemeral=True)
            return
        await answering(interaction, "History").open_result(interaction, int(value))


def history_view(query_id: int, page: int, total: int, found: list) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    pages = -(-total // PAGE)
    view.add_item(HistoryPage(query_id, max(0, page - 1), "◀ Newer", disabled=page == 0))
    view.add_item(HistoryPage(query_id, page + 1, "Older ▶", disabled=page + 1 >= pages))
    view.add_item(HistoryOpen([
        discord.SelectOption(value=str(generation.id), label=clip(f"{number}. {describe(generation)}", 100))
        for number, generation in enumerate(found, start=1)]))
    return view


def describe(generation) -> str:
    prompt = str(generation.params.get("prompt") or "")
    return f"{KIND_NAMES.get(generation.kind, 'Result')}: {prompt}" if prompt else KIND_NAMES.get(generation.kind,
                                                                                                  "Result")


def when(created_at: float) -> str:
    return dt.datetime.fromtimestamp(created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def day(text: str | None, name: str) -> float | None:
    """The start of a UTC day written YYYY-MM-DD, as epoch seconds; ValueError with a sentence otherwise."""
    if text is None:
        return None
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        raise ValueError(f"`{name}` is a day written like 2026-11-28.") from None


def filters(query: Query) -> str:
    parts = [f"search {wording.code(query.text)}" if query.text else "",
             KIND_NAMES.get(query.kind or "", "").lower() if query.kind else "",
             f"model {wording.code(query.model)}" if query.model else "",
             "favorites only" if query.favorites else "",
             f"from {when(query.since)[:10]}" if query.since is not None else "",
             f"until {when(query.until - 86400)[:10]}" if query.until is not None else ""]
    shown = [part for part in parts if part]
    return f" ({', '.join(shown)})" if shown else ""


def summary(query: Query, viewer_id: int, page: int, total: int, found: list) -> str:
    """The page's heading, then when each result was made, in the reader's own time zone (Discord
    shows a `<t:…:f>` timestamp in each person's local time), numbered as in the menu."""
    whose = "Your results here" if query.user_id == viewer_id else f"<@{query.user_id}>'s results here"
    first = page * PAGE + 1
    made = "\n".join(f"{number}. <t:{int(generation.created_at)}:f>" for number, generation in enumerate(found, 1))
    return (f"{whose}{filters(query)}: {first}–{first + len(found) - 1} of {total}, newest first. "
            f"Open one with the menu to see it with its buttons.\n{made}")


def nothing_found(query: Query, viewer_id: int) -> str:
    whose = "You have" if query.user_id == viewer_id else f"<@{query.user_id}> has"
    return f"{whose} no results here{filters(query)}." + (" Mark some with ⭐ Favorite." if query.favorites else "")


History.dynamic_items = (HistoryPage, HistoryOpen, FavoriteButton, DeleteButton)
