"""What /credits buy does (the command itself is in cogs/credits.py): a private answer with a Stripe
Checkout link for each of the operator's credit packs, or, in words, why not (buying is off, there are no
packs, Stripe cannot be reached). The credits arrive through Stripe's webhook (web/stripe_webhook.py),
not here; the buyer sees them in /credits balance.
"""

# No `from __future__ import annotations` here: discord.py reads the cogs' annotations at runtime.

import asyncio

import discord
import structlog

from cogs.common import AreaCog, tell
from jobs.payments import SESSION_MINUTES, Checkout, Offer, PaymentError

log = structlog.get_logger("bot")

URL_LIMIT = 512  # Discord's longest link button URL; a longer link goes in the text instead


class Payments(AreaCog):
    """Stripe Checkout for credits: `buy`, called by /credits buy."""

    def __init__(self, bot) -> None:
        super().__init__(bot)
        self.checkout = Checkout(bot.settings, bot.store)

    async def cog_unload(self) -> None:
        await super().cog_unload()
        await self.checkout.close()

    async def buy(self, interaction: discord.Interaction, pack: str | None = None) -> None:
        """Answer privately with a Checkout link for each pack (or the one named), or why there is none."""
        if interaction.guild_id is None:
            await tell(interaction, "Credits belong to a server: use /credits buy in the server you want them in.")
            return
        if not self.checkout.enabled:
            await tell(interaction, "Buying credits is off on this bot: its operator has not set up payments.")
            return
        if not self.checkout.packs or (pack is not None and pack not in self.checkout.packs):
            names = ", ".join(f"`{name}`" for name in self.checkout.packs)
            await tell(interaction, f"There is no pack `{pack}` here; the packs are {names}." if pack and names
                       else "There are no credit packs for sale on this bot yet: ask its operator.")
            return
        try:
            wait = await asyncio.wait_for(self.bot.limiter.hit(interaction.user.id), 1.0)
        except TimeoutError:
            wait = 0.0
        if wait:
            await tell(interaction, f"You are going a bit fast. Try again in {max(1, round(wait))} seconds.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        back = f"https://discord.com/channels/{interaction.guild_id}/{interaction.channel_id}"
        try:
            offers = await self.checkout.open_sessions(interaction.guild_id, interaction.user.id, back,
                                                       None if pack is None else [pack])
        except PaymentError as error:
            await tell(interaction, str(error))
            return
        embed, view = offer_message(offers)
        try:
            await interaction.edit_original_response(embed=embed, view=view)
        except discord.HTTPException as error:
            log.warning("answer_failed", interaction_id=interaction.id, status=error.status)


def offer_message(offers: list[Offer]) -> tuple[discord.Embed, discord.ui.View]:
    """The private answer: the packs, and a link button to each one's payment page."""
    view = discord.ui.View(timeout=None)  # link buttons only: nothing to answer, nothing kept in memory
    lines = []
    for offer in offers:
        label = f"{offer.credits} credits: {offer.price}"
        if len(offer.url) <= URL_LIMIT:
            view.add_item(discord.ui.Button(style=discord.ButtonStyle.link, label=f"Buy {label}"[:80], url=offer.url))
            lines.append(f"**{offer.pack}**: {label}")
        else:
            lines.append(f"**{offer.pack}**: {label}, [pay here]({offer.url})")
    embed = discord.Embed(title="Buy credits", description="\n".join(lines) + (
        f"\n\nEach button opens Stripe's payment page, good for {SESSION_MINUTES} minutes. The credits are added "
        "to your balance in this server once the payment goes through: /credits balance shows them."))
    return embed, view
