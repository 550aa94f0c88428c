"""/credits: a person's balance and history, gifts, buying (cogs/payments.py), and admins granting and taking
back credits (audited). Everything is answered privately. Off unless CREDITS_ENABLED (jobs/credits.py).
"""

# No `from __future__ import annotations` here: discord.py reads the command parameters' annotations at runtime.

import discord
import structlog
from discord import app_commands

from cogs.common import AreaCog, is_server_admin
from jobs import wording
from safe_text import clip

log = structlog.get_logger("bot")

OFF = "Credits are off on this bot: every job is free."
OUTSIDE = "Credits belong to a Discord server: use this command in one."
SHOWN = 15  # entries /credits history lists
WORDS = {"grant": "granted", "allowance": "daily allowance", "purchase": "bought", "reserve": "job queued",
         "spend": "job done", "refund": "refunded", "gift": "gift", "chargeback": "payment taken back",
         "expiry": "expired", "take": "taken back"}


class Credits(AreaCog):
    """/credits balance|history|gift|buy|grant|take."""

    credits = app_commands.Group(name="credits", description="Credits: what jobs cost here, and what you have")

    async def _ready(self, interaction: discord.Interaction) -> bool:
        """Whether credits can be used here; answers why not."""
        if not self.bot.settings.credits_enabled:
            await interaction.response.send_message(OFF, ephemeral=True)
            return False
        if interaction.guild_id is None:
            await interaction.response.send_message(OUTSIDE, ephemeral=True)
            return False
        return True

    @credits.command(name="balance", description="How many credits you have here, and what jobs cost")
    async def balance(self, interaction: discord.Interaction) -> None:
        if not await self._ready(interaction):
            return
        settings = self.bot.settings
        have = await self.bot.store.balance(interaction.guild_id, interaction.user.id)
        prices = ", ".join(f"{wording.noun(kind)} ({kind}) {price}" for kind, price in settings.credit_prices.items()
                           if price > 0)
        lines = [f"You have **{wording.plural(have, 'credit')}** here." + (" You owe the bot credits: paid jobs "
                 "wait until your balance is back above their price." if have < 0 else ""),
                 f"Prices per image, per started {settings.credit_pixels / 1024 / 1024:g} megapixels: {prices}."]
        if settings.credits_daily_allowance:
            lines.append(f"Each day your first paid job here brings {wording.plural(settings.credits_daily_allowance, 'free credit')}"
                         " (what is left of them expires the next day).")
        lines.append("/credits history shows what came and went; /credits buy adds more where the operator sells "
                     "them; /credits gift gives some of yours to someone.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @credits.command(name="history", description="Your latest credits in and out here")
    async def history(self, interaction: discord.Interaction) -> None:
        if not await self._ready(interaction):
            return
        entries = await self.bot.store.credit_history(interaction.guild_id, interaction.user.id, SHOWN)
        if not entries:
            await interaction.response.send_message("You have had no credits here yet.", ephemeral=True)
            return
        lines = [f"<t:{int(e.created_at)}:R> {e.amount:+d} {WORDS.get(e.kind, e.kind)}"
                 + (f" (job {e.job_id})" if e.job_id else "") + (f": {clip(e.reason, 80)}" if e.kind in (
                     "grant", "take", "gift") else "") + f" · balance {e.balance}" for e in entries]
        await interaction.response.send_message(clip("\n".join(lines), 1900), ephemeral=True)

    @credits.command(name="gift", description="Give some of your credits to someone here")
    @app_commands.describe(person="Who gets them", amount="How many of yours")
    async def gift(self, interaction: discord.Interaction, person: discord.User,
                   amount: app_commands.Range[int, 1, 1_000_000]) -> None:
        if not await self._ready(interaction):
            return
        if person.id == interaction.user.id or person.bot:
            await interaction.response.send_message("Give credits to another person here (not yourself, not a bot).",
                                                    ephemeral=True)
            return
        given = await self.bot.store.gift(interaction.guild_id, interaction.user.id, person.id, amount)
        if given is None:
            have = await self.bot.store.balance(interaction.guild_id, interaction.user.id)
            await interaction.response.send_message(
                f"You have {wording.plural(have, 'credit')}, fewer than {amount}: nothing was given.", ephemeral=True)
            return
        log.info("credits_gift", guild_id=interaction.guild_id, giver=interaction.user.id, receiver=person.id,
                 amount=amount)
        await interaction.response.send_message(
            f"Gave {wording.plural(amount, 'credit')} to <@{person.id}>; you have {given.balance} left.",
            ephemeral=True)

    @credits.command(name="buy", description="Buy credits (a private payment link)")
    async def buy(self, interaction: discord.Interaction) -> None:
        if not await self._ready(interaction):
            return
        payments = self.bot.get_cog("Payments")
        if payments is None:
            await interaction.response.send_message("This bot does not sell credits; ask an admin for some.",
                                                    ephemeral=True)
            return
        await payments.buy(interaction)

    @credits.command(name="grant", description="Admins: give someone credits, with a reason (audited)")
    @app_commands.describe(person="Who gets them", amount="How many", reason="Why (kept in the audit log)")
    async def grant(self, interaction: discord.Interaction, person: discord.User,
                    amount: app_commands.Range[int, 1, 1_000_000], reason: app_commands.Range[str, 1, 200]) -> None:
        await self._admin(interaction, person, amount, reason, "grant")

    @credits.command(name="take", description="Admins: take credits back from someone, with a reason (audited)")
    @app_commands.describe(person="From whom", amount="How many", reason="Why (kept in the audit log)")
    async def take(self, interaction: discord.Interaction, person: discord.User,
                   amount: app_commands.Range[int, 1, 1_000_000], reason: app_commands.Range[str, 1, 200]) -> None:
        await self._admin(interaction, person, amount, reason, "take")

    async def _admin(self, interaction: discord.Interaction, person: discord.User, amount: int, reason: str,
                     kind: str) -> None:
        if not await self._ready(interaction):
            return
        if not is_server_admin(self.bot, interaction):
            await interaction.response.send_message("Only admins (Manage Server) can grant or take back credits.",
                                                    ephemeral=True)
            return
        entry = await self.bot.store.add_credits(interaction.guild_id, person.id, kind,
                                                 amount if kind == "grant" else -amount, reason,
                                                 actor_id=interaction.user.id)
        await self.bot.store.audit(interaction.guild_id, interaction.user.id, f"credits {kind}", user_id=person.id,
                                   amount=amount, reason=reason, balance=entry.balance)
        done = "Gave" if kind == "grant" else "Took back"
        await interaction.response.send_message(
            f"{done} {wording.plural(amount, 'credit')} {'to' if kind == 'grant' else 'from'} <@{person.id}> "
            f"({clip(reason, 100)}); their balance is {entry.balance}.", ephemeral=True)
