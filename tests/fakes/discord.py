"""A wire-level fake Discord (gateway websocket + REST) for end-to-end tests of a discord.py bot.

The bot runs unmodified, in the test's event loop; :meth:`FakeDiscord.install` points discord.py at
the fake by patching two class attributes (``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``) through pytest's ``monkeypatch``::

    fake = FakeDiscord(ack_deadline=0.5)
    await fake.start()
    fake.install(monkeypatch)
    bot = MyBot(chunk_guilds_at_startup=False, guild_ready_timeout=0.05, ...)
    task = asyncio.create_task(bot.start("fake-token"))
    await fake.wait_ready()
    ia = await fake.slash("ping", {"text": "hi"})          # a user runs /ping
    await ia.wait_acked()
    msg = await fake.wait_for_message(lambda m: m.interaction_id == ia.id and m.attachments)
    await fake.click(msg.id, "ping:1")                      # the user clicks a button on it
    shown = await (await fake.slash("feedback")).wait_acked()  # the bot answers with a modal (type 9)
    await fake.submit_modal(shown, {"summary": "ok", "size": ["small"]})  # the user fills it in
    ...
    await bot.close(); await task; await fake.stop()

Acting as Discord, the fake enforces rules the bot depends on (ack deadline, single ack, token lifetime,
upload size, component/embed/content limits, per-message edit rate). A breach is answered the way
Discord answers it (4xx JSON ``{"message", "code"}``; 429 with rate-limit headers) and recorded in
:attr:`FakeDiscord.violations` as a string starting with a tag such as ``"[10062 late-ack]"``.
Errors inside the fake itself are answered with 400 (never 5xx: discord.py retries those for ~25 s)
and recorded in :attr:`FakeDiscord.unhandled`.

Violation tags (each answered as shown; filter with ``v.startswith("[429")`` etc.):

    [10062 late-ack]        callback after ``ack_deadline``              404 {"code": 10062}
    [10062 unknown-interaction]  callback with an unknown id/token        404 {"code": 10062}
    [40060 double-ack]      second accepted callback                     400 {"code": 40060}
    [50027 token-expired]   webhook call after ``token_lifetime``        401 {"code": 50027}
    [10015 not-acked]       followup before any callback                 404 {"code": 10015}
    [10008 not-acked]       @original before any callback                404 {"code": 10008}
    [40005 too-large]       a file above the size limit                  413 {"code": 40005}
    [50035 invalid-form]    content/embed/component/command/choice/nonce  400 {"code": 50035, "errors": ...}
    [50006 empty-message]   nothing to show                              400 {"code": 50006}
    [429 edit-rate]         > edit_limit edits of one message per window  429 {"retry_after": s, "global": false}
    [10008 unknown-message] [10003 unknown-channel] [10015 unknown-webhook] [401 unauthorized]
    [50109 invalid-json]    [4002 ...]/[4005 ...] gateway misuse (connection closed with that code)
    [4010 invalid-shard]    [4011 sharding-required]  IDENTIFY refused (connection closed with that code)

Discord behaviour modelled beyond the rules: the first followup after a "thinking" defer (type 5)
fills the deferred message (same id, ephemeral as deferred); a deferred update (type 6) makes
``@original`` the clicked message; ephemeral messages are not reachable through channel routes;
interaction responses carry ``interaction_metadata``; ``op 7`` RECONNECT + RESUME (:meth:`reconnect`);
modal submits (:meth:`FakeDiscord.submit_modal`) mirror the modal's layout with component ids and carry the
clicked message when the modal was opened from a component.

Message nonces (POST /channels/{id}/messages, JSON body or multipart ``payload_json``): ``nonce`` must be
an integer or a string of at most 25 characters (else ``[50035 invalid-form]``). With ``"enforce_nonce":
true``, a nonce the bot already used for a message in that channel within :attr:`FakeDiscord.nonce_window`
seconds (default 300, Discord says "a few minutes") creates nothing: the answer is 200 with the EXISTING
message (404 10008 if that message was deleted, no violation). Nonces are compared as strings (``7`` ==
``"7"``). Without ``enforce_nonce`` a repeated nonce creates another message. The create answer carries
``nonce`` as sent (:attr:`Message.nonce`); fetched messages do not, as on Discord. A deduplicated post's
:attr:`FakeDiscord.requests` record has ``"nonce_duplicate_of": <message id>``. discord.py 2.7's
``Messageable.send`` always sends ``"nonce": str(nonce)`` (``secrets.randbits(64)`` when not given) and
``"enforce_nonce": true``.

Crashing a bot mid-send: after :meth:`FakeDiscord.hold_channel_posts`, the next ``count`` channel posts that
create a message are stored and visible (:meth:`FakeDiscord.wait_for_held_post`) but their HTTP answer is
held until :meth:`FakeDiscord.release_channel_posts`, the client disconnects (e.g. its ``send`` task was
cancelled or the bot closed), :attr:`FakeDiscord.max_hold` seconds pass, or :meth:`FakeDiscord.stop`;
see :attr:`FakeDiscord.held_posts` (:class:`HeldPost`) for how each ended (also the request record's
``"held"``).

Guilds and shards, as Discord serves them: the fake starts with one guild (``guild_id``, with its text
channel ``channel_id``); :meth:`FakeDiscord.add_guild` adds more (``add_guild(shard=1, shard_count=2)`` gives
a guild whose id falls on shard 1 of 2; :func:`guild_id_on_shard` makes such ids). ``GET /gateway/bot``
answers ``shards`` (the constructor's ``shard_count``: the count Discord recommends) and a
``session_start_limit`` whose ``remaining`` goes down with each IDENTIFY. An IDENTIFY may carry ``shard:
[id, count]``; each connection gets READY with its ``shard`` and the GUILD_CREATEs of its guilds only (those
with ``(guild_id >> 22) % count == id``), and every guild event and guild interaction goes only to the newest
ready connection of that guild's shard (DMs, and events of no guild, to shard 0). Several bots (separate
clients, as separate processes would be) may be connected at once, each with its own shards; their REST calls
share the fake's state and rules. :attr:`FakeDiscord.gateway_sent` records every dispatch with its connection
and shard, :attr:`Interaction.connection` the connection an interaction went to. Gateway refusals:
``[4010 invalid-shard]`` (a ``shard`` that is not ``[id, count]`` with ``0 <= id < count``) and
``[4011 sharding-required]`` (the connection would hold more than ``guilds_per_shard`` guilds, e.g. an
unsharded IDENTIFY when the fake has more guilds than that), each closing the connection with that code, as
Discord does. The acting-as-a-user methods take ``channel_id=`` (a channel of any guild, or a DM channel from
:meth:`FakeDiscord.dm_channel`); left out, they act in ``channel_id``, and a click or a modal submit acts in
the channel of the message or modal when that channel is in another guild.

Close the bot(s) before :meth:`FakeDiscord.stop`: a bot left connected tries to reconnect and
discord.py logs "Attempting a reconnect" at ERROR level.

Every wait is bounded. No network access beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import math
import mimetypes
import secrets
import socket
import struct
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yarl
from aiohttp import WSMsgType, web

from . import discord_rules as rules

__all__ = ["FakeDiscord", "Guild", "HeldPost", "Interaction", "Message", "DISCORD_EPOCH", "snowflake_time",
           "discord_log_errors", "guild_id_on_shard", "shard_of"]

DISCORD_EPOCH = 1420070400000
API_PREFIX = "/api/v10"
_UTC = dt.timezone.utc
_log = logging.getLogger("tests.fakes.discord")
_PAYLOAD = web.RequestKey("fake_discord_payload", object)
_FILES = web.RequestKey("fake_discord_files", list)
_RECORD = web.RequestKey("fake_discord_record", dict)

# Interaction types / callback types (Discord's numbering)
IT_COMMAND, IT_COMPONENT, IT_AUTOCOMPLETE, IT_MODAL = 2, 3, 4, 5
CB_PONG, CB_MESSAGE, CB_DEFER_MESSAGE, CB_DEFER_UPDATE, CB_UPDATE, CB_AUTOCOMPLETE, CB_MODAL = 1, 4, 5, 6, 7, 8, 9
_MESSAGE_CREATE_FLAGS = (rules.FLAG_SUPPRESS_EMBEDS | rules.FLAG_SUPPRESS_NOTIFICATIONS | rules.FLAG_COMPONENTS_V2
                         | rules.FLAG_IS_VOICE_MESSAGE)
_EDITABLE_FLAGS = rules.FLAG_SUPPRESS_EMBEDS | rules.FLAG_COMPONENTS_V2


def snowflake_time(snowflake: str | int) -> dt.datetime:
    """The UTC creation time encoded in a Discord snowflake."""
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH
    return dt.datetime.fromtimestamp(ms / 1000, tz=_UTC)


def shard_of(guild_id: str | int, shard_count: int) -> int:
    """The shard that serves a guild, by Discord's formula (DMs: shard 0)."""
    return (int(guild_id) >> 22) % shard_count


_guild_ids_made = 0


def guild_id_on_shard(shard_id: int, shard_count: int) -> str:
    """A new snowflake (unique in this process) of a guild that falls on shard ``shard_id`` of ``shard_count``:
    its timestamp part is moved forward to the next millisecond with the right remainder."""
    global _guild_ids_made
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard {shard_id} is not one of {shard_count} shards")
    _guild_ids_made += 1
    ms = int(time.time() * 1000) - DISCORD_EPOCH
    ms += (shard_id - ms) % shard_count
    return str((ms << 22) | (_guild_ids_made % (1 << 22)))


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def discord_log_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """Formats the ERROR (or worse) records logged by discord.py (loggers ``discord.*``).

    discord.py only *logs* exceptions raised in commands, views and event handlers ("Ignoring
    exception in command tree"), so a test should fail on them, e.g. from a fixture::

        yield
        errors = discord_log_errors(caplog.get_records("call"))
        if errors: pytest.fail("\\n".join(errors))
    """
    out = []
    for r in records:
        if r.levelno >= logging.ERROR and (r.name == "discord" or r.name.startswith("discord.")):
            text = f"{r.name}: {r.getMessage()}"
            if r.exc_info and r.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(*r.exc_info))
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Message:
    """A message the bot created (interaction response, followup or channel message)."""

    id: str
    channel_id: str
    author_id: str
    content: str = ""
    embeds: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    #: dicts with id, filename, size, content_type, url, proxy_url, data (bytes), maybe width/height/description
    attachments: list[dict] = field(default_factory=list)
    flags: int = 0
    edits: int = 0
    #: every payload that set or edited the message: {"kind", "time" (monotonic), "payload", "files"}
    history: list[dict] = field(default_factory=list)
    interaction_id: str | None = None
    webhook_id: str | None = None
    type: int = 0
    #: user ids Discord would ping (content mentions filtered by allowed_mentions)
    mentions: list[str] = field(default_factory=list)
    mention_roles: list[str] = field(default_factory=list)
    mention_everyone: bool = False
    allowed_mentions: dict | None = None
    tts: bool = False
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(_UTC))
    edited_at: dt.datetime | None = None
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)
    #: other keys the bot sent and Discord echoes (poll, message_reference, sticker_ids, ...)
    extra: dict = field(default_factory=dict)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & rules.FLAG_EPHEMERAL)

    @property
    def nonce(self) -> int | str | None:
        """The ``nonce`` the bot sent when creating the message (channel messages), as sent."""
        return self.extra.get("nonce")

    @property
    def loading(self) -> bool:
        """A deferred response ("bot is thinking...") that has not been filled yet."""
        return bool(self.flags & rules.FLAG_LOADING)

    def iter_components(self) -> Iterable[dict]:
        return rules.iter_components(self.components)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if isinstance(c.get("custom_id"), str)]

    def find_component(self, custom_id: str) -> dict | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    def __repr__(self) -> str:
        return (f"<Message id={self.id} content={self.content[:40]!r} attachments="
                f"{[a['filename'] for a in self.attachments]} custom_ids={self.custom_ids} flags={self.flags}"
                f" edits={self.edits}{' deleted' if self.deleted else ''}>")


