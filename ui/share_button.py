"""The 🔗 Share button under a result (issue 21); cogs/sharing.py answers it.

It sits apart from ui/buttons.py, which imports it for `result_view`, so that the two never import each
other; like the buttons there, it is a `DynamicItem` whose custom_id names the generation (a plain button
in a view would not do: discord.py forgets the view's DynamicItems when such a view is stopped), and its
failure is answered in words (bot.on_item_error).
"""

from __future__ import annotations

import re

import discord


class ShareButton(discord.ui.DynamicItem[discord.ui.Button], template=r"cf:share:(?P<gen>\d{1,18})"):
    """🔗 Share: for the result's owner, privately, the choice of a public page with or without the prompt."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id
        super().__init__(discord.ui.Button(label="Share", style=discord.ButtonStyle.secondary,
                                           custom_id=f"cf:share:{generation_id}", emoji="🔗", row=2))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ShareButton:
        return cls(int(match["gen"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.client.get_cog("Sharing").on_share_button(interaction, self.generation_id)
        except Exception as error:
            await interaction.client.on_item_error(interaction, error, self.custom_id)
