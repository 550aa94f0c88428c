"""HTTP to one ComfyUI server: every call bounded in time and in bytes, every answer checked.

`ComfyHTTP` is the part of the client that needs no websocket: it is what
`comfyui.ComfyClient` builds on. A server, or a proxy in front of it, may answer
anything; each odd answer becomes a `BadResponse` or `Unreachable` whose text is
a sentence (a server's own error text only as a sanitized first line), and no
body is read past MAX_BODY. Redirects are never followed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from comfy.types import BadResponse, ComfyError, FileRef, Unreachable
from safe_text import server_line

CHUNK = 256 * 1024
MAX_BODY = 64 * 1024 * 1024  # an answer larger than this is not ComfyUI's (/object_info is ~0.5-20 MB)
# Errors after which a request may or may not have reached the server (unlike a refused connection).
UNCERTAIN = (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)


class Uncertain(Unreachable):
    """The request failed after it may have reached the server (timed out, connection dropped)."""


class ComfyHTTP:
    """The HTTP calls of one server; `start_http()` before use, `close_http()` after."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None, timeout: float, name: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._object_info: dict[str, Any] | None = None

    def start_http(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers, raise_for_status=False)

    async def close_http(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                       timeout: float | None = None) -> tuple[int, bytes]:
        """One call; the answer's body is read up to MAX_BODY. Raises Unreachable or BadResponse.

        An error after which the request may have reached the server is re-raised as is
        (see UNCERTAIN) for `_post_prompt`, which must know; every caller sees Unreachable.
        """
        assert self._session is not None, "ComfyClient.start() was not called"
        limit = self._timeout if timeout is None else timeout
        try:
            async with self._session.request(
                method, self.base_url + path, json=json_body, data=data, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as response:
                body = await _read_capped(response, MAX_BODY, f"{method} {path}")
        except TimeoutError as error:
            raise Uncertain(f"{self.name} did not answer {method} {path} within {limit:g} s.") from error
        except aiohttp.ClientConnectorError as error:
            raise Unreachable(f"{self.name} is unreachable ({error.__class__.__name__}).") from None
        except UNCERTAIN as error:
            raise Uncertain(f"{self.name} dropped the connection during {method} {path} "
                             f"({error.__class__.__name__}).") from error
        except aiohttp.ClientError as error:
            raise Unreachable(f"{self.name} is unreachable ({error.__class__.__name__}).") from None
        if response.status >= 500:
            detail = server_line(body.decode("utf-8", "replace")) or "no details"
            raise BadResponse(f"ComfyUI answered {response.status} to {method} {path}: {detail}.")
        if 300 <= response.status < 400:
            raise BadResponse(f"ComfyUI answered {method} {path} with a redirect ({response.status}), "
                              "which the bot does not follow; check COMFYUI_URL.")
        return response.status, body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = await self._request(method, path, **kwargs)
        if status != 200:
            raise BadResponse(f"ComfyUI answered {status} to {method} {path}.")
        return decode(body, f"{method} {path}")

    async def system_stats(self) -> dict[str, Any]:
        """The server's version and devices; odd shapes become empty ones (only `check` shows them)."""
        stats = await self._json("GET", "/system_stats")
        system = require(stats, "system", "GET /system_stats")
        devices = stats.get("devices")
        return {**stats, "system": system if isinstance(system, dict) else {},
                "devices": [device for device in devices if isinstance(device, dict)] if isinstance(devices, list) else []}

    async def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        """Every node class the server has, with its inputs (cached; about 500 KB).

        A list of nodes that is not ComfyUI's (a node that is a string, a list, an HTML
        page) is a BadResponse naming the first odd entry: such a server is unusable.
        """
        if self._object_info is None or refresh:
            status, body = await self._request("GET", "/object_info", timeout=max(self._timeout, 60.0))
            if status != 200:
                raise BadResponse(f"ComfyUI answered {status} to GET /object_info.")
            try:
                info = json.loads(body)
            except ValueError:
                page = " (it is a web page)" if body.lstrip()[:1] == b"<" else ""
                raise BadResponse(f"ComfyUI's node list (/object_info) is not JSON{page}; "
                                  "is COMFYUI_URL pointing at ComfyUI?") from None
            self._object_info = checked_object_info(info)
        return self._object_info

    async def queue(self) -> tuple[list[str], list[str]]:
        """Prompt ids running and pending, pending in the order they will run."""
        data = await self._json("GET", "/queue")
        running = require(data, "queue_running", "GET /queue")
        pending = require(data, "queue_pending", "GET /queue")
        try:
            ordered = sorted(pending, key=lambda item: item[0])
            running_ids, pending_ids = [item[1] for item in running], [item[1] for item in ordered]
        except (TypeError, IndexError, KeyError):
            raise BadResponse("ComfyUI sent a /queue in an unexpected shape.") from None
        if not all(isinstance(item, str) for item in running_ids + pending_ids):
            raise BadResponse("ComfyUI sent a /queue in an unexpected shape.")
        return running_ids, pending_ids

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while unknown, queued or running."""
        data = await self._json("GET", f"/history/{prompt_id}")
        if not isinstance(data, dict):
            raise BadResponse("ComfyUI sent a /history that is not an object.")
        entry = data.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise BadResponse("ComfyUI sent a /history entry that is not an object.")
        return entry

    async def upload_image(self, data: bytes, filename: str, *, overwrite: bool = False) -> str:
        """Upload an input image; returns the name LoadImage must use (the server may rename it)."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="application/octet-stream")
        form.add_field("overwrite", "true" if overwrite else "false")
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200:
            raise BadResponse(f"ComfyUI refused the upload of {filename!r} (HTTP {status}).")
        reply = decode(body, "POST /upload/image")
        name = require(reply, "name", "POST /upload/image")
        subfolder = reply.get("subfolder") or ""
        if not isinstance(name, str) or not name or not isinstance(subfolder, str):
            raise BadResponse("ComfyUI's answer to POST /upload/image names no file.")
        return f"{subfolder}/{name}" if subfolder else name

    async def iter_file(self, ref: FileRef) -> AsyncIterator[bytes]:
        """Stream one output file from `/view`, chunk by chunk (the caller caps the size).

        Redirects are not followed: ComfyUI serves its own files.
        """
        assert self._session is not None, "ComfyClient.start() was not called"
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=self._timeout)
        shown = ref.filename[:80]
        try:
            async with self._session.get(self.base_url + "/view", params=params, timeout=timeout,
                                         allow_redirects=False) as response:
                if response.status == 404:
                    raise ComfyError(f"ComfyUI no longer has the file {shown!r}.")
                if response.status != 200:
                    raise BadResponse(f"ComfyUI answered {response.status} when asked for {shown!r}.")
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except TimeoutError:
            raise Unreachable(f"ComfyUI stopped sending {shown!r} for {self._timeout:g} s.") from None
        except aiohttp.ClientError as error:
            raise Unreachable(f"Downloading {shown!r} from ComfyUI failed ({error.__class__.__name__}).") from None


