"""Webhooks: when a generation an API key started finishes or fails, the bot POSTs it to the key's URL.

The request is `POST <url>` with `Content-Type: application/json` and this body:

    {"event": "generation.done" | "generation.failed", "id": 12, "state": "done" | "failed" | "cancelled",
     "files": ["https://bot.example.org/api/v1/generations/12/files/0", ...], "error": null | "a sentence"}

(`files` are fetched with the same API key; `error` is set when it failed). Each request is signed:

    X-Webhook-Timestamp: 1767225600                  (unix seconds when this attempt was sent)
    X-Webhook-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the webhook's secret>
    X-Webhook-Id: 345                                (the delivery: the same on every retry of it)

A receiver recomputes the HMAC over the timestamp header, a ".", and the body bytes exactly as received,
compares it in constant time, and refuses timestamps more than 5 minutes from its clock (a replay);
`verify` below does exactly that, with the standard library only, for receivers to copy. Any 2xx
answer means delivered (the body is ignored); anything else, a timeout (10 s) or a refused connection
is retried after 5 s, 30 s, 2 min, 10 min and 1 h, and given up after the 6th attempt. Redirects are
not followed (a 3xx is a failure). Deliveries wait in the store (webhook_deliveries), so retries
survive a restart; each due one is claimed by one sender for a minute (store/api.py CLAIM_LEASE), so
bot processes sharing a PostgreSQL database do not both send it, and one cut short (its process died)
is sent again after that minute. Only http and https URLs are taken, and unless `allow_private` is set,
only ones that lead to public internet addresses (no loopback, private, link-local or reserved ones, in any
spelling): checked when the URL is set (`check_destination` looks the host up as the HTTP client will),
and again at every connection, so that a name cannot be pointed at the bot's own network later. An
IPv4 address in a short or old form (127.1, 2130706433) is refused either way: the client cannot send there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

log = structlog.get_logger(__name__)

EVENTS = {"done": "generation.done", "failed": "generation.failed", "cancelled": "generation.failed"}
BACKOFF = (5.0, 30.0, 120.0, 600.0, 3600.0)  # seconds before the 2nd, 3rd, ... attempt
TIMEOUT = 10.0  # seconds for one attempt, connecting included
READ_LIMIT = 4096  # bytes of an answer read (and ignored)
URL_MAX = 2000
TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its own clock
KEEP_FINISHED = 7 * 86400.0  # seconds finished deliveries are kept, to show a key its recent ones
USER_AGENT = "comfyui-discord-bot-webhooks/1"
RESOLVE_TIMEOUT = 5.0  # seconds to look a webhook's host up when it is set
PUBLIC_ONLY = "webhooks go only to public internet addresses"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Webhook-Signature value for a body sent at `timestamp` (unix seconds, as sent in the header)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = TOLERANCE) -> bool:
    """Whether a webhook request is genuine and recent: `timestamp` and `signature` are the
    X-Webhook-Timestamp and X-Webhook-Signature headers, `body` the raw body bytes, `now` the receiver's
    unix time. Needs only `import hashlib, hmac`."""
    if not isinstance(timestamp, str) or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    expected = ("v1=" + mac.hexdigest()).encode("ascii")
    given = [part.strip().encode("utf-8", "replace") for part in str(signature).split(",")]
    return any(hmac.compare_digest(expected, part) for part in given)


def new_secret() -> str:
    """A fresh webhook signing secret."""
    return "whsec_" + secrets.token_urlsafe(32)


def check_url(url: Any) -> str:
    """The URL, if a webhook may be sent to it: http or https, with a host, no user or password, at most
    2000 characters, an IP address written as one (not 127.1). ValueError with a sentence otherwise. (Where
    it leads is checked by `check_destination` when it is set, and again at every connection.)"""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be an http or https URL")
    url = url.strip()
    if len(url) > URL_MAX:
        raise ValueError(f"url must be at most {URL_MAX} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not contain a user name or password")
    if port == 0:
        raise ValueError("url has no valid port")
    if _short_form(parts.hostname):
        raise ValueError(f"url's host {parts.hostname} is an IP address in a short or old form that cannot be sent "
                         "to; write it as four numbers, like 203.0.113.7")
    return url


async def check_destination(url: Any, *, allow_private: bool, timeout: float = RESOLVE_TIMEOUT) -> str:
    """`check_url`, then where the URL leads, when setting a webhook: unless `allow_private`, its host is
    looked up as the HTTP client will (in a thread, for at most `timeout` seconds) and every address it
    gives must be on the public internet. ValueError with a sentence otherwise."""
    url = check_url(url)
    if allow_private:
        return url
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise ValueError(f"url's host {host} is this machine; {PUBLIC_ONLY}")
    if _is_ip(name):
        if (kind := _private_kind(name)) is not None:
            raise ValueError(f"url's host {host} is {kind} address; {PUBLIC_ONLY}")
        return url
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except TimeoutError:
        raise ValueError(f"url's host {host} could not be looked up within {timeout:g} s; try again") from None
    except OSError:
        raise ValueError(f"url's host {host} could not be found") from None
    for *_, address in found:
        if (kind := _private_kind(str(address[0]))) is not None:
            raise ValueError(f"url's host {host} leads to {address[0]}, {kind} address; {PUBLIC_ONLY}")
    return url


def event_payload(job_id: int, state: str, files: list[str], error: str | None) -> tuple[str, dict[str, Any]]:
    """The event and the body of a finished generation's webhook: `files` are the file URLs."""
    event = EVENTS.get(state)
    if event is None:
        raise ValueError(f"{state!r} is not a finished state (one of {', '.join(EVENTS)})")
    return event, {"event": event, "id": job_id, "state": state, "files": list(files) if state == "done" else [],
                   "error": None if state == "done" else error}


