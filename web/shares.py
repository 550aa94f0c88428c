"""The public page of a shared result (issue 21): `/s/{token}` and its files under `/s/{token}/file/{n}`.

The token is checked in three steps on every request: its signature (links.py `verify_share`, before
the database is asked), then that its share is live, then that its result is not deleted. Any failure
is the app's one 404 page, so a revoked link, a deleted result and a made-up token look alike, and a
revoked or deleted one is gone at once: nothing is cached, here or (Cache-Control: no-store) on the way.

The page has OpenGraph and Twitter card tags, with absolute URLs from WEB_BASE_URL, so the link unfurls
with its picture on Discord, X, Mastodon and messengers. It shows the prompt only when its owner chose
to. Plain HTML (Jinja2, autoescaped) and CSS, no JavaScript; the app adds the gallery's security headers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from config import Settings
from links import LinkError, link_secret, verify_share
from results.folder import OutputError
from store import Generation, Store
from store.shares import Share
from web.gallery import CONTENT_TYPES, GALLERY, _cdn_url, _root
from web.thumbs import VIDEO_SUFFIXES

log = structlog.get_logger(__name__)

TOKEN = r"[A-Za-z0-9_-]{40}"
SITE_NAME = "ComfyUI"
NEUTRAL = "A picture made with ComfyUI, shared from Discord."
NEUTRAL_VIDEO = "A video made with ComfyUI, shared from Discord."
TITLE_MAX = 70  # characters of the prompt in a title; the description may hold 300


def add_routes(app: web.Application, store: Store, settings: Settings, results: Any = None) -> None:
    """Mount the share pages on `app` (after the gallery: its templates and 404 page are used)."""
    pages = SharePages(store, settings, results)
    app.router.add_get(f"/s/{{token:{TOKEN}}}", pages.page)
    app.router.add_get(f"/s/{{token:{TOKEN}}}/file/{{index:[0-9]{{1,4}}}}", pages.file)


class SharePages:
    """The route handlers and what they share."""

    def __init__(self, store: Store, settings: Settings, results: Any = None) -> None:
        self._store = store
        self._settings = settings
        self._outputs = settings.outputs_dir.resolve()
        self._results = results if settings.output_store else None  # with OUTPUT_STORE: files are in the bucket

    async def page(self, request: web.Request) -> web.Response:
        share, result = await self._shared(request)
        base = self._absolute(request)
        files = []
        for index, name in enumerate(result.files):
            suffix = Path(name).suffix.lower()
            kind = "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in CONTENT_TYPES else "other"
            files.append({"href": f"{_root(request)}s/{request.match_info['token']}/file/{index}", "kind": kind,
                          "url": f"{base}/file/{index}", "type": CONTENT_TYPES.get(suffix, "")})
        prompt = str(result.params.get("prompt") or "") if share.show_prompt else ""
        video = next((file for file in files if file["kind"] == "video"), None)
        image = next((file for file in files if file["kind"] == "image"), None)
        width, height = await self._size(result, files.index(image) if image else None)
        neutral = NEUTRAL_VIDEO if video and not image else NEUTRAL
        title = _clip(prompt, TITLE_MAX) if prompt else ("A shared video" if video and not image else "A shared picture")
        gallery = request.app[GALLERY]
        html = gallery.templates.get_template("share.html").render(
            root=_root(request), title=title, description=_clip(prompt, 300) if prompt else neutral, prompt=prompt,
            url=base, files=files, image=image, video=video, width=width, height=height, site=SITE_NAME,
            alt=_clip(prompt, 300) if prompt else neutral)
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        """A file of the shared result: from the folder, or with OUTPUT_STORE a redirect to a short-lived
        presigned URL; a file no longer kept comes from Discord's CDN where it was posted, else 404."""
        _, result = await self._shared(request)
        index = int(request.match_info["index"])
        if index >= len(result.files):
            raise web.HTTPNotFound
        name = str(result.files[index])
        path = self._inside(name)
        if path is None:
            log.warning("share_unsafe_file_name", generation=result.id, index=index)
            raise web.HTTPNotFound
        if self._results is not None:
            try:
                return web.Response(status=302, headers={"Location": await self._results.link(name),
                                                         "Cache-Control": "no-store"})
            except OutputError as exc:
                log.info("share_no_link", file=name, error=str(exc))
        if await asyncio.to_thread(path.is_file):
            content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
            if content_type == "application/octet-stream":
                headers["Content-Disposition"] = "attachment"
            return web.FileResponse(path, headers=headers)
        url = _cdn_url(result, index)
        if url is None:
            raise web.HTTPNotFound
        return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})

    # --- access ---------------------------------------------------------------------------

    async def _shared(self, request: web.Request) -> tuple[Share, Generation]:
        """The live share and its result the token names; HTTPNotFound (the app's 404 page) otherwise."""
        secret = await link_secret(self._store, self._settings)
        try:
            share_id = verify_share(secret, request.match_info["token"])
        except LinkError:
            raise web.HTTPNotFound from None
        share = await self._store.get_share(share_id)
        if share is None or share.revoked_at is not None:
            raise web.HTTPNotFound
        result = await self._store.get_generation(share.generation_id)
        if result is None or result.deleted_at is not None:
            raise web.HTTPNotFound
        return share, result

    def _absolute(self, request: web.Request) -> str:
        """The page's absolute URL: under WEB_BASE_URL, or where the request came (a bot without one)."""
        base = (self._settings.web_base_url or str(request.url.origin())).rstrip("/")
        return f"{base}/s/{request.match_info['token']}"

    def _inside(self, name: str) -> Path | None:
        """The path of a stored file name, if it is a plain name that stays inside outputs_dir."""
        if not name or name != Path(name).name or name.startswith(".") or "\\" in name or "\0" in name:
            return None
        path = (self._outputs / name).resolve()
        return path if path.parent == self._outputs else None

    async def _size(self, result: Generation, index: int | None) -> tuple[int | None, int | None]:
        """The image's width and height: read from its file's header (off the loop), else its settings."""
        path = self._inside(str(result.files[index])) if index is not None else None
        if path is not None:
            size = await asyncio.to_thread(_header_size, path)
            if size is not None:
                return size
        params = result.params
        width, height = params.get("width"), params.get("height")
        return (width, height) if isinstance(width, int) and isinstance(height, int) else (None, None)


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
