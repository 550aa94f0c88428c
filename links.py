"""Signed, expiring links: a token names one person in one Discord server (or outside servers).

A token is URL-safe base64 of a fixed-size payload (version, user id, server id, expiry) followed by
its HMAC-SHA256, so nothing is stored per link and a changed byte makes it invalid. 71 characters.

Two kinds share the scheme and the secret but never each other's tokens: gallery links (`sign`,
`verify`: one person's results) and admin links (`sign_admin`, `verify_admin`: the admin dashboard).
Each kind has its own version byte inside the signed payload and its own HMAC domain, so a gallery
token fails `verify_admin` and an admin token fails `verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from config import Settings


class SecretKeeper(Protocol):
    """Where the link secret is kept when WEB_SECRET is unset (the store)."""

    async def link_secret(self) -> str: ...

_VERSION = 1
_PAYLOAD = struct.Struct(">BQQI")  # version, user id, guild id (0: none), expiry (epoch seconds)
_MAC_SIZE = hashlib.sha256().digest_size
_CONTEXT = b"comfyui-bot gallery link\x00"  # keeps these MACs apart from any other use of the secret
_ADMIN_VERSION = 0xA1  # the admin dashboard's links: another version byte ...
_ADMIN_CONTEXT = b"comfyui-bot admin link\x00"  # ... and another HMAC domain
_MAX_ID = 2**64 - 1
TOKEN_LENGTH = ((_PAYLOAD.size + _MAC_SIZE) * 4 + 2) // 3  # characters of a token (71): logs.py masks such runs
_MAX_EXPIRY = 2**32 - 1


class LinkError(Exception):
    """A link that gives no access; `reason` is "expired" or "not valid"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the link is {reason}")
        self.reason = reason


def sign(secret: str, user_id: int, guild_id: int | None, expires: float) -> str:
    """A token for `user_id`'s results in `guild_id` (None: outside servers), valid until `expires`."""
    return _sign(_CONTEXT, _VERSION, secret, user_id, guild_id, expires)


def verify(secret: str, token: str, now: float) -> tuple[int, int | None]:
    """The (user_id, guild_id) the token names; LinkError if it was changed, is malformed or expired."""
    return _verify(_CONTEXT, _VERSION, secret, token, now)


def sign_admin(secret: str, user_id: int, guild_id: int | None, expires: float) -> str:
    """An admin dashboard token for `user_id` acting on `guild_id` (None: outside servers), valid until
    `expires`. It gives no access to any gallery."""
    return _sign(_ADMIN_CONTEXT, _ADMIN_VERSION, secret, user_id, guild_id, expires)


def verify_admin(secret: str, token: str, now: float) -> tuple[int, int | None]:
    """The (user_id, guild_id) an admin token names; LinkError if it was changed, is malformed, is
    expired, or is a gallery token."""
    return _verify(_ADMIN_CONTEXT, _ADMIN_VERSION, secret, token, now)


def _sign(context: bytes, version: int, secret: str, user_id: int, guild_id: int | None, expires: float) -> str:
    if not secret:
        raise ValueError("the secret is empty")
    if not 0 < user_id <= _MAX_ID or not (guild_id is None or 0 < guild_id <= _MAX_ID):
        raise ValueError("ids are positive 64-bit numbers")
    payload = _PAYLOAD.pack(version, user_id, guild_id or 0, min(max(int(expires), 0), _MAX_EXPIRY))
    token = payload + _mac(secret, payload, context)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def _verify(context: bytes, version: int, secret: str, token: str, now: float) -> tuple[int, int | None]:
    if not secret:
        raise ValueError("the secret is empty")
    size = _PAYLOAD.size + _MAC_SIZE
    if len(token) != TOKEN_LENGTH or not token.isascii():
        raise LinkError("not valid")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise LinkError("not valid") from None
    # b64decode ignores some stray characters: insist the token is the canonical spelling.
    if len(raw) != size or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise LinkError("not valid")
    payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size:]
    if not hmac.compare_digest(mac, _mac(secret, payload, context)):
        raise LinkError("not valid")
    found, user_id, guild_id, expires = _PAYLOAD.unpack(payload)
    if found != version or user_id == 0:
        raise LinkError("not valid")
    if now >= expires:
        raise LinkError("expired")
    return user_id, guild_id or None