class PrivateAddress(OSError):
    """The webhook's host is (or resolves only to) an address that is not on the public internet."""


def public_address(host: str) -> bool:
    """Whether an IP address is one on the public internet."""
    return _private_kind(host) is None


def _private_kind(host: str) -> str | None:
    """None for an IP address on the public internet, else what it is ("a loopback", "a private", ...)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "not an IP"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, found in (("a loopback", address.is_loopback), ("an unspecified", address.is_unspecified),
                        ("a link-local", address.is_link_local), ("a multicast", address.is_multicast),
                        ("a private", address.is_private), ("a reserved", not address.is_global)):
        if found:
            return kind
    return None


def _short_form(host: str | None) -> bool:
    """Whether a host is an IPv4 address in a form other than four decimal numbers (127.1, 2130706433,
    0177.0.0.1, 127.0.0.1.): the address lookup would take it, but the HTTP client refuses to send there."""
    if not host or not host.replace(".", "").isdigit():
        return False
    numbers = host.split(".")
    return len(numbers) != 4 or not all(part.isascii() and 1 <= len(part) <= 3 and int(part) <= 255
                                        and (part == "0" or not part.startswith("0")) for part in numbers)


class _PublicResolver(AbstractResolver):
    """Resolves names as aiohttp does, keeping only public addresses: a name that leads only to the
    bot's own machine or network fails with PrivateAddress."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [item for item in found if public_address(item["host"])]
        if not public:
            raise PrivateAddress(f"{host} leads to a private address")
        return public

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    """Sends the store's due webhook deliveries; `deliver_due()` once, or `run()` to keep doing it.

    `notify()` queues a finished generation's event (when its key has a webhook) and wakes `run()`.
    `allow_private` lets webhooks reach loopback and private addresses (tests, a receiver on the same
    network); off, such deliveries are given up at once.
    """

    def __init__(self, store: Any, *, timeout: float = TIMEOUT, backoff: tuple[float, ...] = BACKOFF,
                 clock: Callable[[], float] = time.time, allow_private: bool = False, jitter: float = 0.1,
                 batch: int = 20, parallel: int = 8, metrics: Any = None) -> None:
        self._store = store
        self._metrics = metrics  # metrics.Metrics: the deliveries due at each pass (the backlog alert's gauge)
        self._timeout = timeout
        self._backoff = tuple(backoff)
        self._attempts = len(self._backoff) + 1
        self._clock = clock
        self._allow_private = allow_private
        self._jitter = jitter
        self._batch = batch
        self._parallel = asyncio.Semaphore(parallel)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._pruned_at = 0.0

    @property
    def attempts(self) -> int:
        """How many attempts a delivery gets."""
        return self._attempts

    async def notify(self, key_id: int, job_id: int, state: str, files: list[str], error: str | None) -> int | None:
        """Queue the webhook of a finished generation (state "done", "failed" or "cancelled", `files` its
        file URLs) if the key has a webhook and is not revoked; the delivery's id, or None."""
        key = await self._store.key(key_id)
        if key is None or key.revoked or not key.webhook_url:
            return None
        event, payload = event_payload(job_id, state, files, error)
        delivery_id = await self._store.queue_delivery(key_id, event, payload, self._clock())
        self._wake.set()
        return delivery_id

    async def deliver_due(self) -> int:
        """Attempt every delivery due now (up to `batch` at a time, `parallel` at once); how many were attempted."""
        async with self._lock:
            now = self._clock()
            if now - self._pruned_at > 3600:
                self._pruned_at = now
                await self._store.prune_deliveries(now - KEEP_FINISHED)
            due = await self._store.due_deliveries(now, self._batch)
            if self._metrics is not None:
                self._metrics.webhooks(len(due))
            await asyncio.gather(*(self._attempt(delivery) for delivery in due))
            return len(due)

    async def run(self, every: float = 5.0) -> None:
        """Deliver what is due, then again every `every` seconds or as soon as `notify` queues one; until cancelled."""
        while True:
            try:
                while await self.deliver_due() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhooks_failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), every)
            except TimeoutError:
                pass

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- one attempt ----------------------------------------------------------------------

    async def _attempt(self, delivery: Any) -> None:
        async with self._parallel:
            give_up = False
            if delivery.revoked:
                error, give_up = "the API key was revoked", True
            elif not delivery.url or not delivery.secret:
                error, give_up = "the API key no longer has a webhook", True
            else:
                error, give_up = await self._post(delivery)
            now = self._clock()
            attempt = delivery.attempts + 1
            if error is None:
                await self._store.mark_delivery(delivery.id, delivered=True, now=now)
                log.info("webhook_delivered", delivery=delivery.id, key_id=delivery.key_id, attempt=attempt)
                return
            if give_up or attempt >= self._attempts:
                await self._store.mark_delivery(delivery.id, delivered=False, now=now, error=error)
                log.warning("webhook_given_up", delivery=delivery.id, key_id=delivery.key_id, attempt=attempt,
                            error=error)
                return
            wait = self._backoff[attempt - 1] * (1 - random.uniform(0, self._jitter))
            await self._store.mark_delivery(delivery.id, delivered=False, now=now, next_at=now + wait, error=error)
            log.info("webhook_retry", delivery=delivery.id, key_id=delivery.key_id, attempt=attempt, error=error,
                     retry_in=round(wait, 1))

    async def _post(self, delivery: Any) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (why, whether to give up now)."""
        try:
            url = check_url(delivery.url)
        except ValueError as exc:
            return str(exc), True
        host = urlsplit(url).hostname or ""
        if not self._allow_private and _is_ip(host) and not public_address(host):
            return f"{host} is not a public internet address", True
        body = json.dumps(delivery.payload, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": sign(delivery.secret, timestamp, body),
                   "X-Webhook-Id": str(delivery.id)}
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.content.read(READ_LIMIT)  # ignored; never more than this
                status = response.status
        except TimeoutError:
            return f"no answer within {self._timeout:g} s", False
        except aiohttp.ClientError as exc:
            if _private(exc):
                return f"{host} leads to an address that is not on the public internet", True
            return f"could not connect: {type(exc).__name__}: {exc}"[:300], False
        if 200 <= status < 300:
            return None, False
        if 300 <= status < 400:
            return f"answered {status} (a redirect, which is not followed)", False
        return f"answered {status}", False

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=None if self._allow_private else _PublicResolver(),
                                             limit=32, force_close=True)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _private(error: BaseException) -> bool:
    """Whether a client error came from the resolver refusing a private address."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, PrivateAddress) or isinstance(getattr(seen, "os_error", None), PrivateAddress):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
