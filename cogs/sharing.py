"""Sharing a result on a public web page (issue 21): the 🔗 Share button under every result (in a batch's
More menu), the private answer with its choice of showing the prompt and its Revoke button, and
/share revoke for the page's owner or a moderator.

A page is a signed, unguessable link (links.py `share_url`) to one result, kept in the store so it can be
revoked; the web app serves it (web/shares.py) while the share is live and the result not deleted. Every
button carries what it needs in its custom_id, so each works after any restart.

`Sharing` is the cog: the command, and the handlers of its buttons.
"""

# No `from __future__ import annotations` here: discord.py reads the parameters' annotations.

import re

import discord
import structlog
from discord import app_commands

from cogs.common import AreaCog, is_admin
from links import SHARE_ID_LENGTH, LinkError, link_secret, share_url, verify_share
from store.shares import Share
from ui.buttons import ID, _Guarded, answering
from ui.share_button import ShareButton

log = structlog.get_logger("bot")

WEB_OFF = "This bot has no public pages; the operator can turn them on with WEB_PORT and WEB_BASE_URL."
GONE = "That result is not kept any more."
ASK = ("Share this result on a public web page? Anyone with the link can see it (it is listed nowhere), and it "
       "shows the picture when the link is posted on Discord, X, Mastodon or in a messenger. You, or a "
       "moderator, can take it down at any time; deleting the result takes it down too.")
LINK_IN = re.compile(r"(?:^|/s/)([A-Za-z0-9_-]{40})(?=$|[/?#])")


class Sharing(AreaCog):
    """/share revoke, and the Share, Share with / without prompt and Revoke buttons."""

    # dynamic_items: set below, once its buttons are defined
    share = app_commands.Group(name="share", description="Public pages of results")

    @share.command(name="revoke", description="Take a shared page down (whoever shared it, or a moderator)")
    @app_commands.describe(link="The page's link, as it was shared (https://…/s/…)")
    async def revoke(self, interaction: discord.Interaction, link: app_commands.Range[str, 1, 300]) -> None:
        found = LINK_IN.search(link.strip())
        try:
            share_id = verify_share(await link_secret(self.bot.store, self.bot.settings), found[1] if found else "")
        except LinkError:
            await interaction.response.send_message(
                "That is not a share link of this bot: paste the whole link, like https://…/s/ followed by 40 "
                "letters and digits.", ephemeral=True)
            return
        await interaction.response.send_message(await self._revoke(interaction, share_id), ephemeral=True)

    # the buttons -----------------------------------------------------------------------

    async def on_share_button(self, interaction: discord.Interaction, generation_id: int) -> None:
        """Share, under a result: privately, to its owner, the choice of showing the prompt, and the links
        it already has, each with Revoke."""
        refusal = await self._refusal(interaction, generation_id)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        live = await self.bot.store.live_shares(generation_id)
        view = discord.ui.View(timeout=None)
        for show_prompt in (True, False):
            view.add_item(ShareMakeButton(generation_id, show_prompt))
        text = ASK
        if live:
            secret = await link_secret(self.bot.store, self.bot.settings)
            text += "\n\nShared now:\n" + "\n".join(
                f"• {_which(share)}: {share_url(self.bot.settings, secret, share.token)}" for share in live)
            for share in live:
                view.add_item(RevokeShareButton(share.token, _which(share)))
        await interaction.response.send_message(text, view=view, ephemeral=True)
        view.stop()

    async def on_make_button(self, interaction: discord.Interaction, generation_id: int, show_prompt: bool) -> None:
        """Share with / without prompt: the page is made (or the live one with that choice is given again)."""
        refusal = await self._refusal(interaction, generation_id)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        share = await self.bot.store.share_result(generation_id, interaction.guild_id, interaction.user.id,
                                                  show_prompt)
        url = share_url(self.bot.settings, await link_secret(self.bot.store, self.bot.settings), share.token)
        log.info("result_shared", generation_id=generation_id, share=share.token, show_prompt=show_prompt,
                 by=interaction.user.id)
        view = discord.ui.View(timeout=None)
        view.add_item(RevokeShareButton(share.token))
        await interaction.response.edit_message(
            content=f"🔗 Your public page, {_which(share)}:\n{url}\nAnyone with the link can see it. **Revoke** "
                    "takes it down at once; so does deleting the result.", view=view)
        view.stop()

    async def on_revoke_button(self, interaction: discord.Interaction, share_id: str) -> None:
        await interaction.response.edit_message(content=await self._revoke(interaction, share_id), view=None)

    # what they share -------------------------------------------------------------------

    async def _refusal(self, interaction: discord.Interaction, generation_id: int) -> str | None:
        """Why this person may not share that result now, or None."""
        settings = self.bot.settings
        if settings.web_port is None or settings.web_base_url is None:
            return WEB_OFF
        generation = await self.bot.store.get_generation(generation_id)
        if generation is None or generation.deleted_at is not None:
            return GONE
        if generation.user_id != interaction.user.id:
            return "Only the person who made this result can share it."
        return None

    async def _revoke(self, interaction: discord.Interaction, share_id: str) -> str:
        """Revoke a share for its owner, a moderator of its server or a bot admin; the answer in words."""
        share = await self.bot.store.get_share(share_id)
        if share is None:
            return "That link is not known to this bot."
        moderator = interaction.permissions.manage_messages and (share.guild_id == interaction.guild_id)
        if share.owner_id != interaction.user.id and not moderator and not is_admin(self.bot, interaction):
            return "Only the person who shared this page, or a moderator of its server, can take it down."
        if not await self.bot.store.revoke_share(share_id, interaction.user.id):
            return "That page was already taken down."
        log.info("share_revoked", share=share_id, generation_id=share.generation_id, by=interaction.user.id)
        return "Taken down: the page now says “Not found”, and the link will never work again."


def _which(share: Share) -> str:
    return "with the prompt" if share.show_prompt else "without the prompt"


class ShareMakeButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                      template=rf"cf:shmk:(?P<gen>{ID}):(?P<prompt>[01])"):
    """Share with prompt / Share without prompt, in the owner's private answer to Share."""

    def __init__(self, generation_id: int, show_prompt: bool) -> None:
        self.generation_id, self.show_prompt = generation_id, show_prompt
        super().__init__(discord.ui.Button(
            label="Share with prompt" if show_prompt else "Share without prompt", emoji="🔗",
            style=discord.ButtonStyle.primary if show_prompt else discord.ButtonStyle.secondary, row=0,
            custom_id=f"cf:shmk:{generation_id}:{int(show_prompt)}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "ShareMakeButton":
        return cls(int(match["gen"]), match["prompt"] == "1")

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Sharing").on_make_button(interaction, self.generation_id, self.show_prompt)


class RevokeShareButton(_Guarded, discord.ui.DynamicItem[discord.ui.Button],
                        template=rf"cf:shrev:(?P<share>[A-Za-z0-9_-]{{{SHARE_ID_LENGTH}}})"):
    """Revoke, under a share link: the page is taken down at once."""

    def __init__(self, share_id: str, which: str = "") -> None:
        self.share_id = share_id
        super().__init__(discord.ui.Button(label=f"Revoke ({which})" if which else "Revoke", emoji="⛔",
                                           style=discord.ButtonStyle.danger, custom_id=f"cf:shrev:{share_id}", row=1))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "RevokeShareButton":
        return cls(match["share"])

    async def clicked(self, interaction: discord.Interaction) -> None:
        await answering(interaction, "Sharing").on_revoke_button(interaction, self.share_id)


Sharing.dynamic_items = (ShareButton, ShareMakeButton, RevokeShareButton)