@dataclass(eq=False)
class Interaction:
    """An interaction the fake sent to the bot, and what the bot did with it."""

    id: str
    token: str
    type: int
    user_id: str
    username: str
    channel_id: str
    guild_id: str | None
    #: command name ("group sub" for subcommands) or clicked custom_id
    name: str
    attachment_size_limit: int
    created_at: dt.datetime
    created_monotonic: float
    #: the INTERACTION_CREATE ``d`` payload as sent to the bot
    payload: dict = field(default_factory=dict)
    acked_at: float | None = None
    response_type: int | None = None
    original_message_id: str | None = None
    followups: list[str] = field(default_factory=list)
    #: for component interactions: the clicked message
    message_id: str | None = None
    #: every callback attempt: {"time", "type", "status", "code"}
    callbacks: list[dict] = field(default_factory=list)
    #: autocomplete answer (type 8 ``data.choices``) and modal (type 9 ``data``)
    choices: list[dict] | None = None
    modal: dict | None = None
    #: for a modal submit (type 5): the id of the interaction the bot answered with that modal
    modal_from: str | None = None
    #: the number of the gateway connection it was sent on (see :meth:`FakeDiscord.connections`)
    connection: int | None = None
    _acked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ack_latency(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.created_monotonic

    async def wait_acked(self, timeout: float = 5.0) -> "Interaction":
        """Waits until the bot's callback was accepted; raises ``TimeoutError`` otherwise."""
        try:
            await asyncio.wait_for(self._acked.wait(), timeout)
        except asyncio.TimeoutError:
            tried = ", ".join(f"type {c['type']} -> {c['status']}" for c in self.callbacks) or "no callback"
            raise TimeoutError(f"interaction {self.id} ({self.name}) not acknowledged within {timeout}s ({tried})") from None
        return self


@dataclass
class Guild:
    """A guild (Discord server) of the fake, with the text channel interactions happen in by default."""

    id: str
    channel_id: str
    name: str

    def shard(self, shard_count: int) -> int:
        return shard_of(self.id, shard_count)


@dataclass(eq=False)
class HeldPost:
    """A channel post whose message was created but whose HTTP answer was held back
    (:meth:`FakeDiscord.hold_channel_posts`)."""

    message: Message
    #: the :attr:`FakeDiscord.requests` record of the POST
    request: dict
    held_at: float
    #: None while held, then how the hold ended: "released" (:meth:`FakeDiscord.release_channel_posts`),
    #: "disconnected" (the client went away; it never saw the answer), "timeout" (``max_hold``) or "stopped"
    outcome: str | None = None
    #: monotonic time the hold ended
    ended_at: float | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def _end(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome, self.ended_at = outcome, time.monotonic()
        self._release.set()


@dataclass
class _File:
    field: str
    index: int | None
    filename: str
    data: bytes
    content_type: str | None

    def info(self) -> dict:
        return {"field": self.field, "filename": self.filename, "size": len(self.data),
                "content_type": self.content_type, "data": self.data}


class _Reject(Exception):
    """A Discord-style error answer: raised by handlers, rendered by the middleware."""

    def __init__(self, status: int, code: int, message: str, *, errors: dict | None = None,
                 violation: str | None = None, headers: dict | None = None, body: dict | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message = status, code, message
        self.errors, self.violation, self.headers, self.body = errors, violation, headers or {}, body


def _form_error(errs: rules.FormErrors, what: str) -> _Reject:
    return _Reject(400, 50035, "Invalid Form Body", errors=errs.to_errors(),
                   violation=f"[50035 invalid-form] {what}: {errs.describe()}")


class _Connection:
    def __init__(self, ws: web.WebSocketResponse, number: int, sent: list[dict]) -> None:
        self.ws = ws
        self.number = number
        self.sent = sent
        self.seq = 0
        self.lock = asyncio.Lock()
        self.identify: dict | None = None
        self.shard: tuple[int, int] = (0, 1)
        self.session_id: str | None = None
        self.ready = False
        self.closed = False
        self.ready_at: float | None = None

    @property
    def live(self) -> bool:
        return not self.closed and not self.ws.closed

    async def send(self, obj: dict) -> None:
        async with self.lock:
            await self.ws.send_str(_dumps(obj))

    async def dispatch(self, event: str, data: dict) -> int:
        async with self.lock:
            self.seq += 1
            await self.ws.send_str(_dumps({"op": 0, "t": event, "s": self.seq, "d": data}))
            self.sent.append({"connection": self.number, "shard": self.shard, "t": event, "d": data})
            return self.seq


# ---------------------------------------------------------------------------------------------------
# the fake
# ---------------------------------------------------------------------------------------------------
class FakeDiscord:
    """Fake Discord API + gateway on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, app_id: str = "1001", guild_id: str = "2001", channel_id: str = "3001",
                 attachment_size_limit: int = 8 * 1024 * 1024, token_lifetime: float = 900.0,
                 ack_deadline: float = 3.0, edit_limit: tuple[int, float] = (5, 5.0),
                 edit_ratelimit_headers: bool = False, shard_count: int = 1, guilds_per_shard: int = 2500,
                 max_concurrency: int = 1) -> None:
        self.app_id = str(app_id)
        self.guild_id = str(guild_id)
        self.channel_id = str(channel_id)
        self.attachment_size_limit = int(attachment_size_limit)
        self.token_lifetime = float(token_lifetime)
        self.ack_deadline = float(ack_deadline)
        self.edit_limit = (int(edit_limit[0]), float(edit_limit[1]))
        #: also send X-RateLimit-* headers on successful edits (as Discord does); discord.py then
        #: waits pre-emptively instead of running into the 429
        self.edit_ratelimit_headers = edit_ratelimit_headers
        #: the shard count ``GET /gateway/bot`` recommends
        self.shard_count = int(shard_count)
        #: the most guilds one connection may hold; an IDENTIFY that would hold more is closed with 4011
        self.guilds_per_shard = int(guilds_per_shard)
        #: ``session_start_limit``: IDENTIFYs allowed per day (``remaining`` counts down) and per 5 s bucket
        self.session_start_total, self.max_concurrency = 1000, int(max_concurrency)
        self.identified = 0
        #: permissions of the bot in the channel (interaction ``app_permissions``)
        self.app_permissions = str((1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 18))

        self.messages: dict[str, Message] = {}
        self.interactions: dict[str, Interaction] = {}
        self.requests: list[dict] = []
        self.commands: list[dict] = []
        self.global_commands: list[dict] = []
        self.guild_commands: dict[str, list[dict]] = {}
        self.unhandled: list[str] = []
        self.violations: list[str] = []
        #: every gateway payload the bot sent (heartbeats excluded), with the connection number
        self.gateway_received: list[dict] = []
        #: every dispatch (op 0) the fake sent: {"connection", "shard": (id, count), "t", "d"}
        self.gateway_sent: list[dict] = []
        self.users: dict[str, dict] = {}
        self.guilds: dict[str, Guild] = {self.guild_id: Guild(self.guild_id, self.channel_id, "Fake Guild")}
        self.channels: dict[str, dict] = {self.channel_id: self._text_channel(self.channel_id, self.guild_id)}
        self.bot_user = {"id": self.app_id, "username": "fakebot", "discriminator": "0", "avatar": None,
                         "global_name": None, "bot": True, "public_flags": 0}

        #: how often waits re-check conditions that may depend on state outside the fake
        self.poll_interval = 0.01
        #: seconds a nonce is remembered for ``enforce_nonce`` (Discord: "a few minutes")
        self.nonce_window = 300.0
        #: longest a held channel post is held before it is answered anyway (seconds)
        self.max_hold = 30.0
        #: every held channel post, in order (see :meth:`hold_channel_posts`)
        self.held_posts: list[HeldPost] = []
        self._hold_remaining = 0
        self._held_taken = 0
        self._nonces: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._last_ms = 0
        self._increment = 0
        self._changed = asyncio.Event()
        self._connections: list[_Connection] = []
        self._n_connections = 0
        self._sessions: dict[str, int] = {}
        self._command_ids: dict[tuple[str, int, str], str] = {}
        self._blobs: dict[tuple[str, str, str], tuple[bytes, str | None]] = {}
        self._edit_times: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._port: int | None = None
        self._joined_at = _iso(dt.datetime.now(_UTC))
        self._started = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{aid}/{filename}", self._serve_attachment)
        r = app.router
        p = API_PREFIX
        r.add_get(p + "/gateway", self._get_gateway)
        r.add_get(p + "/gateway/bot", self._get_gateway_bot)
        r.add_get(p + "/users/@me", self._get_me)
        r.add_get(p + "/users/{user_id}", self._get_user)
        r.add_get(p + "/oauth2/applications/@me", self._get_application)
        r.add_get(p + "/applications/@me", self._get_application)
        r.add_route("*", p + "/applications/{app}/commands", self._app_commands)
        r.add_route("*", p + "/applications/{app}/guilds/{gid}/commands", self._app_commands)
        r.add_post(p + "/interactions/{iid}/{token}/callback", self._callback)
        r.add_post(p + "/webhooks/{app}/{token}", self._followup)
        r.add_route("*", p + "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message)
        r.add_get(p + "/channels/{cid}", self._get_channel)
        r.add_route("*", p + "/channels/{cid}/messages", self._channel_messages)
        r.add_route("*", p + "/channels/{cid}/messages/{mid}", self._channel_message)
        r.add_post(p + "/channels/{cid}/typing", self._typing)
        r.add_route("*", p + "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", self._reaction)
        r.add_get(p + "/guilds/{gid}", self._get_guild)
        r.add_get(p + "/guilds/{gid}/channels", self._get_guild_channels)
        r.add_route("*", "/{tail:.*}", self._no_route)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True  # a bot still connected will try to RESUME: turn it away
        self._hold_remaining = 0
        for held in self.held_posts:
            held._end("stopped")
        for conn in list(self._connections):
            conn.closed = True
            try:
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake discord stopping"), 1.0)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        try:
            await asyncio.wait_for(runner.cleanup(), 5.0)
        except asyncio.TimeoutError:
            self.unhandled.append("stop: runner cleanup timed out")
        self._notify()

    def install(self, monkeypatch: Any) -> None:
        """Points discord.py (REST, webhooks, callbacks and gateway) at this fake, undone by monkeypatch."""
        import discord.gateway
        import discord.http

        monkeypatch.setattr(discord.http.Route, "BASE", self.api_url)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))

    def cdn_url(self, path: str) -> str:
        """Absolute URL on the fake for ``path`` (e.g. ``attachments/<channel>/<id>/<filename>``)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- guilds -------------------------------------------------------------------------------------
    @staticmethod
    def _text_channel(channel_id: str, guild_id: str, name: str = "general") -> dict:
        return {"id": channel_id, "type": 0, "guild_id": guild_id, "name": name, "position": 0,
                "permission_overwrites": [], "topic": None, "nsfw": False, "last_message_id": None,
                "rate_limit_per_user": 0, "parent_id": None, "flags": 0}

    def add_guild(self, *, shard: int | None = None, shard_count: int | None = None, name: str | None = None,
                  guild_id: str | None = None) -> Guild:
        """Adds a guild with one text channel; its id falls on ``shard`` of ``shard_count`` (default: the
        recommended :attr:`shard_count`), or is ``guild_id``. Bots see it from their next READY: add guilds
        before they connect."""
        if guild_id is None:
            guild_id = guild_id_on_shard(shard or 0, shard_count or self.shard_count)
        elif shard is not None:
            raise ValueError("give shard or guild_id, not both")
        guild_id = str(guild_id)
        if guild_id in self.guilds:
            raise ValueError(f"guild {guild_id} exists")
        channel_id = self.snowflake()
        guild = Guild(guild_id, channel_id, name or f"Guild {guild_id[-4:]}")
        self.guilds[guild_id] = guild
        self.channels[channel_id] = self._text_channel(channel_id, guild_id)
        return guild

    def dm_channel(self, user_id: str) -> str:
        """The id of the bot's DM channel with ``user_id`` (created on first use), for ``channel_id=``."""
        found = next((cid for cid, c in self.channels.items() if c.get("type") == 1
                      and c["recipients"][0]["id"] == str(user_id)), None)
        if found is None:
            found = self.snowflake()
            self.channels[found] = {"id": found, "type": 1, "recipients": [self._user(str(user_id))],
                                    "last_message_id": None, "flags": 0}
        return found

    def _guild_of(self, channel_id: str | None) -> str | None:
        """The guild of a channel (None for a DM); channels added without a guild are the first guild's."""
        chan = self.channels.get(channel_id or "") or {}
        if chan.get("type") == 1:
            return None
        return str(chan.get("guild_id") or self.guild_id)

    def _acting_channel(self, channel_id: str | None, near: str | None = None) -> str:
        """Where a user acts: ``channel_id``; else the channel ``near`` (of a clicked message or a modal) when
        it is in another guild than :attr:`channel_id`; else :attr:`channel_id`."""
        if channel_id is not None:
            if str(channel_id) not in self.channels:
                raise LookupError(f"channel {channel_id} does not exist")
            return str(channel_id)
        if near is not None and near in self.channels and self._guild_of(near) != self._guild_of(self.channel_id):
            return near
        return self.channel_id

    # -- waiting ------------------------------------------------------------------------------------
    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_until(self, check: Callable[[], Any], timeout: float, describe: Callable[[], str]) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(describe())
            event = self._changed
            try:
                # woken by any change in the fake; also polls, since conditions may look at bot state
                await asyncio.wait_for(event.wait(), min(remaining, self.poll_interval))
            except asyncio.TimeoutError:
                pass

    def _ready_connection(self, guild_id: str | None) -> _Connection | None:
        """The newest open, ready connection of the shard that serves ``guild_id`` (None: a DM, shard 0)."""
        for conn in reversed(self._connections):
            if not (conn.live and conn.ready):
                continue
            if conn.shard[0] == (0 if guild_id is None else shard_of(guild_id, conn.shard[1])):
                return conn
        return None

    def connections(self) -> list[tuple[int, tuple[int, int]]]:
        """(number, (shard id, shard count)) of every open, ready gateway connection, oldest first."""
        return [(c.number, c.shard) for c in self._connections if c.live and c.ready]

    async def wait_ready(self, timeout: float = 5.0, *, guild_id: str | None = None,
                         shard: tuple[int, int] | None = None) -> None:
        """Waits until a bot identified and received GUILD_CREATE on a connection that is still open: one
        that serves ``guild_id`` (default: the first guild), or, with ``shard=(id, count)``, that shard."""
        def check() -> _Connection | None:
            if shard is None:
                return self._ready_connection(guild_id or self.guild_id)
            return next((c for c in self._connections if c.live and c.ready and c.shard == tuple(shard)), None)

        await self._wait_until(check, timeout,
                               lambda: f"no bot became ready within {timeout}s (connections: "
                                       f"{[(c.number, c.shard, c.live, c.ready) for c in self._connections]}, "
                                       f"violations: {self.violations}, unhandled: {self.unhandled})")

    async def wait_for_message(self, predicate: Callable[[Message], Any], timeout: float = 5.0) -> Message:
        """The first stored message (in creation order) for which ``predicate`` is true, waiting for
        creations/edits up to ``timeout`` seconds."""
        def check() -> Message | None:
            return next((m for m in list(self.messages.values()) if predicate(m)), None)

        return await self._wait_until(check, timeout, lambda: (
            f"no matching message within {timeout}s; messages: {list(self.messages.values())}; "
            f"violations: {self.violations}; unhandled: {self.unhandled}"))

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Waits (bounded) for an arbitrary condition on the fake's state; returns its truthy value."""
        return await self._wait_until(condition, timeout, lambda: f"condition not met within {timeout}s")

    # -- ids / users --------------------------------------------------------------------------------
    def snowflake(self) -> str:
        ms = int(time.time() * 1000)
        if ms <= self._last_ms:
            ms = self._last_ms
            self._increment += 1
            if self._increment >= 4096:
                ms += 1
                self._increment = 0
        else:
            self._increment = 0
        self._last_ms = ms
        return str(((ms - DISCORD_EPOCH) << 22) | (1 << 17) | (1 << 12) | self._increment)

    def _user(self, user_id: str, username: str | None = None) -> dict:
        user_id = str(user_id)
        if user_id == self.app_id:
            return dict(self.bot_user)
        user = self.users.get(user_id)
        if user is None or (username and user["username"] != username):
            name = username or (user or {}).get("username") or f"user{user_id[-4:]}"
            user = {"id": user_id, "username": name, "discriminator": "0", "avatar": None, "global_name": name,
                    "public_flags": 0}
            self.users[user_id] = user
        return dict(user)

    def _member(self, user_id: str, username: str | None, permissions: str) -> dict:
        return {"user": self._user(user_id, username), "roles": [], "joined_at": self._joined_at, "deaf": False,
                "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None,
                "premium_since": None, "communication_disabled_until": None, "permissions": str(permissions)}

    def _everyone_role(self, guild_id: str | None = None) -> dict:
        return {"id": guild_id or self.guild_id, "name": "@everyone", "permissions": self.app_permissions,
                "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0,
                "icon": None, "unicode_emoji": None}

    # -- gateway --------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        if self._stopping:
            await ws.close(code=1001, message=b"fake discord stopping")
            return ws
        self._n_connections += 1
        conn = _Connection(ws, self._n_connections, self.gateway_sent)
        self._connections.append(conn)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": 45000, "_trace": ["fake-discord"]}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        payload = json.loads(msg.data)
                    except ValueError:
                        self.violations.append(f"[4002 decode-error] gateway frame is not JSON: {msg.data[:80]!r}")
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    await self._on_gateway_payload(conn, payload)
                elif msg.type == WSMsgType.BINARY:
                    self.violations.append("[gateway] binary frame received (the fake speaks JSON text only)")
                elif msg.type == WSMsgType.ERROR:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001
            self.unhandled.append("gateway: " + traceback.format_exc())
        finally:
            conn.closed = True
            if conn.session_id:
                self._sessions[conn.session_id] = conn.seq
            self._notify()
        return ws

    async def _on_gateway_payload(self, conn: _Connection, payload: dict) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:  # heartbeat
            await conn.send({"op": 11})
            return
        self.gateway_received.append({"connection": conn.number, "op": op, "d": data})
        if op == 2:  # identify
            if conn.identify is not None:
                self.violations.append("[4005 already-authenticated] second IDENTIFY on one connection")
                await conn.ws.close(code=4005, message=b"Already authenticated.")
                return
            if not isinstance(data, dict) or not data.get("token") or "intents" not in data:
                self.violations.append(f"[4002 bad-identify] IDENTIFY lacks token or intents: {data!r}"[:300])
                await conn.ws.close(code=4002, message=b"Error while decoding payload.")
                return
            shard = data.get("shard", [0, 1])
            if not (isinstance(shard, list) and len(shard) == 2 and all(type(n) is int for n in shard)
                    and shard[1] >= 1 and 0 <= shard[0] < shard[1]):
                self.violations.append(f"[4010 invalid-shard] IDENTIFY with shard {shard!r}")
                await conn.ws.close(code=4010, message=b"Invalid shard.")
                return
            held = len(self._guilds_on(shard[0], shard[1]))
            if held > self.guilds_per_shard:
                self.violations.append(f"[4011 sharding-required] IDENTIFY with shard {shard} would hold {held} "
                                       f"guilds (at most {self.guilds_per_shard} per shard)")
                await conn.ws.close(code=4011, message=b"Sharding required.")
                return
            conn.identify = data
            conn.shard = (shard[0], shard[1])
            conn.session_id = secrets.token_hex(16)
            self.identified += 1
            await self._send_ready(conn)
        elif op == 6:  # resume
            session = (data or {}).get("session_id")
            if session in self._sessions:
                conn.identify = {"resumed": session}
                conn.session_id = session
                conn.seq = self._sessions[session]
                await conn.dispatch("RESUMED", {"_trace": ["fake-discord"]})
                conn.ready = True
                conn.ready_at = time.monotonic()
                self._notify()
            else:
                await conn.send({"op": 9, "d": False})
        elif op == 8:  # request guild members
            await conn.dispatch("GUILD_MEMBERS_CHUNK", {
                "guild_id": str((data or {}).get("guild_id", self.guild_id)),
                "members": [self._bot_member()], "chunk_index": 0, "chunk_count": 1,
                "not_found": [], "nonce": (data or {}).get("nonce")})
        # op 3 (presence), 4 (voice state) and others: recorded, nothing to answer

    def _bot_member(self) -> dict:
        return {"user": dict(self.bot_user), "roles": [], "joined_at": self._joined_at, "deaf": False, "mute": False,
                "flags": 0, "pending": False, "nick": None, "avatar": None, "premium_since": None}

    def _guilds_on(self, shard_id: int, shard_count: int) -> list[Guild]:
        return [g for g in self.guilds.values() if g.shard(shard_count) == shard_id]

    def _guild_payload(self, guild_id: str | None = None) -> dict:
        guild = self.guilds[guild_id or self.guild_id]
        channels = [copy.deepcopy(c) for c in self.channels.values()
                    if c.get("type") != 1 and self._guild_of(c["id"]) == guild.id]
        return {
            "id": guild.id, "name": guild.name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": "1002", "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "roles": [self._everyone_role(guild.id)],
            "emojis": [], "stickers": [], "features": [], "mfa_level": 0, "application_id": None,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "vanity_url_code": None, "description": None, "banner": None, "premium_tier": 0,
            "premium_subscription_count": 0, "preferred_locale": "en-US", "public_updates_channel_id": None,
            "nsfw_level": 0, "premium_progress_bar_enabled": False, "joined_at": self._joined_at, "large": False,
            "unavailable": False, "member_count": 1, "voice_states": [], "members": [self._bot_member()],
            "channels": channels, "threads": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    async def _send_ready(self, conn: _Connection) -> None:
        shard_id, shard_count = conn.shard
        guilds = self._guilds_on(shard_id, shard_count)
        await conn.dispatch("READY", {
            "v": 10, "user": dict(self.bot_user, verified=True, mfa_enabled=False, flags=0),
            "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
            "session_id": conn.session_id, "session_type": "normal",
            "resume_gateway_url": self.gateway_url, "shard": [shard_id, shard_count],
            "application": {"id": self.app_id, "flags": 0}, "private_channels": [], "relationships": [],
            "presences": [], "guild_join_requests": [], "user_settings": {}, "_trace": ["fake-discord"],
        })
        for guild in guilds:
            await conn.dispatch("GUILD_CREATE", self._guild_payload(guild.id))
        conn.ready = True
        conn.ready_at = time.monotonic()
        self._sessions[conn.session_id] = conn.seq
        self._notify()

    async def reconnect(self, timeout: float = 5.0) -> None:
        """Asks the connected bot(s) to reconnect (op 7 RECONNECT), as Discord does during its
        deploys, and waits until they have RESUMEd on new connections."""
        old = [c for c in self._connections if c.live and c.ready]
        for conn in old:
            await conn.send({"op": 7, "d": None})

        def done() -> bool:
            new = [c for c in self._connections if c.live and c.ready and c not in old]
            return all(not c.live for c in old) and all(any(n.shard == c.shard for n in new) for c in old)

        await self._wait_until(done, timeout, lambda: f"the bot did not reconnect within {timeout}s")

    async def dispatch(self, event: str, data: dict, *, timeout: float = 5.0) -> int:
        """Sends an arbitrary gateway dispatch (op 0) to the newest ready connection of the shard of its guild
        (``data["guild_id"]``, the guild of ``data["channel_id"]``, or ``data["id"]`` for ``GUILD_*`` events;
        none: shard 0). Returns the number of the connection it went to."""
        guild_id = data.get("guild_id")
        if guild_id is None and data.get("channel_id") is not None:
            guild_id = self._guild_of(str(data["channel_id"]))
        if guild_id is None and event.startswith("GUILD_") and data.get("id") is not None:
            guild_id = data["id"]
        conn = await self._wait_until(lambda: self._ready_connection(guild_id), timeout,
                                      lambda: f"no bot connection serves the shard of guild {guild_id} to dispatch "
                                              f"{event} to (connections: {self.connections()})")
        await conn.dispatch(event, data)
        return conn.number

    # -- acting as users ----------------------------------------------------------------------------
    def _base_interaction(self, itype: int, *, user_id: str, username: str, permissions: str,
                          attachment_size_limit: int | None, locale: str = "en-US",
                          channel_id: str | None = None) -> dict:
        """An interaction in ``channel_id`` (default :attr:`channel_id`): a guild one, or a DM's (``user``
        instead of ``member``, no guild, context 1) in a DM channel."""
        iid = self.snowflake()
        token = "fake-itok-" + secrets.token_urlsafe(48)
        channel_id = channel_id or self.channel_id
        channel = dict(self.channels[channel_id], permissions=str(permissions))
        limit = self.attachment_size_limit if attachment_size_limit is None else int(attachment_size_limit)
        guild_id = self._guild_of(channel_id)
        payload = {
            "id": iid, "application_id": self.app_id, "type": itype, "token": token, "version": 1,
            "channel_id": channel_id, "channel": channel, "app_permissions": self.app_permissions,
            "locale": locale, "entitlements": [], "attachment_size_limit": limit,
        }
        if guild_id is None:
            payload.update(user=self._user(user_id, username), authorizing_integration_owners={"0": "0"}, context=1)
        else:
            payload.update(guild_id=guild_id, guild={"id": guild_id, "locale": "en-US", "features": []},
                           member=self._member(user_id, username, permissions), guild_locale="en-US",
                           authorizing_integration_owners={"0": guild_id}, context=0)
        return payload

    async def _send_interaction(self, payload: dict, *, name: str, user_id: str, username: str,
                                message_id: str | None = None, modal_from: str | None = None) -> Interaction:
        guild_id = payload.get("guild_id")
        conn = await self._wait_until(lambda: self._ready_connection(guild_id), 5.0,
                                      lambda: f"no ready bot connection serves the shard of guild {guild_id} to send "
                                              f"the interaction to (did the bot start, and did you await "
                                              f"fake.wait_ready()?) connections: {self.connections()}")
        ia = Interaction(id=payload["id"], token=payload["token"], type=payload["type"], user_id=str(user_id),
                         username=username, channel_id=payload["channel_id"], guild_id=guild_id, name=name,
                         attachment_size_limit=payload["attachment_size_limit"],
                         created_at=snowflake_time(payload["id"]), created_monotonic=time.monotonic(),
                         payload=payload, message_id=message_id, modal_from=modal_from)
        self.interactions[ia.id] = ia
        await conn.dispatch("INTERACTION_CREATE", payload)
        ia.connection = conn.number
        return ia

    def _scopes(self, guild_id: str | None) -> list[tuple[str | None, list[dict]]]:
        """The commands a user sees in a guild (its own, then the global ones) or in a DM (global ones)."""
        own = [(guild_id, self.guild_commands.get(guild_id, []))] if guild_id is not None else []
        return own + [(None, self.global_commands)]

    def _find_command(self, name: str, guild_id: str | None) -> tuple[str | None, dict, list[str]]:
        parts = name.strip().lstrip("/").split()
        if not parts:
            raise ValueError("empty command name")
        scopes = self._scopes(guild_id)
        for guild_id, cmds in scopes:
            for cmd in cmds:
                if cmd.get("name") == parts[0] and cmd.get("type", 1) == 1:
                    return guild_id, cmd, parts[1:]
        synced = sorted({c.get("name") for _, cmds in scopes for c in cmds})
        raise LookupError(f"/{parts[0]} is not among the commands the bot synced: {synced}")

    def _typed_options(self, cmd: dict, subpath: list[str], options: dict, *, focused: str | None,
                       resolved: dict, autocomplete: bool, guild_id: str | None = None) -> list[dict]:
        defs = cmd.get("options") or []
        chain: list[dict] = []
        for sub in subpath:
            d = next((o for o in defs if o.get("name") == sub and o.get("type") in (1, 2)), None)
            if d is None:
                raise LookupError(f"/{cmd['name']} has no subcommand {sub!r}; options: {[o.get('name') for o in defs]}")
            chain.append(d)
            defs = d.get("options") or []
        subs = [o.get("name") for o in defs if o.get("type") in (1, 2)]
        if subs:
            raise LookupError(f"/{' '.join([cmd['name'], *subpath])} needs a subcommand, one of {subs}")
        by_name = {o["name"]: o for o in defs}
        unknown = set(options) - set(by_name)
        if unknown:
            raise LookupError(f"unknown option(s) {sorted(unknown)}; the synced command has {sorted(by_name)}")
        if focused is not None and focused not in options:
            raise ValueError(f"focused option {focused!r} must be given in options")
        if not autocomplete:
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in options]
            if missing:
                raise ValueError(f"required option(s) missing: {missing} (the Discord client would not send this)")
        typed = []
        for odef in defs:  # Discord sends options in the order the user filled them; definition order is fine
            if odef["name"] in options:
                typed.append(self._typed_option(odef, options[odef["name"]], focused=odef["name"] == focused,
                                                resolved=resolved, guild_id=guild_id or self.guild_id))
        for d in reversed(chain):
            typed = [{"name": d["name"], "type": d["type"], "options": typed}]
        return typed

    def _typed_option(self, odef: dict, value: Any, *, focused: bool, resolved: dict, guild_id: str) -> dict:
        otype, name = odef.get("type"), odef["name"]
        out: dict = {"name": name, "type": otype}
        if focused:
            out["value"] = value if isinstance(value, str) else str(value)
            out["focused"] = True
            return out
        if otype == 3:
            if not isinstance(value, str):
                raise TypeError(f"option {name!r} is a string option, got {value!r}")
            lo, hi = odef.get("min_length"), odef.get("max_length")
            if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
                raise ValueError(f"option {name!r}: length must be within [{lo}, {hi}]")
        elif otype in (4, 10):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (otype == 4 and not isinstance(value, int)):
                raise TypeError(f"option {name!r} is {'an integer' if otype == 4 else 'a number'} option, got {value!r}")
            lo, hi = odef.get("min_value"), odef.get("max_value")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"option {name!r}: {value} is outside [{lo}, {hi}]")
        elif otype == 5:
            if not isinstance(value, bool):
                raise TypeError(f"option {name!r} is a boolean option, got {value!r}")
        elif otype == 6 or (otype == 9 and not _is_role_value(value, guild_id)):
            user = value if isinstance(value, dict) else {"id": str(value)}
            uid = str(user["id"])
            udata = self._user(uid, user.get("username"))
            resolved.setdefault("users", {})[uid] = udata
            member = self._member(uid, udata["username"], user.get("permissions", "0"))
            member.pop("user")
            resolved.setdefault("members", {})[uid] = member
            value = uid
        elif otype in (8, 9):
            rid = str(value["id"] if isinstance(value, dict) else value)
            role = self._everyone_role(guild_id) if rid == guild_id else dict(
                self._everyone_role(guild_id), id=rid, name=f"role{rid[-4:]}", position=1)
            resolved.setdefault("roles", {})[rid] = role
            value = rid
        elif otype == 7:
            cid = str(value["id"] if isinstance(value, dict) else value)
            chan = self.channels.get(cid) or {"id": cid, "type": 0, "name": f"channel{cid[-4:]}", "guild_id": guild_id}
            if odef.get("channel_types") and chan["type"] not in odef["channel_types"]:
                raise ValueError(f"option {name!r}: channel type {chan['type']} not in {odef['channel_types']}")
            resolved.setdefault("channels", {})[cid] = {"id": cid, "type": chan["type"], "name": chan["name"],
                                                        "permissions": self.app_permissions, "guild_id": guild_id,
                                                        "parent_id": None, "flags": 0}
            value = cid
        elif otype == 11:
            att = self._user_upload(value)
            resolved.setdefault("attachments", {})[att["id"]] = self._attachment_json(att)
            value = att["id"]
        else:
            raise TypeError(f"option {name!r} has unsupported type {otype}")
        choices = odef.get("choices")
        if choices and value not in [c.get("value") for c in choices]:
            raise ValueError(f"option {name!r}: {value!r} is not one of the choices {[c.get('value') for c in choices]}")
        out["value"] = value
        return out

    def _user_upload(self, value: Any) -> dict:
        if isinstance(value, (bytes, bytearray)):
            filename, data, ctype = "file.bin", bytes(value), None
        elif isinstance(value, tuple):
            filename, data, ctype = value[0], bytes(value[1]), (value[2] if len(value) > 2 else None)
        elif isinstance(value, dict):
            filename, data, ctype = value["filename"], bytes(value["data"]), value.get("content_type")
        else:
            raise TypeError("attachment option value must be bytes, (filename, bytes[, content_type]) or a dict")
        return self._store_attachment(self.channel_id, filename, data, ctype, None)

    async def slash(self, name: str, options: dict | None = None, *, user_id: str = "5001", username: str = "alice",
                    attachment_size_limit: int | None = None, permissions: str = "0",
                    locale: str = "en-US", channel_id: str | None = None) -> Interaction:
        """A user runs ``/name`` (``"group sub"`` for subcommands) with ``options`` ({name: value}).

        Values are typed per the synced command's options: str/int/float/bool as is; users, roles and
        channels by id (or a dict with ``id``/``username``); attachments as bytes, ``(filename, bytes)``
        or ``(filename, bytes, content_type)``. Raises LookupError/ValueError/TypeError for input the
        Discord client would not let a user send (unsynced command, missing required option, not a
        choice, out of range). ``channel_id``: where (see the module docstring). Returns as soon as
        INTERACTION_CREATE is sent."""
        channel_id = self._acting_channel(channel_id)
        guild_cmd, cmd, subpath = self._find_command(name, self._guild_of(channel_id))
        payload = self._base_interaction(IT_COMMAND, user_id=str(user_id), username=username,
                                            permissions=permissions, attachment_size_limit=attachment_size_limit,
                                            locale=locale, channel_id=channel_id)
        resolved: dict = {}
        data = {"id": cmd["id"], "name": cmd["name"], "type": 1,
                "options": self._typed_options(cmd, subpath, dict(options or {}), focused=None, resolved=resolved,
                                               autocomplete=False, guild_id=payload.get("guild_id"))}
        if resolved:
            data["resolved"] = resolved
        if guild_cmd is not None:
            data["guild_id"] = guild_cmd
        payload["data"] = data
        return await self._send_interaction(payload, name=" ".join([cmd["name"], *subpath]), user_id=str(user_id),
                                            username=username)

    def user_post(self, author_id: str, content: str = "", files: list[tuple[str, bytes]] = (),
                  channel_id: str | None = None) -> Message:
        """A message someone else (a user, another bot) posted in the channel, with attachments on the CDN."""
        channel_id = self._acting_channel(channel_id)
        atts = [self._store_attachment(channel_id, name, data, None, None) for name, data in files]
        m = Message(id=self.snowflake(), channel_id=channel_id, author_id=str(author_id), content=content,
                    attachments=atts)
        m.created_at = snowflake_time(m.id)
        m.history.append({"kind": "user", "time": time.monotonic(), "payload": {"content": content}, "files": []})
        self._publish(m)
        return m

    async def message_command(self, name: str, message_id: str, *, user_id: str = "5001", username: str = "alice",
                              permissions: str = "0", channel_id: str | None = None) -> Interaction:
        """A user picks Apps -> ``name`` on a message (a message context menu): data.type 3, target_id,
        and the message in resolved.messages, as Discord sends it."""
        target = self.messages.get(str(message_id))
        channel_id = self._acting_channel(channel_id, target.channel_id if target is not None else None)
        scopes = self._scopes(self._guild_of(channel_id))
        found = next(((guild, cmd) for guild, cmds in scopes for cmd in cmds
                      if cmd.get("name") == name and cmd.get("type") == 3), None)
        if found is None:
            raise LookupError(f"the bot synced no message command {name!r}")
        if target is None or target.deleted:
            raise LookupError(f"message {message_id} does not exist")
        guild_cmd, cmd = found
        payload = self._base_interaction(IT_COMMAND, user_id=str(user_id), username=username,
                                            permissions=permissions, attachment_size_limit=None,
                                            channel_id=channel_id)
        data = {"id": cmd["id"], "name": cmd["name"], "type": 3, "target_id": target.id,
                "resolved": {"messages": {target.id: self._message_json(target)}}}
        if guild_cmd is not None:
            data["guild_id"] = guild_cmd
        payload["data"] = data
        return await self._send_interaction(payload, name=name, user_id=str(user_id), username=username)

    async def autocomplete(self, name: str, options: dict, focused: str, *, user_id: str = "5001",
                           username: str = "alice", permissions: str = "0", timeout: float | None = None,
                           channel_id: str | None = None) -> list:
        """A user types into option ``focused`` of ``/name``; returns the choices the bot answered (type 8)."""
        channel_id = self._acting_channel(channel_id)
        guild_cmd, cmd, subpath = self._find_command(name, self._guild_of(channel_id))
        payload = self._base_interaction(IT_AUTOCOMPLETE, user_id=str(user_id), username=username,
                                            permissions=permissions, attachment_size_limit=None,
                                            channel_id=channel_id)
        resolved: dict = {}
        data = {"id": cmd["id"], "name": cmd["name"], "type": 1,
                "options": self._typed_options(cmd, subpath, dict(options), focused=focused, resolved=resolved,
                                               autocomplete=True, guild_id=payload.get("guild_id"))}
        if resolved:
            data["resolved"] = resolved
        if guild_cmd is not None:
            data["guild_id"] = guild_cmd
        payload["data"] = data
        ia = await self._send_interaction(payload, name=" ".join([cmd["name"], *subpath]), user_id=str(user_id),
                                          username=username)
        await ia.wait_acked(timeout if timeout is not None else min(5.0, self.ack_deadline + 1.0))
        return list(ia.choices or [])

    async def click(self, message_id: str, custom_id: str, *, user_id: str = "5001", username: str = "alice",
                    permissions: str = "0", values: list[str] | None = None,
                    channel_id: str | None = None) -> Interaction:
        """A user clicks the button (or picks ``values`` in the select) ``custom_id`` on a stored message.

        The INTERACTION_CREATE carries the stored message with its components, as Discord does (a
        ``DynamicItem`` needs them). Raises LookupError/ValueError for a click a user could not make
        (unknown/deleted message, no such component, disabled, someone else's ephemeral message)."""
        msg = self.messages.get(str(message_id))
        if msg is None or msg.deleted:
            raise LookupError(f"message {message_id} {'was deleted' if msg else 'does not exist'}")
        comp = msg.find_component(custom_id)
        if comp is None:
            raise LookupError(f"message {message_id} has no component {custom_id!r}; it has {msg.custom_ids}")
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} on message {message_id} is disabled")
        if msg.ephemeral and msg.interaction_id in self.interactions:
            owner = self.interactions[msg.interaction_id].user_id
            if owner != str(user_id):
                raise ValueError(f"message {message_id} is ephemeral and only visible to user {owner}")
        payload = self._base_interaction(IT_COMPONENT, user_id=str(user_id), username=username,
                                            permissions=permissions, attachment_size_limit=None,
                                            channel_id=self._acting_channel(channel_id, msg.channel_id))
        ctype = comp.get("type")
        data: dict = {"custom_id": custom_id, "component_type": ctype}
        if "id" in comp:
            data["id"] = comp["id"]
        if ctype in rules.SELECT_TYPES:
            picked = [str(v) for v in (values or [])]
            lo, hi = comp.get("min_values", 1), comp.get("max_values", 1)
            if not lo <= len(picked) <= hi:
                raise ValueError(f"select {custom_id!r} takes {lo}..{hi} values, got {picked}")
            if ctype == 3:
                allowed = [o.get("value") for o in comp.get("options") or []]
                bad = [v for v in picked if v not in allowed]
                if bad:
                    raise ValueError(f"select {custom_id!r} has no option(s) {bad}; options: {allowed}")
            else:
                resolved: dict = {}
                self._resolve_select_values(ctype, picked, resolved, payload.get("guild_id"))
                if resolved:
                    data["resolved"] = resolved
            data["values"] = picked
        elif values is not None:
            raise ValueError(f"component {custom_id!r} is not a select; values make no sense")
        payload["data"] = data
        payload["message"] = self._message_json(msg)
        return await self._send_interaction(payload, name=custom_id, user_id=str(user_id), username=username,
                                            message_id=msg.id)

    def _resolve_select_values(self, ctype: int, picked: list[str], resolved: dict,
                               guild_id: str | None = None) -> None:
        """Adds what a user/role/mentionable/channel select's picked ids refer to to ``resolved``."""
        for v in picked:
            if ctype in (5, 7):
                resolved.setdefault("users", {})[v] = self._user(v)
            elif ctype == 6:
                resolved.setdefault("roles", {})[v] = dict(self._everyone_role(guild_id), id=v, name=f"role{v[-4:]}")
            elif ctype == 8:
                chan = self.channels.get(v) or {"id": v, "type": 0, "name": f"channel{v[-4:]}"}
                resolved.setdefault("channels", {})[v] = {"id": v, "type": chan["type"], "name": chan["name"],
                                                          "permissions": self.app_permissions}

    async def submit_modal(self, shown: Interaction, values: dict[str, str | list[str]], *,
                           user_id: str | None = None, username: str | None = None,
                           permissions: str = "0") -> Interaction:
        """The user fills in and submits the modal the bot answered ``shown`` with (callback type 9).

        ``values`` maps the modal's custom_ids to what the user entered: a string for a text input, a
        list of option values (ids for user/role/mentionable/channel selects) for a select, a list of
        uploads (as for :meth:`slash` attachments) for a file upload. A text input not in ``values`` is
        sent with its pre-filled ``value`` (else ""), a select with its default options. Sends an
        INTERACTION_CREATE of type 5 as Discord does: ``data`` = ``{"custom_id", "components"[, "resolved"]}``,
        the components mirroring the modal's layout (action row -> ``{"type": 1, "id", "components":
        [{"type": 4, "id", "custom_id", "value"}]}``, label -> ``{"type": 18, "id", "component": {...}}``,
        text display -> ``{"type": 10, "id"}``) with the ids the bot gave, or sequential ones as Discord
        assigns them; plus the clicked ``message`` when the modal was opened from a component on a message.
        The default user is ``shown``'s. Raises ValueError/TypeError for a submission the Discord client
        would not send (required input empty, length outside min/max_length, a select value that is not
        an option or a count outside min/max_values, a custom_id the modal does not have). Returns the
        new interaction as soon as it is sent (``await ia.wait_acked()`` for the bot's answer)."""
        modal = shown.modal
        if modal is None:
            raise ValueError(f"interaction {shown.id} ({shown.name}) was not answered with a modal (callback "
                             f"type 9); its response type is {shown.response_type}")
        label = f"modal {modal.get('custom_id')!r}"
        values = dict(values)
        known = [c["custom_id"] for c in rules.iter_components(modal.get("components"))
                 if isinstance(c.get("custom_id"), str)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{label} has no input(s) {unknown}; its custom_ids are {known}")
        resolved: dict = {}
        components = self._modal_submission(modal.get("components") or [], values, resolved, label)
        uid = shown.user_id if user_id is None else str(user_id)
        uname = username or (shown.username if uid == shown.user_id else self._user(uid)["username"])
        payload = self._base_interaction(IT_MODAL, user_id=uid, username=uname, permissions=permissions,
                                         attachment_size_limit=None, locale=shown.payload.get("locale", "en-US"),
                                         channel_id=self._acting_channel(None, shown.channel_id))
        data: dict = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        msg = self.messages.get(shown.message_id or "") if shown.type == IT_COMPONENT else None
        if msg is not None and not msg.deleted:
            payload["message"] = self._message_json(msg)
        else:
            msg = None
        return await self._send_interaction(payload, name=modal["custom_id"], user_id=uid, username=uname,
                                            message_id=msg.id if msg else None, modal_from=shown.id)

    def _modal_submission(self, components: list[dict], values: dict, resolved: dict, label: str) -> list[dict]:
        """The modal's components as Discord sends them back in a submission (see :meth:`submit_modal`)."""
        used = {c["id"] for c in rules.iter_components(components) if isinstance(c.get("id"), int) and c["id"]}
        counter = 1

        def component_id(comp: dict) -> int:
            # Discord numbers components without an id depth first from 1, skipping ids the bot set
            nonlocal counter
            if isinstance(comp.get("id"), int) and comp["id"]:
                return comp["id"]
            while counter in used:
                counter += 1
            used.add(counter)
            return counter

        def mirror(comp: dict) -> dict:
            ctype, cid = comp.get("type"), component_id(comp)
            out: dict = {"type": ctype, "id": cid}
            if ctype == 1:
                out["components"] = [mirror(c) for c in comp.get("components") or []]
            elif ctype == 18:
                out["component"] = mirror(comp["component"])
            elif ctype == 4:
                out["custom_id"] = comp["custom_id"]
                out["value"] = self._modal_text(comp, values, label)
            elif ctype in rules.SELECT_TYPES:
                out["custom_id"] = comp["custom_id"]
                out["values"] = self._modal_select(comp, values, resolved, label)
            elif ctype == 19:
                out["custom_id"] = comp["custom_id"]
                out["values"] = self._modal_upload(comp, values, resolved, label)
            return out  # text displays (and anything else non-interactive) come back as {"type", "id"}

        return [mirror(c) for c in components]

    @staticmethod
    def _modal_text(comp: dict, values: dict, label: str) -> str:
        cid = comp["custom_id"]
        value = values.get(cid, comp.get("value") or "")
        if not isinstance(value, str):
            raise TypeError(f"{label}: text input {cid!r} takes a string, got {value!r}")
        if value == "":
            if _or(comp.get("required"), True):
                raise ValueError(f"{label}: text input {cid!r} is required; the Discord client would not submit "
                                 f"it empty")
            return value
        lo, hi = comp.get("min_length") or 0, min(comp.get("max_length") or 4000, 4000)
        if not lo <= len(value) <= hi:
            raise ValueError(f"{label}: text input {cid!r} takes {lo}..{hi} characters, got {len(value)}")
        if comp.get("style", 1) == 1 and "\n" in value:
            raise ValueError(f"{label}: text input {cid!r} is a short (one-line) input; it cannot hold a newline")
        return value

    def _modal_select(self, comp: dict, values: dict, resolved: dict, label: str) -> list[str]:
        cid, ctype = comp["custom_id"], comp["type"]
        if cid in values:
            if comp.get("disabled"):
                raise ValueError(f"{label}: select {cid!r} is disabled")
            given = values[cid]
            if isinstance(given, (str, bytes)) or not isinstance(given, (list, tuple)):
                raise TypeError(f"{label}: select {cid!r} takes a list of values, got {given!r}")
            picked = [str(v) for v in given]
        elif ctype == 3:
            picked = [o["value"] for o in comp.get("options") or [] if o.get("default")]
        else:
            picked = [str(d["id"]) for d in comp.get("default_values") or []]
        if len(set(picked)) != len(picked):
            raise ValueError(f"{label}: select {cid!r} got a value twice: {picked}")
        lo, hi = _or(comp.get("min_values"), 1), _or(comp.get("max_values"), 1)
        if picked or _or(comp.get("required"), True):
            if not picked:
                raise ValueError(f"{label}: select {cid!r} is required; the Discord client would not submit it "
                                 f"without a choice")
            if not lo <= len(picked) <= hi:
                raise ValueError(f"{label}: select {cid!r} takes {lo}..{hi} values, got {picked}")
        if ctype == 3:
            allowed = [o.get("value") for o in comp.get("options") or []]
            bad = [v for v in picked if v not in allowed]
            if bad:
                raise ValueError(f"{label}: select {cid!r} has no option(s) {bad}; options: {allowed}")
        else:
            self._resolve_select_values(ctype, picked, resolved)
        return picked

    def _modal_upload(self, comp: dict, values: dict, resolved: dict, label: str) -> list[str]:
        cid = comp["custom_id"]
        given = values.get(cid, [])
        if not isinstance(given, (list, tuple)):
            raise TypeError(f"{label}: file upload {cid!r} takes a list of files, got {given!r}")
        lo, hi = _or(comp.get("min_values"), 1), _or(comp.get("max_values"), 1)
        if given or _or(comp.get("required"), True):
            if not lo <= len(given) <= hi or not given:
                raise ValueError(f"{label}: file upload {cid!r} takes {max(lo, 1)}..{hi} files, got {len(given)}")
        ids = []
        for upload in given:
            att = self._user_upload(upload)
            resolved.setdefault("attachments", {})[att["id"]] = self._attachment_json(att)
            ids.append(att["id"])
        return ids

    # -- messages -------------------------------------------------------------------------------------
    def _store_attachment(self, channel_id: str, filename: str, data: bytes, content_type: str | None,
                          description: str | None) -> dict:
        aid = self.snowflake()
        filename = filename.replace("/", "_").replace("\\", "_") or "unknown"
        ctype = content_type if content_type and content_type != "application/octet-stream" else None
        ctype = mimetypes.guess_type(filename)[0] or ctype
        if ctype and ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        url = f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}"
        att = {"id": aid, "filename": filename, "size": len(data), "url": url, "proxy_url": url,
               "content_type": ctype, "data": data}
        if description is not None:
            att["description"] = description
        dims = _image_size(data)
        if dims:
            att["width"], att["height"] = dims
        self._blobs[(str(channel_id), aid, filename)] = (data, ctype)
        return att

    @staticmethod
    def _attachment_json(att: dict) -> dict:
        out = {k: v for k, v in att.items() if k != "data" and v is not None}
        out["ephemeral"] = bool(att.get("ephemeral", False))
        return out

    def _message_json(self, m: Message, *, with_nonce: bool = False) -> dict:
        """The message object; ``with_nonce`` for create answers (Discord has no nonce on fetched messages)."""
        d: dict = {
            "id": m.id, "channel_id": m.channel_id, "type": m.type, "content": m.content,
            "author": self._user(m.author_id), "attachments": [self._attachment_json(a) for a in m.attachments],
            "embeds": copy.deepcopy(m.embeds), "components": copy.deepcopy(m.components),
            "mentions": [self._user(u) for u in m.mentions], "mention_roles": list(m.mention_roles),
            "mention_everyone": m.mention_everyone, "pinned": False, "tts": m.tts,
            "timestamp": _iso(m.created_at), "edited_timestamp": _iso(m.edited_at), "flags": m.flags,
        }
        if m.reactions:
            counts: dict[str, int] = {}
            for r in m.reactions:
                counts[r] = counts.get(r, 0) + 1
            d["reactions"] = [{"emoji": _emoji_json(e), "count": n, "me": True,
                               "count_details": {"burst": 0, "normal": n}, "me_burst": False, "burst_colors": []}
                              for e, n in counts.items()]
        if m.webhook_id:
            d["webhook_id"] = m.webhook_id
            d["application_id"] = self.app_id
        ia = self.interactions.get(m.interaction_id or "")
        if ia is not None:
            d["interaction_metadata"] = self._interaction_metadata(ia, m.id)
        for key, value in m.extra.items():
            if key != "nonce" or with_nonce:
                d.setdefault(key, copy.deepcopy(value))
        return d

    def _interaction_metadata(self, ia: Interaction, message_id: str | None) -> dict:
        """``interaction_metadata`` of a message created by ``ia``'s response (Discord's shapes per type)."""
        meta = {"id": ia.id, "type": ia.type, "user": self._user(ia.user_id),
                "authorizing_integration_owners": {"0": ia.guild_id or "0"}}
        if ia.type == IT_COMMAND:
            meta["name"] = ia.name
            data = ia.payload.get("data") or {}
            meta["command_type"] = data.get("type", 1)
            if data.get("type") == 3:
                meta["target_message_id"] = data.get("target_id")
        if ia.type == IT_MODAL:
            shown = self.interactions.get(ia.modal_from or "")
            if shown is not None:
                meta["triggering_interaction_metadata"] = self._interaction_metadata(shown, None)
        elif ia.message_id:
            meta["interacted_message_id"] = ia.message_id
        if ia.original_message_id and ia.original_message_id != message_id:
            meta["original_response_message_id"] = ia.original_message_id
        return meta

    def _check_sizes(self, files: list[_File], limit: int, where: str) -> None:
        for f in files:
            if len(f.data) > limit:
                raise _Reject(413, 40005, "Request entity too large",
                              violation=f"[40005 too-large] {where}: {f.filename} is {len(f.data)} bytes, "
                                        f"limit {limit}")

    def _resolve_attachments(self, channel_id: str, payload: dict, files: list[_File],
                             existing: list[dict] | None, where: str) -> list[dict] | None:
        """The attachment list after this request (None: unchanged). New files get stored."""
        by_index = {}
        for pos, f in enumerate(files):
            by_index[f.index if f.index is not None else pos] = f
        entries = payload.get("attachments")
        if entries is None:
            if not files:
                return None
            kept = list(existing or [])
            return kept + [self._store_attachment(channel_id, f.filename, f.data, f.content_type, None) for f in files]
        old = {a["id"]: a for a in existing or []}
        result, used = [], set()
        errs = rules.FormErrors()
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            eid = str(entry.get("id")) if isinstance(entry, dict) else None
            if eid in old:
                att = dict(old[eid])
                if entry.get("description") is not None:
                    att["description"] = entry["description"]
                result.append(att)
            elif eid is not None and eid.isdigit() and int(eid) in by_index:
                f = by_index[int(eid)]
                used.add(int(eid))
                filename = entry.get("filename") or f.filename
                result.append(self._store_attachment(channel_id, filename, f.data, f.content_type,
                                                     entry.get("description")))
            else:
                errs.add(("attachments", i, "id"), "ATTACHMENT_NOT_FOUND", f"Unknown attachment {eid!r}")
        for idx, f in by_index.items():
            if idx not in used:
                result.append(self._store_attachment(channel_id, f.filename, f.data, f.content_type, None))
        if errs:
            raise _form_error(errs, where)
        if len(result) > rules.MAX_ATTACHMENTS:
            errs.add(("attachments",), "BASE_TYPE_MAX_LENGTH", f"Must be {rules.MAX_ATTACHMENTS} or fewer in length.")
            raise _form_error(errs, where)
        return result

    def _validate(self, payload: dict, files: list[_File], where: str) -> None:
        errs = rules.FormErrors()
        rules.validate_message(payload, errs, n_files=len(files))
        if errs:
            raise _form_error(errs, where)

    def _set_mentions(self, m: Message) -> None:
        m.mentions, m.mention_roles, m.mention_everyone = rules.compute_mentions(m.content, m.allowed_mentions)

    def _new_message(self, *, channel_id: str, payload: dict, files: list[_File], kind: str, flags_mask: int,
                     interaction: Interaction | None = None, forced_flags: int = 0, where: str) -> Message:
        """Validates a create payload, stores the message (not yet visible) and returns it."""
        self._validate(payload, files, where)
        flags = (payload.get("flags") or 0) & flags_mask | forced_flags
        atts = self._resolve_attachments(channel_id, payload, files, None, where) or []
        content = payload.get("content") or ""
        has_body = content or payload.get("embeds") or payload.get("components") or atts or payload.get("poll") \
            or payload.get("sticker_ids")
        if not has_body and not flags & rules.FLAG_LOADING:
            raise _Reject(400, 50006, "Cannot send an empty message",
                          violation=f"[50006 empty-message] {where}: no content, embeds, components or files")
        m = Message(id=self.snowflake(), channel_id=channel_id, author_id=self.app_id, content=content,
                    embeds=copy.deepcopy(payload.get("embeds") or []),
                    components=copy.deepcopy(payload.get("components") or []), attachments=atts, flags=flags,
                    tts=bool(payload.get("tts")), allowed_mentions=copy.deepcopy(payload.get("allowed_mentions")))
        m.created_at = snowflake_time(m.id)
        for key in ("poll", "message_reference", "sticker_ids", "nonce"):
            if payload.get(key) is not None:
                m.extra[key] = copy.deepcopy(payload[key])
        if interaction is not None:
            m.interaction_id = interaction.id
            m.webhook_id = self.app_id
            m.type = 20 if interaction.type == IT_COMMAND else 0
        self._set_mentions(m)
        m.history.append(_history(kind, payload, files))
        return m

    def _publish(self, m: Message) -> None:
        self.messages[m.id] = m
        if m.channel_id in self.channels and not m.ephemeral:
            self.channels[m.channel_id]["last_message_id"] = m.id
        self._notify()

    def _apply_edit(self, m: Message, payload: dict, files: list[_File], *, kind: str, where: str,
                    count_edit: bool = True) -> None:
        self._validate(payload, files, where)
        atts = self._resolve_attachments(m.channel_id, payload, files, m.attachments, where)
        new_content = (payload["content"] if "content" in payload else m.content) or ""
        new_embeds = payload.get("embeds") if "embeds" in payload else m.embeds
        new_components = payload.get("components") if "components" in payload else m.components
        new_atts = m.attachments if atts is None else atts
        flags = m.flags & ~rules.FLAG_LOADING
        if payload.get("flags") is not None:
            flags = (flags & ~_EDITABLE_FLAGS) | (payload["flags"] & _EDITABLE_FLAGS)
        errs = rules.FormErrors()
        if flags & rules.FLAG_COMPONENTS_V2:
            rules.validate_message({"content": new_content, "embeds": new_embeds, "flags": flags}, errs)
        if errs:
            raise _form_error(errs, where)
        if not (new_content or new_embeds or new_components or new_atts or m.extra.get("poll")):
            raise _Reject(400, 50006, "Cannot send an empty message",
                          violation=f"[50006 empty-message] {where}: the edit leaves the message empty")
        m.content = new_content
        m.embeds = copy.deepcopy(new_embeds or [])
        m.components = copy.deepcopy(new_components or [])
        m.attachments = new_atts
        m.flags = flags
        if "allowed_mentions" in payload:
            m.allowed_mentions = copy.deepcopy(payload["allowed_mentions"])
        self._set_mentions(m)
        if count_edit:
            m.edits += 1
            m.edited_at = dt.datetime.now(_UTC)
        m.history.append(_history(kind, payload, files))
        self._notify()

    def _check_edit_rate(self, m: Message, where: str) -> None:
        limit, per = self.edit_limit
        now = time.monotonic()
        times = self._edit_times.setdefault(m.id, deque())
        while times and now - times[0] >= per:
            times.popleft()
        if len(times) >= limit:
            retry_after = max(0.001, times[0] + per - now)
            retry_after = math.ceil(retry_after * 1000) / 1000 + 0.005
            headers = self._ratelimit_headers(m.id, remaining=0, reset_after=retry_after)
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
            headers["X-RateLimit-Scope"] = "user"
            raise _Reject(429, 0, "You are being rate limited.", headers=headers,
                          body={"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                          violation=f"[429 edit-rate] {where}: more than {limit} edits of message {m.id} within "
                                    f"{per}s (retry_after {retry_after:.3f}s)")

    def _record_edit(self, m: Message) -> dict:
        limit, per = self.edit_limit
        now = time.monotonic()
        times = self._edit_times.setdefault(m.id, deque())
        times.append(now)
        if not self.edit_ratelimit_headers:
            return {}
        return self._ratelimit_headers(m.id, remaining=max(0, limit - len(times)),
                                       reset_after=max(0.001, times[0] + per - now))

    def _ratelimit_headers(self, message_id: str, *, remaining: int, reset_after: float) -> dict:
        return {"X-RateLimit-Limit": str(self.edit_limit[0]), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": "fake-edit-" + message_id[-6:]}

    # -- HTTP plumbing ---------------------------------------------------------------------------------
    @staticmethod
    def _json(status: int, body: Any, headers: dict | None = None) -> web.Response:
        h = {"Content-Type": "application/json", "Via": "1.1 google"}
        h.update(headers or {})
        return web.Response(status=status, body=_dumps(body).encode(), headers=h)

    @staticmethod
    def _no_content(headers: dict | None = None) -> web.Response:
        return web.Response(status=204, headers={"Via": "1.1 google", **(headers or {})})

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:  # noqa: BLE001
                self.unhandled.append(f"{request.method} {path}: " + traceback.format_exc())
                return self._json(400, {"message": f"fake discord: unhandled {type(exc).__name__}: {exc}", "code": 0})
        rel = path[len(API_PREFIX):]
        record: dict = {"method": request.method, "path": rel, "query": dict(request.query), "json": None,
                        "files": [], "status": None, "time": time.monotonic(),
                        "authorized": request.headers.get("Authorization", "").startswith("Bot ")}
        self.requests.append(record)
        try:
            payload, files = await self._read_body(request)
            record["json"], record["files"] = payload, [f.info() for f in files]
            request[_PAYLOAD], request[_FILES], request[_RECORD] = payload, files, record
            if not (rel.startswith(("/interactions/", "/webhooks/")) or rel == "/gateway" or record["authorized"]):
                raise _Reject(401, 0, "401: Unauthorized",
                              violation=f"[401 unauthorized] {request.method} {rel} without 'Authorization: Bot ...'")
            response = await handler(request)
        except _Reject as rej:
            if rej.violation:
                self.violations.append(rej.violation)
                _log.info("violation: %s", rej.violation)
            body = rej.body or {"message": rej.message, "code": rej.code}
            if rej.errors:
                body["errors"] = rej.errors
            response = self._json(rej.status, body, rej.headers)
        except ConnectionResetError:  # the client went away mid-request (a killed bot process): nobody to answer
            record["status"] = "client gone"
            self._notify()
            raise
        except Exception as exc:  # noqa: BLE001 - never 5xx: discord.py would retry for ~25 s
            self.unhandled.append(f"{request.method} {rel}: " + traceback.format_exc())
            response = self._json(400, {"message": f"fake discord: unhandled {type(exc).__name__}: {exc}", "code": 0})
        record["status"] = response.status
        self._notify()
        return response

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_File]]:
        if not request.body_exists:
            return None, []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            payload: Any = None
            form: dict = {}
            files: list[_File] = []
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""
                data = bytes(await part.read(decode=False))
                if name == "payload_json":
                    payload = self._parse_json(data)
                elif part.filename is not None or name.startswith("files[") or name == "file":
                    index = None
                    if name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
                        index = int(name[6:-1])
                    files.append(_File(name, index, part.filename or name, data,
                                       part.headers.get("Content-Type")))
                else:
                    form[name] = data.decode("utf-8", "replace")
            if payload is None:
                payload = form or {}
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        return self._parse_json(raw), []

    @staticmethod
    def _parse_json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise _Reject(400, 50109, "The request body contains invalid JSON.",
                          violation=f"[50109 invalid-json] body is not JSON: {raw[:80]!r}") from None

    async def _no_route(self, request: web.Request) -> web.StreamResponse:
        self.unhandled.append(f"no route in the fake for {request.method} {request.path}")
        return self._json(404, {"message": "404: Not Found", "code": 0})

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["channel"], request.match_info["aid"], request.match_info["filename"])
        blob = self._blobs.get(key)
        if blob is None:
            return web.Response(status=404, text="Not Found")
        data, ctype = blob
        return web.Response(body=data, headers={"Content-Type": ctype or "application/octet-stream"})

    # -- REST: login, gateway, commands -----------------------------------------------------------------
    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return self._json(200, {"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        """The gateway URL, the recommended shard count, and how many more IDENTIFYs today (Discord's
        ``session_start_limit``: the day starts when the fake does)."""
        day_ms = 24 * 3600 * 1000
        reset_after = max(0, day_ms - int((time.monotonic() - self._started) * 1000))
        return self._json(200, {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": {
            "total": self.session_start_total, "remaining": max(0, self.session_start_total - self.identified),
            "reset_after": reset_after, "max_concurrency": self.max_concurrency}})

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return self._json(200, dict(self.bot_user, verified=True, mfa_enabled=False, flags=0, email=None))

    async def _get_user(self, request: web.Request) -> web.StreamResponse:
        uid = request.match_info["user_id"]
        if uid != self.app_id and uid not in self.users:
            raise _Reject(404, 10013, "Unknown User")
        return self._json(200, self._user(uid))

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        return self._json(200, {
            "id": self.app_id, "name": self.bot_user["username"], "description": "", "icon": None,
            "bot_public": True, "bot_require_code_grant": False, "verify_key": "00" * 32, "flags": 0,
            "owner": {"id": "1002", "username": "owner", "discriminator": "0", "avatar": None, "global_name": None},
            "team": None, "summary": "", "tags": [], "bot": dict(self.bot_user),
            "redirect_uris": [], "interactions_endpoint_url": None, "integration_types_config": {"0": {}},
        })

    async def _app_commands(self, request: web.Request) -> web.StreamResponse:
        app = request.match_info["app"]
        gid = request.match_info.get("gid")
        if app != self.app_id:
            raise _Reject(404, 10002, "Unknown Application", violation=f"[10002 unknown-application] {app}")
        if gid is not None and gid not in self.guilds:
            raise _Reject(403, 50001, "Missing Access", violation=f"[50001 missing-access] guild {gid}")
        current = self.guild_commands.get(gid, []) if gid else self.global_commands
        if request.method == "GET":
            return self._json(200, current)
        if request.method != "PUT":
            return await self._no_route(request)
        body = request[_PAYLOAD]
        errs = rules.FormErrors()
        rules.validate_commands(body, errs)
        if errs:
            raise _form_error(errs, f"PUT commands ({'guild ' + gid if gid else 'global'})")
        stored = []
        for cmd in body:
            cmd = copy.deepcopy(cmd)
            key = (gid or "", int(cmd.get("type", 1)), cmd["name"])
            cid = self._command_ids.setdefault(key, self.snowflake())
            cmd.update(id=cid, application_id=self.app_id, version=self.snowflake())
            cmd.setdefault("type", 1)
            cmd.setdefault("default_member_permissions", None)
            cmd.setdefault("nsfw", False)
            cmd.setdefault("description", "")
            if gid:
                cmd["guild_id"] = gid
            stored.append(cmd)
        if gid:
            self.guild_commands[gid] = stored
        else:
            self.global_commands = stored
        self.commands = stored
        return self._json(200, stored)

    # -- REST: interaction callback -----------------------------------------------------------------------
    async def _callback(self, request: web.Request) -> web.StreamResponse:
        iid, token = request.match_info["iid"], request.match_info["token"]
        body, files = request[_PAYLOAD], request[_FILES]
        now = time.monotonic()
        ia = self.interactions.get(iid)
        ctype = body.get("type") if isinstance(body, dict) else None
        if ia is None or ia.token != token:
            raise _Reject(404, 10062, "Unknown interaction",
                          violation=f"[10062 unknown-interaction] callback for unknown interaction {iid}")
        attempt = {"time": now, "type": ctype, "status": None, "code": None}
        ia.callbacks.append(attempt)
        try:
            response = self._callback_inner(ia, body, files, now)
        except _Reject as rej:
            attempt["status"], attempt["code"] = rej.status, rej.code
            raise
        attempt["status"] = 200
        return response

    def _callback_inner(self, ia: Interaction, body: Any, files: list[_File], now: float) -> web.Response:
        label = f"interaction {ia.id} ({ia.name})"
        if ia.acked_at is not None:
            raise _Reject(400, 40060, "Interaction has already been acknowledged.",
                          violation=f"[40060 double-ack] {label}: second callback (type "
                                    f"{body.get('type') if isinstance(body, dict) else None}); first was type "
                                    f"{ia.response_type} {ia.acked_at - ia.created_monotonic:.3f}s after creation")
        age = now - ia.created_monotonic
        if age > self.ack_deadline:
            raise _Reject(404, 10062, "Unknown interaction",
                          violation=f"[10062 late-ack] {label}: callback {age:.3f}s after creation, "
                                    f"deadline {self.ack_deadline}s")
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            errs = rules.FormErrors()
            errs.add(("type",), "BASE_TYPE_REQUIRED", "This field is required")
            raise _form_error(errs, f"callback for {label}")
        ctype = body["type"]
        data = body.get("data")
        if ctype not in rules.ALLOWED_CALLBACKS.get(ia.type, set()):
            errs = rules.FormErrors()
            errs.add(("type",), "INTERACTION_RESPONSE_TYPE_INVALID",
                     f"Interaction callback type {ctype} is not valid for interaction type {ia.type}")
            raise _form_error(errs, f"callback for {label}")
        where = f"callback type {ctype} for {label}"
        try:
            message, new_message = self._callback_message(ia, ctype, data, files, where)
        except _Reject as rej:
            if rej.errors is not None and ctype in (CB_MESSAGE, CB_UPDATE):
                rej.errors = {"data": rej.errors}  # the message lives in the callback's "data"
            raise
        # accepted: acknowledge
        ia.acked_at = now
        ia.response_type = ctype
        if message is not None:
            ia.original_message_id = message.id
        if new_message:
            self._publish(message)
        ia._acked.set()
        self._notify()
        reply_interaction = {"id": ia.id, "type": ia.type,
                             "response_message_loading": ctype == CB_DEFER_MESSAGE,
                             "response_message_ephemeral": bool(message and message.ephemeral)}
        if message is not None:
            reply_interaction["response_message_id"] = message.id
        resource: dict = {"type": ctype}
        if message is not None and ctype in (CB_MESSAGE, CB_DEFER_MESSAGE, CB_UPDATE):
            resource["message"] = self._message_json(message)
        return self._json(200, {"interaction": reply_interaction, "resource": resource})

    def _callback_message(self, ia: Interaction, ctype: int, data: Any, files: list[_File],
                          where: str) -> tuple[Message | None, bool]:
        """Validates and applies a callback; returns (the response message, whether it is new)."""
        message: Message | None = None
        new_message = False
        if ctype == CB_MESSAGE:
            self._check_sizes(files, ia.attachment_size_limit, where)
            message = self._new_message(channel_id=ia.channel_id, payload=data or {}, files=files, kind="response",
                                        flags_mask=_MESSAGE_CREATE_FLAGS | rules.FLAG_EPHEMERAL, interaction=ia,
                                        where=where)
            new_message = True
        elif ctype == CB_DEFER_MESSAGE:
            flags = ((data or {}).get("flags") or 0) & rules.FLAG_EPHEMERAL
            message = self._new_message(channel_id=ia.channel_id, payload={}, files=[], kind="defer",
                                        flags_mask=0, forced_flags=flags | rules.FLAG_LOADING, interaction=ia,
                                        where=where)
            message.history[-1]["payload"] = copy.deepcopy({"type": ctype, "data": data} if data else {"type": ctype})
            new_message = True
        elif ctype in (CB_DEFER_UPDATE, CB_UPDATE):
            message = self.messages.get(ia.message_id or "")
            if message is None or message.deleted:
                raise _Reject(404, 10008, "Unknown Message",
                              violation=f"[10008 unknown-message] {where}: the component's message is gone")
            if ctype == CB_UPDATE:
                self._check_sizes(files, ia.attachment_size_limit, where)
                self._apply_edit(message, data or {}, files, kind="update", where=where)
        elif ctype == CB_AUTOCOMPLETE:
            errs = rules.FormErrors()
            rules.validate_choices(data, errs)
            if errs:
                raise _form_error(errs, where)
            ia.choices = copy.deepcopy(data.get("choices") or [])
        elif ctype == CB_MODAL:
            errs = rules.FormErrors()
            rules.validate_modal(data, errs)
            if errs:
                raise _form_error(errs, where)
            ia.modal = copy.deepcopy(data)
        return message, new_message

    # -- REST: webhooks (followups, @original) ---------------------------------------------------------------
    def _webhook_interaction(self, app: str, token: str, what: str, *, needs_original: bool) -> Interaction:
        if app != self.app_id:
            raise _Reject(404, 10015, "Unknown Webhook", violation=f"[10015 unknown-webhook] {what}: webhook id {app}")
        ia = next((i for i in self.interactions.values() if i.token == token), None)
        if ia is None:
            raise _Reject(404, 10015, "Unknown Webhook",
                          violation=f"[10015 unknown-webhook] {what}: unknown interaction token")
        label = f"{what} for interaction {ia.id} ({ia.name})"
        age = time.monotonic() - ia.created_monotonic
        if age > self.token_lifetime:
            raise _Reject(401, 50027, "Invalid Webhook Token",
                          violation=f"[50027 token-expired] {label}: token is {age:.3f}s old, lifetime "
                                    f"{self.token_lifetime}s")
        if ia.acked_at is None:
            if needs_original:
                raise _Reject(404, 10008, "Unknown Message",
                              violation=f"[10008 not-acked] {label}: the interaction has no response yet")
            raise _Reject(404, 10015, "Unknown Webhook",
                          violation=f"[10015 not-acked] {label}: followup before the interaction was acknowledged")
        return ia

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        app, token = request.match_info["app"], request.match_info["token"]
        where = "followup"
        ia = self._webhook_interaction(app, token, where, needs_original=False)
        where = f"followup for interaction {ia.id} ({ia.name})"
        payload = request[_PAYLOAD] if isinstance(request[_PAYLOAD], dict) else {}
        files = request[_FILES]
        self._check_sizes(files, ia.attachment_size_limit, where)
        original = self.messages.get(ia.original_message_id or "")
        if ia.response_type == CB_DEFER_MESSAGE and original is not None and original.loading and not original.deleted:
            # Discord: the first followup after a "thinking" defer fills the deferred message (same id,
            # ephemeral as chosen at defer time).
            fill = dict(payload)
            fill.pop("flags", None)
            self._apply_edit(original, fill, files, kind="followup", where=where, count_edit=False)
            message = original
        else:
            message = self._new_message(channel_id=ia.channel_id, payload=payload, files=files, kind="followup",
                                        flags_mask=_MESSAGE_CREATE_FLAGS | rules.FLAG_EPHEMERAL, interaction=ia,
                                        where=where)
            self._publish(message)
        ia.followups.append(message.id)
        self._notify()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return self._json(200, self._message_json(message))
        return self._no_content()

    async def _webhook_message(self, request: web.Request) -> web.StreamResponse:
        app, token, mid = request.match_info["app"], request.match_info["token"], request.match_info["mid"]
        method = request.method
        if method not in ("GET", "PATCH", "DELETE"):
            return await self._no_route(request)
        what = f"{method} webhook message {mid}"
        ia = self._webhook_interaction(app, token, what, needs_original=True)
        where = f"{what} of interaction {ia.id} ({ia.name})"
        if mid == "@original":
            m = self.messages.get(ia.original_message_id or "")
        else:
            m = self.messages.get(mid)
            if m is not None and m.id not in ia.followups and m.id != ia.original_message_id:
                m = None
        if m is None or m.deleted:
            raise _Reject(404, 10008, "Unknown Message", violation=f"[10008 unknown-message] {where}")
        return await self._message_op(request, m, where, ia.attachment_size_limit)

    async def _message_op(self, request: web.Request, m: Message, where: str, size_limit: int) -> web.StreamResponse:
        if request.method == "GET":
            return self._json(200, self._message_json(m))
        if request.method == "DELETE":
            m.deleted = True
            m.history.append({"kind": "delete", "time": time.monotonic(), "payload": None, "files": []})
            self._notify()
            return self._no_content()
        payload = request[_PAYLOAD] if isinstance(request[_PAYLOAD], dict) else {}
        files = request[_FILES]
        self._check_sizes(files, size_limit, where)
        self._check_edit_rate(m, where)
        self._apply_edit(m, payload, files, kind="edit", where=where)
        headers = self._record_edit(m)
        return self._json(200, self._message_json(m), headers)

    # -- REST: channels -------------------------------------------------------------------------------------
    def _channel(self, cid: str) -> dict:
        chan = self.channels.get(cid)
        if chan is None:
            raise _Reject(404, 10003, "Unknown Channel", violation=f"[10003 unknown-channel] channel {cid}")
        return chan

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        return self._json(200, self._channel(request.match_info["cid"]))

    async def _get_guild(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["gid"] not in self.guilds:
            raise _Reject(404, 10004, "Unknown Guild")
        g = self._guild_payload(request.match_info["gid"])
        for key in ("members", "channels", "threads", "presences", "voice_states", "joined_at", "large",
                    "member_count", "stage_instances", "guild_scheduled_events", "soundboard_sounds"):
            g.pop(key, None)
        return self._json(200, g)

    async def _get_guild_channels(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["gid"] not in self.guilds:
            raise _Reject(404, 10004, "Unknown Guild")
        return self._json(200, self._guild_payload(request.match_info["gid"])["channels"])

    async def _channel_messages(self, request: web.Request) -> web.StreamResponse:
        cid = request.match_info["cid"]
        self._channel(cid)
        if request.method == "GET":
            limit = int(request.query.get("limit", "50"))
            msgs = [m for m in self.messages.values() if m.channel_id == cid and not m.deleted and not m.ephemeral]
            before, after = request.query.get("before"), request.query.get("after")
            if before:
                msgs = [m for m in msgs if int(m.id) < int(before)]
            if after:
                msgs = [m for m in msgs if int(m.id) > int(after)]
            msgs.sort(key=lambda m: int(m.id), reverse=not after)
            return self._json(200, [self._message_json(m) for m in msgs[:limit]])
        if request.method != "POST":
            return await self._no_route(request)
        where = f"POST /channels/{cid}/messages"
        payload = request[_PAYLOAD] if isinstance(request[_PAYLOAD], dict) else {}
        files = request[_FILES]
        self._check_sizes(files, self.attachment_size_limit, where)
        errs = rules.FormErrors()
        rules.validate_nonce(payload, errs)
        if errs:
            raise _form_error(errs, where)
        self._validate(payload, files, where)
        nonce = payload.get("nonce")
        key = (cid, self.app_id, str(nonce))
        if nonce is not None and payload.get("enforce_nonce") is True:
            seen = self._nonces.get(key)
            if seen is not None and time.monotonic() - seen[1] <= self.nonce_window:
                existing = self.messages.get(seen[0])
                request[_RECORD]["nonce_duplicate_of"] = seen[0]
                if existing is None or existing.deleted:
                    raise _Reject(404, 10008, "Unknown Message")
                return self._json(200, self._message_json(existing, with_nonce=True))
        m = self._new_message(channel_id=cid, payload=payload, files=files, kind="create",
                              flags_mask=_MESSAGE_CREATE_FLAGS, where=where)
        if nonce is not None:
            self._nonces[key] = (m.id, time.monotonic())
        body = self._message_json(m, with_nonce=True)  # the answer as of creation, even if held
        self._publish(m)
        if self._hold_remaining > 0:
            self._hold_remaining -= 1
            await self._hold(request, m)
        return self._json(200, body)

    # -- crashing a bot mid-send ------------------------------------------------------------------------
    def hold_channel_posts(self, count: int = 1) -> None:
        """Holds the HTTP answer of the next ``count`` POST /channels/{id}/messages that create a message
        (rejected and nonce-deduplicated posts are answered at once and do not count). The message is
        created, stored and visible at once; the answer waits for :meth:`release_channel_posts`, the
        client's disconnect, :attr:`max_hold` seconds or :meth:`stop`."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._hold_remaining = int(count)
        self._held_taken = len(self.held_posts)  # wait_for_held_post: posts held from now on

    def release_channel_posts(self) -> int:
        """Answers every held channel post now and holds no further ones; returns how many were held."""
        self._hold_remaining = 0
        held = [h for h in self.held_posts if h.outcome is None]
        for h in held:
            h._end("released")
        self._notify()
        return len(held)

    async def wait_for_held_post(self, timeout: float = 5.0) -> Message:
        """The message of the next post held since the last :meth:`hold_channel_posts` (each returned once,
        in order), waiting up to ``timeout`` seconds for it to arrive."""
        def check() -> Message | None:
            if self._held_taken < len(self.held_posts):
                self._held_taken += 1
                return self.held_posts[self._held_taken - 1].message
            return None

        return await self._wait_until(check, timeout, lambda: (
            f"no channel post was held within {timeout}s (holds pending: {self._hold_remaining}, "
            f"held so far: {len(self.held_posts)})"))

    async def _hold(self, request: web.Request, m: Message) -> None:
        record = request[_RECORD]
        held = HeldPost(message=m, request=record, held_at=time.monotonic())
        self.held_posts.append(held)
        record["held"] = "held"
        self._notify()
        deadline = held.held_at + self.max_hold
        while held.outcome is None:
            if self._stopping:
                held._end("stopped")
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                held._end("disconnected")
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                held._end("timeout")
                break
            try:
                await asyncio.wait_for(held._release.wait(), min(remaining, max(self.poll_interval, 0.01)))
            except asyncio.TimeoutError:
                pass
        record["held"] = held.outcome
        _log.info("held channel post %s answered: %s after %.3fs", m.id, held.outcome,
                  (held.ended_at or time.monotonic()) - held.held_at)
        self._notify()

    async def _channel_message(self, request: web.Request) -> web.StreamResponse:
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        if request.method not in ("GET", "PATCH", "DELETE"):
            return await self._no_route(request)
        self._channel(cid)
        m = self.messages.get(mid)
        where = f"{request.method} /channels/{cid}/messages/{mid}"
        if m is None or m.deleted or m.channel_id != cid or m.ephemeral:
            raise _Reject(404, 10008, "Unknown Message", violation=f"[10008 unknown-message] {where}"
                          + (" (ephemeral messages are only reachable through the interaction webhook)"
                             if m is not None and m.ephemeral else ""))
        return await self._message_op(request, m, where, self.attachment_size_limit)

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        self._channel(request.match_info["cid"])
        return self._no_content()

    async def _reaction(self, request: web.Request) -> web.StreamResponse:
        cid, mid, emoji = request.match_info["cid"], request.match_info["mid"], request.match_info["emoji"]
        self._channel(cid)
        m = self.messages.get(mid)
        if m is None or m.deleted or m.ephemeral:
            raise _Reject(404, 10008, "Unknown Message")
        if request.method == "PUT":
            if emoji not in m.reactions:
                m.reactions.append(emoji)
        elif request.method == "DELETE":
            if emoji in m.reactions:
                m.reactions.remove(emoji)
        else:
            return await self._no_route(request)
        self._notify()
        return self._no_content()


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _or(value: Any, default: Any) -> Any:
    """``value`` unless it is missing/null (discord.py sends ``null`` for unset optional fields)."""
    return default if value is None else value


def _is_role_value(value: Any, guild_id: str) -> bool:
    """For mentionable options: a dict with ``"role": True`` or the @everyone role id means a role."""
    if isinstance(value, dict):
        return bool(value.get("role"))
    return str(value) == guild_id


def _history(kind: str, payload: Any, files: list[_File]) -> dict:
    return {"kind": kind, "time": time.monotonic(), "payload": copy.deepcopy(payload),
            "files": [{"filename": f.filename, "size": len(f.data)} for f in files]}


def _emoji_json(emoji: str) -> dict:
    if ":" in emoji:
        name, _, eid = emoji.partition(":")
        return {"id": eid, "name": name}
    return {"id": None, "name": emoji}


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    return None
