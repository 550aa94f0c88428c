"""Images people bring as a job's input: downloaded from Discord's CDN (only from CDN_HOSTS, redirects
too, streamed under DOWNLOAD_LIMIT), read by their content rather than their name, turned upright
and fitted to the limits, with a mask when one was sent or the image has transparent parts. The API's
uploads take the same path from the bytes on. Knows nothing of Discord beyond an attachment's URL and
file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
import yarl

from config import Settings
from results.folder import OutputError, OutputFolder
from results.media import fit_input, fit_mask, verify

log = structlog.get_logger("bot")

MAX_REDIRECTS = 3


class Inputs:
    def __init__(self, settings: Settings, outputs: OutputFolder) -> None:
        self._settings = settings
        self._outputs = outputs
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def input_image(self, attachment: Any, mask: Any = None) -> tuple[str, tuple[int, int], str | None]:
        """A person's attachment (anything with a `url` and a `filename`) as a job's input: fetched from
        the CDN under the cap, read by its content (not its name), turned upright, fitted to
        MAX_WIDTH x MAX_HEIGHT. Returns its name in the output folder (pinned), its size, and the name
        of a mask (white = redraw) when one was sent or the image has transparent parts; None otherwise."""
        fetched = await self.fetch(attachment.url, attachment.filename, checked=False)
        try:
            raw_mask = await self.fetch(mask.url, mask.filename, checked=False) if mask else None
        except BaseException:
            await self._outputs.discard(fetched)
            raise
        return await self.prepared_input(fetched, raw_mask)

    async def prepared_input(self, raw: Path, raw_mask: Path | None = None) -> tuple[str, tuple[int, int], str | None]:
        """Downloaded bytes (a Discord attachment, an API upload) as a job's input, as `input_image`
        describes; the raw files are discarded whatever happens."""
        try:
            data, size, alpha = await fit_input(raw, self._settings.max_width, self._settings.max_height)
            if raw_mask is not None:
                alpha = await fit_mask(raw_mask, size)
        finally:
            await self._outputs.discard(raw)
            if raw_mask is not None:
                await self._outputs.discard(raw_mask)
        name = (await self._outputs.save_bytes("input.png", data)).name
        masked = (await self._outputs.save_bytes("mask.png", alpha)).name if alpha is not None else None
        return name, size, masked

    async def fetch(self, url: str, name: str, *, checked: bool = True) -> Path:
        """Download an image from Discord's CDN into the output folder, pinned: only from CDN_HOSTS
        (redirects too), streamed under DOWNLOAD_LIMIT, and (`checked`) the image its name says."""
        assert self._session is not None, "Inputs.open() first"
        limit = self._settings.download_limit
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or parts.hostname not in self._settings.cdn_hosts:
                log.warning("attachment_host_refused", host=parts.hostname)
                raise ValueError("that attachment is not on Discord's CDN, so the bot will not download it")
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = str(response.url.join(yarl.URL(response.headers["Location"])))
                    continue
                if response.status != 200:
                    raise ValueError(f"Discord's CDN answered {response.status} for the attachment")
                if (response.content_length or 0) > limit:
                    raise ValueError(f"the attachment is larger than {limit // (1024 * 1024)} MiB")
                path = await self._outputs.save_stream(name, response.content.iter_chunked(256 * 1024),
                                                       max_bytes=limit)
            try:
                if checked:
                    await verify(path)
            except OutputError:
                await self._outputs.discard(path)
                raise
            return path
        raise ValueError("Discord's CDN redirected too often for the attachment")
