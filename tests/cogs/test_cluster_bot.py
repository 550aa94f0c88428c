"""The bot on PostgreSQL (DATABASE_URL), through the fake Discord and the fake ComfyUI: it dispatches
alone while it is the only process; when its database goes away (every byte between them stops, as
when the network to the database fails) it stops dispatching, answers 503 on /readyz and refuses new
jobs in words; when the database returns it takes the lease again and jobs run.
"""

from __future__ import annotations

from tests.bot_harness import Running, bot_settings, result_of
from tests.cluster.conftest import FreezableProxy


async def test_a_bot_that_loses_its_database_says_so_and_goes_on_when_it_returns(comfy, discord_fake, tmp_path, pg_dsn):
    proxy = FreezableProxy(pg_dsn)
    running = Running(discord_fake)
    try:
        bot = await running.start(bot_settings(tmp_path, comfy.url, database_url=await proxy.start(),
                                               process_name="bot-x"))
        await discord_fake.wait_for(lambda: bot.scheduler.leading and bot.ready() == (True, ""), timeout=15)
        first = await discord_fake.slash("generate", {"prompt": "before", "width": 64, "height": 64})
        assert (await result_of(discord_fake, first)).attachments

        proxy.frozen = True  # the database is gone for the bot: nothing passes, no connection closes
        await discord_fake.wait_for(lambda: not bot.scheduler.leading, timeout=15)
        await discord_fake.wait_for(lambda: bot.ready() == (False, "the database cannot be reached"), timeout=15)
        refused = await discord_fake.slash("generate", {"prompt": "while away", "width": 64, "height": 64})
        answer = await discord_fake.wait_for_message(lambda m: m.interaction_id == refused.id, timeout=10)
        assert answer.ephemeral and answer.content == ("I didn't queue that: the bot cannot reach its database "
                                                       "right now, so it takes no new jobs. Try again in a minute.")

        proxy.frozen = False  # it is back: the bus reconnects, the lease is taken again
        await discord_fake.wait_for(lambda: bot.scheduler.leading and bot.ready() == (True, ""), timeout=20)
        after = await discord_fake.slash("generate", {"prompt": "after", "width": 64, "height": 64},
                                         user_id="6001")
        assert (await result_of(discord_fake, after, timeout=20)).attachments
    finally:
        await running.stop()
        await proxy.stop()