def gallery_url(settings: Settings, secret: str, user_id: int, guild_id: int | None, now: float) -> str:
    """The gallery link for Discord: `{web_base_url}/g/{token}`, valid for `gallery_link_hours`.

    Without WEB_BASE_URL, the address the app listens on (only useful on the same machine); with
    neither WEB_BASE_URL nor WEB_PORT the web app is off: ValueError.
    """
    token = sign(secret, user_id, guild_id, now + settings.gallery_link_hours * 3600)
    return f"{_base(settings)}/g/{token}"


def dashboard_url(settings: Settings, secret: str, user_id: int, guild_id: int | None, now: float) -> str:
    """The admin dashboard link for Discord: `{web_base_url}/admin/{token}`, valid for
    `gallery_link_hours`; as `gallery_url` without WEB_BASE_URL, and ValueError when the web app is off."""
    token = sign_admin(secret, user_id, guild_id, now + settings.gallery_link_hours * 3600)
    return f"{_base(settings)}/admin/{token}"


def _base(settings: Settings) -> str:
    if settings.web_base_url is None and settings.web_port is None:
        raise ValueError("the web app is off (WEB_PORT is not set)")
    base = settings.web_base_url or f"http://{settings.web_host}:{settings.web_port}"
    return base.rstrip("/")


async def link_secret(store: SecretKeeper, settings: Settings) -> str:
    """The key links are signed with: WEB_SECRET when set, else the one kept in the database."""
    if settings.web_secret is not None:
        return settings.web_secret.get_secret_value()
    return await store.link_secret()


def _mac(secret: str, payload: bytes, context: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), context + payload, hashlib.sha256).digest()


# Share links (issue 21): the public page of one result. The token is the share's random id (stored,
# so it can be revoked) followed by the first bytes of its HMAC under the link secret (never stored):
# the page checks the HMAC before it asks the database, and a changed WEB_SECRET ends every share link.
_SHARE_CONTEXT = b"comfyui-bot share link\x00"
_SHARE_MAC_SIZE = 15  # 120 bits of the HMAC: 20 characters
SHARE_ID_LENGTH = 20  # characters of store.shares' random ids (15 bytes)
SHARE_TOKEN_LENGTH = SHARE_ID_LENGTH + _SHARE_MAC_SIZE * 4 // 3  # 40
_SHARE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def share_token(secret: str, share_id: str) -> str:
    """The token of a share's link: its id, then its signature."""
    if not secret:
        raise ValueError("the secret is empty")
    if len(share_id) != SHARE_ID_LENGTH or not set(share_id) <= _SHARE_CHARACTERS:
        raise ValueError("a share id is 20 URL-safe characters")
    mac = _mac(secret, share_id.encode("ascii"), _SHARE_CONTEXT)[:_SHARE_MAC_SIZE]
    return share_id + base64.urlsafe_b64encode(mac).decode("ascii")


def verify_share(secret: str, token: str) -> str:
    """The share id a token names; LinkError("not valid") if it was changed or is malformed. Whether the
    share still exists is the store's to say."""
    if len(token) != SHARE_TOKEN_LENGTH or not set(token) <= _SHARE_CHARACTERS:
        raise LinkError("not valid")
    share_id = token[:SHARE_ID_LENGTH]
    if not hmac.compare_digest(share_token(secret, share_id), token):
        raise LinkError("not valid")
    return share_id


def share_url(settings: Settings, secret: str, share_id: str) -> str:
    """The public page of a share: `{web_base_url}/s/{token}`; ValueError when the web app is off."""
    return f"{_base(settings)}/s/{share_token(secret, share_id)}"
