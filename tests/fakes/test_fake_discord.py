"""Tests of the fake Discord (tests/fakes/discord.py), driving a real, unmodified discord.py bot."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import re
import struct
import time
import zlib

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord.webhook.async_ import async_context, interaction_response_params

from tests.fakes.discord import FakeDiscord, snowflake_time


def make_png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG = make_png()


# ---------------------------------------------------------------------------------------------------
# the bot under test (tiny, unmodified discord.py)
# ---------------------------------------------------------------------------------------------------
class PingButton(discord.ui.DynamicItem[discord.ui.Button], template=r"ping:(?P<n>[0-9]+)"):
    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Again {n}", style=discord.ButtonStyle.secondary,
                                           custom_id=f"ping:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        await interaction.response.defer()  # deferred update (type 6)
        # the click handler fetches the clicked message back from the fake and downloads its PNG
        msg = await interaction.channel.fetch_message(interaction.message.id)
        att = msg.attachments[0]
        png = await att.read()
        await interaction.edit_original_response(content=f"{msg.content} (clicked)")
        await interaction.followup.send(
            f"clicked {self.n} by {interaction.user.name} on {bot.instance}: {att.filename} {len(png)} bytes "
            f"{att.width}x{att.height}")
        bot.events.append(("click", self.n, png == PNG))


class Counter(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=60)
        self.n = 0

    @discord.ui.button(label="Clicked 0", custom_id="counter")
    async def bump(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.n += 1
        button.label = f"Clicked {self.n}"
        await interaction.response.edit_message(content=f"count {self.n}", view=self)  # type 7


class Feedback(discord.ui.Modal, title="Feedback"):
    """A text input in a (legacy) action row, a Label-wrapped select, a text display, an optional input."""

    summary = discord.ui.TextInput(label="Summary", custom_id="summary", min_length=2, max_length=20)
    size = discord.ui.Label(text="Size", component=discord.ui.Select(
        custom_id="size", id=2, required=True, min_values=1, max_values=2,
        options=[discord.SelectOption(label=n.title(), value=n) for n in ("small", "medium", "large")]))
    note = discord.ui.TextDisplay("Thanks for taking the time.")
    extra = discord.ui.Label(text="Anything else?", component=discord.ui.TextInput(
        custom_id="extra", style=discord.TextStyle.paragraph, required=False))

    def __init__(self, **kwargs) -> None:
        super().__init__(custom_id="feedback", timeout=60, **kwargs)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        interaction.client.events.append(("feedback", interaction.data))
        text = (f"feedback summary={self.summary.value!r} size={self.size.component.values} "
                f"extra={self.extra.component.value!r}")
        if interaction.message is not None:  # opened from a button on a message: update that message
            await interaction.response.edit_message(content=f"{text} on {interaction.message.id}", view=None)
        else:
            await interaction.response.send_message(text)


class Form(discord.ui.Modal, title="Form"):
    """Entity select and file upload: discord.py resolves their values from ``data.resolved``."""

    who = discord.ui.Label(text="Who", component=discord.ui.UserSelect(custom_id="who", max_values=2))
    files = discord.ui.Label(text="Files", component=discord.ui.FileUpload(custom_id="files", max_values=2))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        files = [(a.filename, await a.read()) for a in self.files.component.values]
        await interaction.response.send_message(
            f"form who={[u.name for u in self.who.component.values]} files={files}")


class Survey(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=60)

    @discord.ui.button(label="Answer", custom_id="survey:answer")
    async def answer(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(Feedback())


class BotMixin:
    def __init__(self, instance: str = "bot1", **kwargs) -> None:
        intents = discord.Intents.default()
        intents.members = False
        intents.message_content = False
        super().__init__(command_prefix="!", intents=intents, chunk_guilds_at_startup=False,
                         guild_ready_timeout=0.05, help_command=None, **kwargs)
        self.instance = instance
        self.results: dict = {}
        self.events: list = []

    async def setup_hook(self) -> None:
        self.add_dynamic_items(PingButton)
        register_commands(self)
        await self.tree.sync()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # restart-proof modals: no in-memory discord.ui.Modal, the handler parses the raw submission
        if interaction.type is discord.InteractionType.modal_submit and interaction.data["custom_id"].startswith("ticket:"):
            self.events.append(("raw modal", interaction.data))
            found: dict = {}
            for comp in interaction.data["components"]:
                inner = comp["components"] if comp["type"] == 1 else [comp.get("component") or {}]
                for c in inner:
                    if "custom_id" in c:
                        found[c["custom_id"]] = c.get("value", c.get("values"))
            await interaction.response.send_message(f"{interaction.data['custom_id']} {sorted(found.items())}")


class FakeBot(BotMixin, commands.Bot):
    pass


class FakeShardedBot(BotMixin, commands.AutoShardedBot):
    pass


def _err(exc: discord.HTTPException) -> tuple[int, int, str]:
    return exc.status, exc.code, exc.text


def register_commands(bot: commands.Bot) -> None:
    tree = bot.tree

    @tree.command(description="defer, two progress edits, a followup with a PNG and a button")
    async def ping(interaction: discord.Interaction, text: str, count: int = 2) -> None:
        await interaction.response.defer()
        for i in range(1, count + 1):
            await interaction.edit_original_response(content=f"working {i}/{count}")
        view = discord.ui.View(timeout=None)
        view.add_item(PingButton(1))
        await interaction.followup.send(f"pong: {text}", file=discord.File(io.BytesIO(PNG), "pong.png"), view=view)

    @tree.command(description="acknowledges too late")
    async def slow(interaction: discord.Interaction, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await interaction.response.defer()
        except discord.HTTPException as exc:
            bot.results["slow"] = _err(exc)

    @tree.command(description="acknowledges twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one")
        # a second, independent acknowledgement of the same interaction (as a second handler would do)
        adapter = async_context.get()
        try:
            await adapter.create_interaction_response(
                interaction.id, interaction.token, session=interaction._session,
                params=interaction_response_params(4, {"content": "two"}))
        except discord.HTTPException as exc:
            bot.results["twice"] = _err(exc)

    @tree.command(description="uses the token after it expired")
    async def expire(interaction: discord.Interaction, delay: float) -> None:
        await interaction.response.defer()
        await asyncio.sleep(delay)
        try:
            await interaction.edit_original_response(content="late edit")
        except discord.HTTPException as exc:
            bot.results["expire-edit"] = _err(exc)
        try:
            await interaction.followup.send("late followup")
        except discord.HTTPException as exc:
            bot.results["expire-followup"] = _err(exc)

    @tree.command(description="uploads size bytes as a followup and to the channel")
    async def upload(interaction: discord.Interaction, size: int) -> None:
        await interaction.response.defer()
        out = bot.results.setdefault("upload", {})
        try:
            await interaction.followup.send(file=discord.File(io.BytesIO(b"x" * size), "blob.bin"))
            out[size, "followup"] = "ok"
        except discord.HTTPException as exc:
            out[size, "followup"] = _err(exc)
        try:
            await interaction.channel.send(file=discord.File(io.BytesIO(b"y" * size), "blob.bin"))
            out[size, "channel"] = "ok"
        except discord.HTTPException as exc:
            out[size, "channel"] = _err(exc)
        await interaction.followup.send(f"upload {size} done")

    @tree.command(description="sends something Discord rejects, then recovers")
    @app_commands.choices(what=[app_commands.Choice(name=n, value=n)
                                for n in ("label", "custom_id", "duplicate", "content", "fields", "embed_total")])
    async def badui(interaction: discord.Interaction, what: str) -> None:
        view = discord.ui.View()
        kwargs: dict = {}
        if what == "label":
            view.add_item(discord.ui.Button(label="x" * 81, custom_id="ok"))
        elif what == "custom_id":
            view.add_item(discord.ui.Button(label="long", custom_id="state:" + "0" * 100))
        elif what == "duplicate":
            view.add_item(discord.ui.Button(label="a", custom_id="same"))
            view.add_item(discord.ui.Button(label="b", custom_id="same"))
        elif what == "content":
            kwargs["content"] = "x" * 2001
        elif what == "fields":
            embed = discord.Embed(title="t")
            for i in range(26):
                embed.add_field(name=f"f{i}", value="v")
            kwargs["embed"] = embed
        elif what == "embed_total":
            kwargs["embeds"] = [discord.Embed(description="d" * 4000), discord.Embed(description="d" * 2001)]
        try:
            await interaction.response.send_message(view=view, **({"content": "bad"} | kwargs))
            bot.results[what] = "accepted"
        except discord.HTTPException as exc:
            bot.results[what] = _err(exc)
            # a rejected callback does not acknowledge: the bot can still answer properly
            await interaction.response.send_message(f"recovered from {what}")

    @tree.command(description="edits the response and a channel message n times, fast")
    async def edits(interaction: discord.Interaction, n: int) -> None:
        t0 = time.monotonic()
        await interaction.response.send_message("edit 0")
        for i in range(1, n + 1):
            await interaction.edit_original_response(content=f"edit {i}")
        msg = await interaction.channel.send("chan 0")
        for i in range(1, n + 1):
            await msg.edit(content=f"chan {i}")
        bot.results["edits"] = (msg.id, time.monotonic() - t0)

    async def fruit_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        fruits = ["apple", "apricot", "banana", "cherry"]
        return [app_commands.Choice(name=f.title(), value=f) for f in fruits if f.startswith(current)]

    @tree.command(description="autocomplete")
    @app_commands.autocomplete(name=fruit_complete)
    async def fruit(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f"fruit {name}", ephemeral=True)

    @tree.command(description="typed options")
    async def opts(interaction: discord.Interaction, number: int, flag: bool, ratio: float, who: discord.User,
                   where: discord.TextChannel, doc: discord.Attachment) -> None:
        data = await doc.read()
        bot.results["opts"] = (number, flag, ratio, who.id, who.name, where.id, doc.filename, doc.content_type, data)
        await interaction.response.send_message(f"opts ok {number}")

    @tree.command(description="a regular (non-persistent) view updated in place")
    async def counter(interaction: discord.Interaction, private: bool = False) -> None:
        await interaction.response.send_message("count 0", view=Counter(), ephemeral=private)

    @tree.command(description="answers with a modal")
    async def feedback(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Feedback())

    @tree.command(description="a message with a button that opens a modal")
    async def survey(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("survey", view=Survey())

    @tree.command(description="a modal the bot handles from its raw data (custom_id carries the state)")
    async def ticket(interaction: discord.Interaction, number: int) -> None:
        modal = discord.ui.Modal(title="Ticket", custom_id=f"ticket:{number}")  # no on_submit: on_interaction answers
        modal.add_item(discord.ui.Label(text="Title", component=discord.ui.TextInput(custom_id="title")))
        modal.add_item(discord.ui.Label(text="Urgency", component=discord.ui.Select(
            custom_id="urgency", options=[discord.SelectOption(label=u, value=u) for u in ("low", "high")])))
        await interaction.response.send_modal(modal)

    @tree.command(description="a modal with a user select and a file upload")
    async def form(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Form(custom_id="form"))

    @tree.context_menu(name="Quote")
    async def quote(interaction: discord.Interaction, message: discord.Message) -> None:
        class Quote(discord.ui.Modal, title="Quote"):
            text = discord.ui.TextInput(label="Text", custom_id="text", default=message.content,
                                        style=discord.TextStyle.paragraph)

            async def on_submit(self, submit: discord.Interaction) -> None:
                await submit.response.send_message(f"quoted {self.text.value!r} by {submit.user.name}")

        await interaction.response.send_modal(Quote(custom_id=f"quote:{message.id}"))

    config = app_commands.Group(name="config", description="settings")

    @config.command(name="set", description="set a key")
    async def config_set(interaction: discord.Interaction, key: str, value: str) -> None:
        await interaction.response.send_message(f"set {key}={value}", ephemeral=True)

    tree.add_command(config)


# ---------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, cls=FakeBot, instance: str = "bot1"):
    bot = cls(instance)
    task = asyncio.create_task(bot.start("fake-token"))
    ready = asyncio.create_task(fake.wait_ready())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises what killed the bot
            raise AssertionError("bot.start() returned before the bot was ready")
        ready.result()
        yield bot
    finally:
        ready.cancel()
        await bot.close()
        await asyncio.wait_for(task, 5)


async def slash_and_followup(fake: FakeDiscord, **options):
    ia = await fake.slash("ping", {"text": "hi", **options})
    msg = await fake.wait_for_message(lambda m: m.interaction_id == ia.id and m.attachments)
    return ia, msg


# ---------------------------------------------------------------------------------------------------
# the happy path
# ---------------------------------------------------------------------------------------------------
async def test_slash_defer_edits_followup_with_png_and_button(make_fake):
    fake = await make_fake()
    async with running(fake):
        assert {"ping", "slow", "badui", "config"} <= {c["name"] for c in fake.commands}
        ia, msg = await slash_and_followup(fake)
        await ia.wait_acked()

    assert ia.response_type == 5 and ia.ack_latency < 1.0
    assert abs(ia.created_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=5)
    assert abs(ia.created_at - discord.utils.snowflake_time(int(ia.id))) < dt.timedelta(milliseconds=1)
    original = fake.messages[ia.original_message_id]
    assert original.edits == 2 and original.content == "working 2/2" and not original.loading
    assert [h["payload"].get("content") for h in original.history if h["kind"] == "edit"] == ["working 1/2",
                                                                                              "working 2/2"]
    assert ia.followups == [msg.id] and msg.content == "pong: hi" and msg.interaction_id == ia.id
    att = msg.attachments[0]
    assert (att["filename"], att["size"], att["content_type"], att["data"]) == ("pong.png", len(PNG), "image/png", PNG)
    assert (att["width"], att["height"]) == (4, 3)
    assert msg.custom_ids == ["ping:1"] and msg.components[0]["components"][0]["label"] == "Again 1"
    async with aiohttp.ClientSession() as http:
        async with http.get(att["url"]) as resp:
            assert resp.status == 200 and await resp.read() == PNG
    assert att["url"] == fake.cdn_url(f"attachments/{msg.channel_id}/{att['id']}/pong.png")
    calls = [(r["method"], r["path"]) for r in fake.requests]
    token = ia.token
    assert calls == [
        ("GET", "/users/@me"), ("GET", "/oauth2/applications/@me"), ("PUT", f"/applications/{fake.app_id}/commands"),
        ("POST", f"/interactions/{ia.id}/{token}/callback"),
        ("PATCH", f"/webhooks/{fake.app_id}/{token}/messages/@original"),
        ("PATCH", f"/webhooks/{fake.app_id}/{token}/messages/@original"),
        ("POST", f"/webhooks/{fake.app_id}/{token}"),
    ]
    followup_req = fake.requests[-1]
    assert followup_req["query"]["wait"] == "1" and followup_req["files"][0]["filename"] == "pong.png"
    assert followup_req["json"]["attachments"] == [{"id": 0, "filename": "pong.png"}]
    assert all(r["status"] == 200 for r in fake.requests) and not fake.violations


async def test_click_dynamic_item_fetches_message_from_fake(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        _, msg = await slash_and_followup(fake)
        click = await fake.click(msg.id, "ping:1", user_id="5002", username="bob")
        reply = await fake.wait_for_message(lambda m: m.content.startswith("clicked 1"))
        await click.wait_acked()
    assert reply.content == f"clicked 1 by bob on bot1: pong.png {len(PNG)} bytes 4x3"
    assert click.response_type == 6 and click.original_message_id == msg.id and click.followups == [reply.id]
    assert bot.events == [("click", 1, True)]
    assert msg.content == "pong: hi (clicked)" and msg.edits == 1
    assert msg.custom_ids == ["ping:1"], "an edit without a view keeps the components"
    assert ("GET", f"/channels/{fake.channel_id}/messages/{msg.id}") in [(r["method"], r["path"]) for r in fake.requests]
    with pytest.raises(LookupError):
        await fake.click(msg.id, "nope")
    assert not fake.violations


async def test_regular_view_click_updates_message_in_place(make_fake):
    fake = await make_fake()
    async with running(fake):
        ia = await fake.slash("counter")
        msg = await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
        for _ in range(2):
            click = await fake.click(msg.id, "counter")
            await click.wait_acked()
        await fake.wait_for_message(lambda m: m.id == msg.id and m.content == "count 2")
    assert click.response_type == 7 and click.original_message_id == msg.id
    assert msg.edits == 2 and msg.components[0]["components"][0]["label"] == "Clicked 2"
    assert [h["kind"] for h in msg.history] == ["response", "update", "update"]


async def test_ephemeral_message_only_clickable_by_its_user(make_fake):
    fake = await make_fake()
    async with running(fake):
        ia = await fake.slash("counter", {"private": True}, user_id="5001")
        msg = await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
        assert msg.ephemeral
        with pytest.raises(ValueError, match="ephemeral"):
            await fake.click(msg.id, "counter", user_id="5002")
        await (await fake.click(msg.id, "counter", user_id="5001")).wait_acked()
        await fake.wait_for_message(lambda m: m.content == "count 1")


async def test_first_followup_after_defer_fills_the_thinking_message(make_fake):
    fake = await make_fake()
    async with running(fake):
        ia, msg = await slash_and_followup(fake, count=0)  # defer, then straight to the followup
    assert msg.id == ia.original_message_id and ia.followups == [msg.id]
    assert not msg.loading and msg.edits == 0 and [h["kind"] for h in msg.history] == ["defer", "followup"]


async def test_second_bot_instance_handles_click_on_old_message(make_fake):
    fake = await make_fake()
    async with running(fake, instance="bot1"):
        _, msg = await slash_and_followup(fake)
    async with running(fake, instance="bot2") as bot2:
        await fake.click(msg.id, "ping:1")
        reply = await fake.wait_for_message(lambda m: m.content.startswith("clicked 1"))
    assert reply.content.endswith(f"on bot2: pong.png {len(PNG)} bytes 4x3")
    assert bot2.events == [("click", 1, True)]
    identifies = [g for g in fake.gateway_received if g["op"] == 2]
    assert [g["connection"] for g in identifies] == [1, 2]
    assert sum(1 for r in fake.requests if r["method"] == "PUT") == 2


async def test_gateway_reconnect_resumes_session(make_fake):
    fake = await make_fake()
    async with running(fake):
        await slash_and_followup(fake)
        await fake.reconnect()
        ia, _ = await slash_and_followup(fake, text="after resume")
    ops = [(g["connection"], g["op"]) for g in fake.gateway_received]
    assert (1, 2) in ops and (2, 6) in ops and (2, 2) not in ops  # identified once, then RESUMEd
    resume = next(g["d"] for g in fake.gateway_received if g["op"] == 6)
    assert resume["seq"] >= 3 and resume["session_id"]
    assert fake.messages[ia.followups[0]].content == "pong: after resume"


async def test_auto_sharded_bot(make_fake):
    fake = await make_fake()
    async with running(fake, cls=FakeShardedBot) as bot:
        ia = await fake.slash("config set", {"key": "mode", "value": "fast"})
        reply = await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
        assert bot.shard_count == 1
    assert reply.content == "set mode=fast" and reply.ephemeral and ia.response_type == 4
    assert ("GET", "/gateway/bot") in [(r["method"], r["path"]) for r in fake.requests]
    assert [g["d"].get("shard") for g in fake.gateway_received if g["op"] == 2] == [[0, 1]]


async def test_autocomplete_and_typed_options(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        choices = await fake.autocomplete("fruit", {"name": "ap"}, focused="name")
        assert choices == [{"name": "Apple", "value": "apple"}, {"name": "Apricot", "value": "apricot"}]
        ia = await fake.slash("opts", {"number": 7, "flag": True, "ratio": 0.5, "who": {"id": "5003", "username": "carol"},
                                       "where": fake.channel_id, "doc": ("notes.txt", b"hello")})
        await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
        with pytest.raises(ValueError):
            await fake.slash("opts", {"number": 7})  # required options missing: the client would refuse
        with pytest.raises(ValueError):
            await fake.slash("badui", {"what": "not-a-choice"})
        with pytest.raises(LookupError):
            await fake.slash("nosuchcommand")
    number, flag, ratio, who_id, who_name, where_id, filename, ctype, data = bot.results["opts"]
    assert (number, flag, ratio, who_id, who_name, where_id) == (7, True, 0.5, 5003, "carol", int(fake.channel_id))
    assert (filename, ctype, data) == ("notes.txt", "text/plain; charset=utf-8", b"hello")


# ---------------------------------------------------------------------------------------------------
# modals
# ---------------------------------------------------------------------------------------------------
async def test_submit_modal_fills_text_input_and_label_select(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        shown = await (await fake.slash("feedback", user_id="5002", username="bob")).wait_acked()
        assert shown.response_type == 9 and shown.modal["custom_id"] == "feedback"
        submit = await fake.submit_modal(shown, {"summary": "too slow", "size": ["small", "large"]})
        reply = await fake.wait_for_message(lambda m: m.interaction_id == submit.id)
        await submit.wait_acked()
    assert reply.content == "feedback summary='too slow' size=['small', 'large'] extra=''"
    assert (submit.type, submit.name, submit.user_id, submit.username) == (5, "feedback", "5002", "bob")
    assert submit.response_type == 4 and submit.modal_from == shown.id and "message" not in submit.payload
    # what Discord sends: the modal's layout with the user's values; ids the bot set (the select's 2)
    # are kept, the others numbered depth first from 1, skipping 2
    assert submit.payload["type"] == 5 and submit.payload["data"] == {"custom_id": "feedback", "components": [
        {"type": 1, "id": 1, "components": [{"type": 4, "id": 3, "custom_id": "summary", "value": "too slow"}]},
        {"type": 18, "id": 4, "component": {"type": 3, "id": 2, "custom_id": "size", "values": ["small", "large"]}},
        {"type": 10, "id": 5},
        {"type": 18, "id": 6, "component": {"type": 4, "id": 7, "custom_id": "extra", "value": ""}},
    ]}
    assert bot.events == [("feedback", submit.payload["data"])]  # interaction.data is the raw submission
    meta = fake._message_json(reply)["interaction_metadata"]
    assert meta["type"] == 5 and meta["triggering_interaction_metadata"]["id"] == shown.id
    assert "interacted_message_id" not in meta and not fake.violations


async def test_submit_modal_opened_from_a_button_carries_the_message(make_fake):
    fake = await make_fake()
    async with running(fake):
        ia = await fake.slash("survey")
        msg = await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
        shown = await (await fake.click(msg.id, "survey:answer")).wait_acked()
        submit = await fake.submit_modal(shown, {"summary": "ok", "size": ["medium"], "extra": "line 1\nline 2"})
        await submit.wait_acked()
        await fake.wait_for(lambda: msg.edits == 1)
    assert submit.payload["message"]["id"] == msg.id and submit.payload["message"]["components"]
    assert submit.response_type == 7 and submit.message_id == msg.id == submit.original_message_id
    assert msg.content == f"feedback summary='ok' size=['medium'] extra='line 1\\nline 2' on {msg.id}"
    assert msg.components == [] and not fake.violations


async def test_submit_modal_from_message_command_sends_prefilled_value(make_fake):
    fake = await make_fake()
    async with running(fake):
        target = fake.user_post("5009", "a wise\nsaying")
        shown = await (await fake.message_command("Quote", target.id)).wait_acked()
        assert shown.modal["components"][0]["components"][0]["value"] == "a wise\nsaying"
        first = await fake.submit_modal(shown, {})  # the user submits what the bot pre-filled
        reply = await fake.wait_for_message(lambda m: m.interaction_id == first.id)
    assert reply.content == "quoted 'a wise\\nsaying' by alice"
    assert first.payload["data"]["components"][0]["components"][0]["value"] == "a wise\nsaying"
    assert "message" not in first.payload  # only modals opened from a component carry the message
    assert fake._message_json(reply)["interaction_metadata"]["triggering_interaction_metadata"] == {
        "id": shown.id, "type": 2, "user": fake._user("5001"), "authorizing_integration_owners": {"0": fake.guild_id},
        "name": "Quote", "command_type": 3, "target_message_id": target.id}


async def test_submit_modal_refuses_what_the_client_would_not_send(make_fake):
    fake = await make_fake()
    async with running(fake):
        shown = await (await fake.slash("feedback")).wait_acked()
        ok = {"summary": "fine", "size": ["small"]}
        bad = [
            ({"size": ["small"]}, "'summary' is required"),  # required text input left empty
            (ok | {"summary": ""}, "'summary' is required"),
            (ok | {"summary": "x"}, "takes 2..20 characters"),
            (ok | {"summary": "x" * 21}, "takes 2..20 characters"),
            (ok | {"summary": "two\nlines"}, "one-line"),
            ({"summary": "fine"}, "'size' is required"),  # required select without a choice
            (ok | {"size": []}, "'size' is required"),
            (ok | {"size": ["huge"]}, "no option(s) ['huge']"),
            (ok | {"size": ["small", "medium", "large"]}, "takes 1..2 values"),
            (ok | {"size": ["small", "small"]}, "twice"),
            (ok | {"colour": "red"}, "has no input(s) ['colour']"),
        ]
        for values, message in bad:
            with pytest.raises(ValueError, match=re.escape(message)):
                await fake.submit_modal(shown, values)
        with pytest.raises(TypeError):
            await fake.submit_modal(shown, ok | {"size": "small"})
        with pytest.raises(ValueError, match="not answered with a modal"):
            await fake.submit_modal(await (await fake.slash("config set", {"key": "k", "value": "v"})).wait_acked(), ok)
        assert not [i for i in fake.interactions.values() if i.type == 5], "nothing was sent"
        submit = await fake.submit_modal(shown, ok)  # the same modal, filled in properly
        await fake.wait_for_message(lambda m: m.interaction_id == submit.id)
    assert not fake.violations


async def test_submit_modal_with_user_select_and_file_upload(make_fake):
    fake = await make_fake()
    async with running(fake):
        shown = await (await fake.slash("form")).wait_acked()
        with pytest.raises(ValueError, match="'files' takes 1..2 files"):
            await fake.submit_modal(shown, {"who": ["5003"], "files": [b"1", b"2", b"3"]})
        submit = await fake.submit_modal(shown, {"who": ["5003", "5004"], "files": [("a.txt", b"alpha")]})
        reply = await fake.wait_for_message(lambda m: m.interaction_id == submit.id)
    att_id = submit.payload["data"]["components"][1]["component"]["values"][0]
    assert reply.content == f"form who=['user5003', 'user5004'] files={[('a.txt', b'alpha')]}"
    resolved = submit.payload["data"]["resolved"]
    assert set(resolved["users"]) == {"5003", "5004"} and list(resolved["attachments"]) == [att_id]
    assert not fake.violations


async def test_submit_modal_no_in_memory_modal_reaches_on_interaction(make_fake, caplog):
    fake = await make_fake()
    async with running(fake, instance="bot1"):
        shown = await (await fake.slash("ticket", {"number": 42})).wait_acked()
    assert shown.modal["custom_id"] == "ticket:42"
    async with running(fake, instance="bot2") as bot2:  # restarted while the user had the modal open
        caplog.set_level(logging.DEBUG, logger="discord.ui.view")
        submit = await fake.submit_modal(shown, {"title": "printer on fire", "urgency": ["high"]})
        reply = await fake.wait_for_message(lambda m: m.interaction_id == submit.id)
    assert reply.content == "ticket:42 [('title', 'printer on fire'), ('urgency', ['high'])]"
    [(kind, data)] = bot2.events
    assert kind == "raw modal" and data == {"custom_id": "ticket:42", "components": [
        {"type": 18, "id": 1, "component": {"type": 4, "id": 2, "custom_id": "title", "value": "printer on fire"}},
        {"type": 18, "id": 3, "component": {"type": 3, "id": 4, "custom_id": "urgency", "values": ["high"]}},
    ]}
    assert "Modal interaction referencing unknown custom_id ticket:42" in caplog.text
    assert submit.response_type == 4 and not fake.violations


# ---------------------------------------------------------------------------------------------------
# Discord's rules
# ---------------------------------------------------------------------------------------------------
async def test_late_ack_gets_unknown_interaction(make_fake):
    fake = await make_fake(ack_deadline=0.2)
    async with running(fake) as bot:
        ia = await fake.slash("slow", {"delay": 0.35})
        await fake.wait_for(lambda: "slow" in bot.results)
    assert bot.results["slow"][:2] == (404, 10062) and "Unknown interaction" in bot.results["slow"][2]
    assert ia.acked_at is None and ia.callbacks[0]["status"] == 404
    assert [v for v in fake.violations if v.startswith("[10062 late-ack]")]
    with pytest.raises(TimeoutError):
        await ia.wait_acked(0.05)


async def test_double_ack_gets_40060(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        ia = await fake.slash("twice")
        await fake.wait_for(lambda: "twice" in bot.results)
    assert bot.results["twice"][:2] == (400, 40060)
    assert "already been acknowledged" in bot.results["twice"][2]
    assert fake.messages[ia.original_message_id].content == "one" and ia.response_type == 4
    assert [v for v in fake.violations if v.startswith("[40060 double-ack]")]


async def test_expired_token_gets_50027(make_fake):
    fake = await make_fake(token_lifetime=0.25)
    async with running(fake) as bot:
        await fake.slash("expire", {"delay": 0.35})
        await fake.wait_for(lambda: "expire-followup" in bot.results)
    assert bot.results["expire-edit"][:2] == (401, 50027)
    assert bot.results["expire-followup"][:2] == (401, 50027)
    assert len([v for v in fake.violations if v.startswith("[50027 token-expired]")]) == 2


async def test_oversize_upload_gets_40005(make_fake):
    fake = await make_fake(attachment_size_limit=4096)  # channel messages
    async with running(fake) as bot:
        for size in (2000, 5000):
            await fake.slash("upload", {"size": size}, attachment_size_limit=1024)  # interaction uploads
            await fake.wait_for_message(lambda m, s=size: m.content == f"upload {s} done")
    up = bot.results["upload"]
    assert up[2000, "followup"][:2] == (413, 40005) and up[2000, "channel"] == "ok"
    assert up[5000, "followup"][:2] == (413, 40005) and up[5000, "channel"][:2] == (413, 40005)
    assert len([v for v in fake.violations if v.startswith("[40005 too-large]")]) == 3


@pytest.mark.parametrize("what, error_path", [
    ("label", "components.0.components.0.label"),
    ("custom_id", "components.0.components.0.custom_id"),
    ("duplicate", "components.0.components.1.custom_id"),
    ("content", "content"),
    ("fields", "embeds.0.fields"),
    ("embed_total", "embeds"),
])
async def test_invalid_form_body_gets_50035(make_fake, what, error_path):
    fake = await make_fake()
    async with running(fake) as bot:
        ia = await fake.slash("badui", {"what": what})
        reply = await fake.wait_for_message(lambda m: m.interaction_id == ia.id)
    status, code, text = bot.results[what]
    assert (status, code) == (400, 50035), text
    assert f"In data.{error_path}:" in text, text
    assert reply.content == f"recovered from {what}" and ia.response_type == 4
    assert [v for v in fake.violations if v.startswith("[50035 invalid-form]")]


async def test_edit_rate_limit_429_is_retried_by_discord_py(make_fake, caplog):
    fake = await make_fake(edit_limit=(2, 0.3))
    async with running(fake) as bot:
        ia = await fake.slash("edits", {"n": 4})
        await fake.wait_for(lambda: "edits" in bot.results)
    channel_msg_id, elapsed = bot.results["edits"]
    original = fake.messages[ia.original_message_id]
    channel_msg = fake.messages[str(channel_msg_id)]
    assert (original.content, original.edits) == ("edit 4", 4)
    assert (channel_msg.content, channel_msg.edits) == ("chan 4", 4)
    limited = [r for r in fake.requests if r["status"] == 429]
    assert {r["path"].split("/")[1] for r in limited} == {"webhooks", "channels"}
    assert len([v for v in fake.violations if v.startswith("[429 edit-rate]")]) == len(limited)
    assert elapsed >= 0.5  # two windows waited out
    warnings = [r.getMessage() for r in caplog.get_records("call") if r.name.startswith("discord")]
    assert any("rate limited" in w for w in warnings), warnings


async def test_rate_limit_headers_make_discord_py_wait_instead(make_fake):
    fake = await make_fake(edit_limit=(2, 0.3), edit_ratelimit_headers=True)
    async with running(fake) as bot:
        await fake.slash("edits", {"n": 4})
        await fake.wait_for(lambda: "edits" in bot.results)
    assert not [r for r in fake.requests if r["status"] == 429] and not fake.violations
    assert bot.results["edits"][1] >= 0.5


async def test_fake_never_answers_5xx_and_uses_exact_json_content_type(make_fake):
    fake = await make_fake()
    async with aiohttp.ClientSession(headers={"Authorization": "Bot x"}) as http:
        async with http.get(fake.api_url + "/no/such/route") as resp:
            assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
        async with http.post(fake.api_url + f"/channels/{fake.channel_id}/messages", data=b"{not json",
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 50109
        async with http.post(fake.api_url + f"/channels/{fake.channel_id}/messages", json={}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 50006
        async with http.post(fake.api_url + "/interactions/1/bad/callback", json={"type": 5}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10062
    assert fake.unhandled == ["no route in the fake for GET /api/v10/no/such/route"]
    fake.unhandled.clear()
    assert snowflake_time(fake.snowflake()) <= dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------------------------------------------
# message nonces and crashing a bot mid-send ("exactly once" delivery)
# ---------------------------------------------------------------------------------------------------
def channel_posts(fake: FakeDiscord) -> list[dict]:
    path = f"/channels/{fake.channel_id}/messages"
    return [r for r in fake.requests if r["method"] == "POST" and r["path"] == path]


def channel_messages(fake: FakeDiscord) -> list:
    return [m for m in fake.messages.values() if m.channel_id == fake.channel_id and not m.deleted]


async def raw_post(bot: commands.Bot, fake: FakeDiscord, payload: dict) -> dict:
    """POST /channels/{id}/messages through discord.py's HTTP client with exactly ``payload``
    (``Messageable.send`` always adds ``enforce_nonce: true``)."""
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=int(fake.channel_id))
    return await asyncio.wait_for(bot.http.request(route, json=payload), 5)


async def test_enforced_nonce_answers_with_the_existing_message(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        first = await asyncio.wait_for(channel.send("once", nonce="job-1"), 5)
        again = await asyncio.wait_for(channel.send("once", nonce="job-1"), 5)
        other = await asyncio.wait_for(channel.send("other"), 5)  # discord.py's own random nonce
        fetched = await asyncio.wait_for(channel.fetch_message(first.id), 5)
    assert again.id == first.id != other.id
    assert first.nonce == again.nonce == "job-1" and fetched.nonce is None  # Discord: no nonce on fetch
    assert [m.content for m in channel_messages(fake)] == ["once", "other"]
    stored = fake.messages[str(first.id)]
    assert stored.nonce == "job-1" and [h["kind"] for h in stored.history] == ["create"]
    posts = channel_posts(fake)
    # what discord.py 2.7 sends: "nonce" (always a string, random 64-bit if not given) and "enforce_nonce"
    assert [(r["json"]["nonce"], r["json"]["enforce_nonce"]) for r in posts[:2]] == [("job-1", True)] * 2
    assert isinstance(posts[2]["json"]["nonce"], str) and posts[2]["json"]["enforce_nonce"] is True
    assert [r.get("nonce_duplicate_of") for r in posts] == [None, str(first.id), None]
    assert all(r["status"] == 200 for r in posts) and not fake.violations


async def test_repeated_nonce_without_enforce_creates_another_message(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        a = await raw_post(bot, fake, {"content": "a", "nonce": "dup"})
        b = await raw_post(bot, fake, {"content": "b", "nonce": "dup"})
        c = await raw_post(bot, fake, {"content": "c", "nonce": "dup", "enforce_nonce": False})
        n1 = await raw_post(bot, fake, {"content": "int", "nonce": 12345, "enforce_nonce": True})
        n2 = await raw_post(bot, fake, {"content": "int", "nonce": 12345, "enforce_nonce": True})
        n3 = await raw_post(bot, fake, {"content": "int", "nonce": "12345", "enforce_nonce": True})
        d = await raw_post(bot, fake, {"content": "d", "nonce": "dup", "enforce_nonce": True})
    assert len({a["id"], b["id"], c["id"]}) == 3 and a["nonce"] == b["nonce"] == "dup"
    assert n1["id"] == n2["id"] == n3["id"] and n1["nonce"] == n2["nonce"] == 12345  # echoed as sent
    assert d["id"] == c["id"] and d["content"] == "c", "enforce_nonce answers with the latest 'dup' message"
    assert [m.content for m in channel_messages(fake)] == ["a", "b", "c", "int"]
    assert not fake.violations


async def test_nonce_too_long_or_wrong_type_is_50035(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        with pytest.raises(discord.HTTPException) as exc:
            await asyncio.wait_for(channel.send("x", nonce="n" * 26), 5)
        assert (exc.value.status, exc.value.code) == (400, 50035) and "In nonce:" in exc.value.text
        for bad in ({"nonce": True}, {"nonce": 1.5}, {"nonce": ["x"]}, {"nonce": "ok", "enforce_nonce": "yes"}):
            with pytest.raises(discord.HTTPException) as exc:
                await raw_post(bot, fake, {"content": "x", **bad})
            assert (exc.value.status, exc.value.code) == (400, 50035), bad
        ok = await asyncio.wait_for(channel.send("max", nonce="n" * 25), 5)
    assert ok.nonce == "n" * 25 and [m.content for m in channel_messages(fake)] == ["max"]
    invalid = [v for v in fake.violations if v.startswith("[50035 invalid-form]")]
    assert len(invalid) == 5 == len(fake.violations)
    assert "nonce: Must be 25 or fewer characters long." in invalid[0]
    assert "enforce_nonce: Must be either true or false." in invalid[-1]


async def test_enforced_nonce_with_files_in_multipart_payload_json(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        sent = [await asyncio.wait_for(channel.send("pic", file=discord.File(io.BytesIO(PNG), "a.png"),
                                                    nonce="files-1"), 5) for _ in range(2)]
    assert sent[0].id == sent[1].id and sent[1].attachments[0].filename == "a.png"
    [stored] = channel_messages(fake)
    assert stored.nonce == "files-1" and [a["data"] for a in stored.attachments] == [PNG]
    posts = channel_posts(fake)
    assert all(r["files"] and r["json"]["nonce"] == "files-1" and r["json"]["enforce_nonce"] is True for r in posts)
    assert posts[1]["nonce_duplicate_of"] == stored.id and not fake.violations


async def test_nonce_is_forgotten_after_the_window_and_a_deleted_message_is_404(make_fake):
    fake = await make_fake()
    fake.nonce_window = 0.2
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        first = await asyncio.wait_for(channel.send("w", nonce="win"), 5)
        await asyncio.sleep(0.3)
        later = await asyncio.wait_for(channel.send("w", nonce="win"), 5)
        gone = await asyncio.wait_for(channel.send("gone", nonce="del"), 5)
        await asyncio.wait_for(gone.delete(), 5)
        with pytest.raises(discord.NotFound) as exc:
            await asyncio.wait_for(channel.send("gone", nonce="del"), 5)
    assert later.id != first.id and exc.value.code == 10008
    assert [m.content for m in channel_messages(fake)] == ["w", "w"] and not fake.violations


async def test_held_post_is_stored_before_send_returns(make_fake):
    fake = await make_fake()
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        fake.hold_channel_posts(count=1)
        task = asyncio.create_task(channel.send("held", nonce="held-1"))
        try:
            stored = await fake.wait_for_held_post(timeout=5)
            assert stored.content == "held" and fake.messages[stored.id] is stored and stored.nonce == "held-1"
            history = [m async for m in channel.history(limit=5)]
            assert [m.id for m in history] == [int(stored.id)], "visible to others while the answer is held"
            assert not task.done() and fake.held_posts[0].outcome is None
            assert fake.release_channel_posts() == 1
            sent = await asyncio.wait_for(task, 5)
        finally:
            task.cancel()
        after = await asyncio.wait_for(channel.send("not held"), 5)  # count=1: the next post is answered
    assert sent.id == int(stored.id) and sent.nonce == "held-1"
    held = fake.held_posts
    assert len(held) == 1 and held[0].outcome == "released" and held[0].message is stored
    assert held[0].request["held"] == "released" and held[0].ended_at >= held[0].held_at
    assert after.id != sent.id and len(channel_messages(fake)) == 2 and not fake.violations
    with pytest.raises(TimeoutError):
        await fake.wait_for_held_post(timeout=0.05)


async def test_crash_during_send_then_retry_with_same_nonce_delivers_once(make_fake):
    fake = await make_fake()
    async with running(fake, instance="bot1") as bot1:
        channel = bot1.get_partial_messageable(int(fake.channel_id))
        fake.hold_channel_posts()
        task = asyncio.create_task(channel.send("exactly once", nonce="crash-1"))
        stored = await fake.wait_for_held_post(timeout=5)
        task.cancel()  # the bot dies while its post is in flight: it never learns the message id
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await fake.wait_for(lambda: fake.held_posts[0].outcome, timeout=5)
    assert fake.held_posts[0].outcome == "disconnected"
    async with running(fake, instance="bot2") as bot2:  # restarted: retries with the persisted nonce
        channel = bot2.get_partial_messageable(int(fake.channel_id))
        retry = await asyncio.wait_for(channel.send("exactly once", nonce="crash-1"), 5)
    assert retry.id == int(stored.id) and retry.content == "exactly once"
    assert channel_messages(fake) == [stored] and not fake.violations
    assert [r.get("nonce_duplicate_of") for r in channel_posts(fake)] == [None, stored.id]


async def test_held_post_bounded_by_max_hold_and_by_stop(make_fake):
    fake = await make_fake()
    fake.max_hold = 0.2
    async with running(fake) as bot:
        channel = bot.get_partial_messageable(int(fake.channel_id))
        fake.hold_channel_posts()
        t0 = time.monotonic()
        sent = await asyncio.wait_for(channel.send("slow answer"), 5)
        assert time.monotonic() - t0 >= 0.2 and fake.held_posts[0].outcome == "timeout"
        assert sent.id == int(fake.held_posts[0].message.id)
    fake.max_hold = 30.0
    fake.hold_channel_posts()
    async with aiohttp.ClientSession(headers={"Authorization": "Bot x"}) as http:
        post = asyncio.create_task(http.post(fake.api_url + f"/channels/{fake.channel_id}/messages",
                                             json={"content": "at stop"}))
        try:
            await fake.wait_for_held_post(timeout=5)
            t0 = time.monotonic()
            await asyncio.wait_for(fake.stop(), 5)
            assert time.monotonic() - t0 < 2.0
            with contextlib.suppress(aiohttp.ClientError):
                (await asyncio.wait_for(post, 5)).release()
        finally:
            post.cancel()
    assert fake.held_posts[1].outcome == "stopped"
