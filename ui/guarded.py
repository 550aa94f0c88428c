"""What every restart-proof button and menu shares: the cog that answers a click, the shape of an id in a
custom_id, and the guard that answers a failed click in words. Apart from ui/buttons.py so that the modules
of buttons it shows (ui/video_buttons.py) can use them without importing it.
"""

from __future__ import annotations

from typing import Any

import discord


def answering(interaction: discord.Interaction, cog: str) -> Any:
    """The cog that answers a click, looked up by its name (ui/ sits below the cogs)."""
    return interaction.client.get_cog(cog)


ID = r"\d{1,18}"  # ids in custom_ids: longer ones are out of SQLite's range and match no button


class _Guarded:
    """A button whose failure is answered in words (bot.on_item_error), never left as "interaction failed"."""

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.clicked(interaction)
        except Exception as error:
            await interaction.client.on_item_error(interaction, error, self.custom_id)