def checked_object_info(info: Any) -> dict[str, Any]:
    """`/object_info` as ComfyUI sends it: an object of node classes, each an object with an
    `input` object. Anything else names the first odd entry, in words."""
    if not isinstance(info, dict) or not info:
        raise BadResponse("ComfyUI's node list (/object_info) is not a list of nodes; "
                          "is COMFYUI_URL pointing at ComfyUI?")
    for name, entry in info.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("input", {}), dict):
            shown = name[:60] if isinstance(name, str) else "?"
            raise BadResponse(f"ComfyUI's node list (/object_info) is malformed: the entry for "
                              f"{shown!r} is {type(entry).__name__ if not isinstance(entry, dict) else 'missing its inputs'}"
                              ", so this server cannot be used.")
    return info


async def _read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body, or BadResponse as soon as it passes `limit` bytes (no Content-Length needed)."""
    if (response.content_length or 0) > limit:
        raise BadResponse(f"ComfyUI's answer to {what} is larger than {limit // (1024 * 1024)} MiB.")
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > limit:
            raise BadResponse(f"ComfyUI's answer to {what} is larger than {limit // (1024 * 1024)} MiB.")
    return bytes(body)


def decode(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BadResponse(f"ComfyUI sent invalid JSON for {what}.") from None


def require(data: Any, key: str, what: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise BadResponse(f"ComfyUI's answer to {what} has no {key!r}.")
    return data[key]


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
