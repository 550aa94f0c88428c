"""The gallery: each person's results in one Discord server, reached through a signed link.

Every gallery route checks the link's token first, and only ever shows results of the person and server
it names. The pages are plain HTML (Jinja2, autoescaped) and CSS, with no JavaScript. Links inside the
pages are relative, so the app also works behind a reverse proxy that serves it under a path.
`error_pages` shows refusals, missing pages and failures of the whole app as such HTML pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from config import Settings
from links import LinkError, link_secret, verify
from results.folder import OutputError
from store import Generation, Store
from store.gallery import Query
from web.thumbs import VIDEO_SUFFIXES, Thumbnails

log = structlog.get_logger("web.app")  # the name its events had when the gallery was all of web/app.py

PAGE_SIZE = 60
SEARCH_MAX = 200  # characters of a search that count
HERE = Path(__file__).resolve().parent
CDN_HOSTS = ("cdn.discordapp.com", "results.media.discordapp.net")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}
NOT_KEPT = "no longer kept by the bot"
ASK_AGAIN = "Ask for a new link with /gallery in Discord."
_MAX_ID = 2**63 - 1

GALLERY = web.AppKey("gallery", "Gallery")


class Refused(Exception):
    """The link gives no access; becomes the 403 page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(Exception):
    """No such result for this link; becomes the 404 page."""


def add_routes(app: web.Application, store: Store, settings: Settings, clock: Callable[[], float],
               results: Any = None) -> Gallery:
    """Mount the gallery's pages on `app` (whose middlewares start with `error_pages`); `clock` gives
    the time links are checked against; `results` is where results are kept (results/keeper.py)."""
    gallery = Gallery(store, settings, clock, results)
    app[GALLERY] = gallery
    app.router.add_get("/static/style.css", gallery.style)
    app.router.add_get("/g/{token}", gallery.grid)
    result = "/g/{token}/r/{generation_id:[0-9]{1,19}}"
    app.router.add_get(result, gallery.detail)
    app.router.add_post(result + "/favorite", gallery.favorite)
    app.router.add_get(result + "/thumb/{index:[0-9]{1,4}}", gallery.thumb)
    app.router.add_get(result + "/file/{index:[0-9]{1,4}}", gallery.file)
    return gallery


class Gallery:
    """The route handlers and what they share."""

    def __init__(self, store: Store, settings: Settings, clock: Callable[[], float], results: Any = None) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._secret: str | None = None
        self._outputs = settings.outputs_dir.resolve()
        self._results = results  # with OUTPUT_STORE: files are links into the bucket, thumbnails fetched from it
        self.thumbs = Thumbnails(settings.outputs_dir, settings.data_dir / "thumbs",
                                 results=results if settings.output_store else None)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                                     undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     auto_reload=False)
        self._style = (HERE / "static" / "style.css").read_bytes()

    # --- routes ---------------------------------------------------------------------------

    async def style(self, request: web.Request) -> web.Response:
        return web.Response(body=self._style, content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    async def grid(self, request: web.Request) -> web.Response:
        user_id, guild_id = await self._owner(request)
        token, root = request.match_info["token"], _root(request)
        text = request.query.get("q", "")[:SEARCH_MAX].strip()
        favorites = request.query.get("fav") == "1"
        page = _page_number(request.query.get("page"))
        query = Query(user_id, guild_id, text=text, favorites=favorites)
        results, total = await self._store.find_generations(query, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        marked = await self._store.favorite_ids(user_id, [result.id for result in results])
        base = f"{root}g/{token}"

        def page_link(number: int) -> str:
            params = {key: value for key, value in (("q", text), ("fav", "1" if favorites else "")) if value}
            return f"{base}?{urlencode({**params, 'page': number})}" if number > 1 or params else base

        tiles = [{
            "href": f"{base}/r/{result.id}",
            "thumb": f"{base}/r/{result.id}/thumb/0",
            "video": bool(result.files) and Path(result.files[0]).suffix.lower() in VIDEO_SUFFIXES,
            "empty": not result.files,
            "favorite": result.id in marked,
            "alt": _alt(result),
            "count": len(result.files),
        } for result in results]
        shown_to = min(total, (page - 1) * PAGE_SIZE + len(results))
        return self._page("gallery.html", request, tiles=tiles, total=total, text=text, favorites=favorites,
                          page=page, shown_from=(page - 1) * PAGE_SIZE + 1 if results else 0, shown_to=shown_to,
                          action=base, newer=page_link(page - 1) if page > 1 else None,
                          older=page_link(page + 1) if page * PAGE_SIZE < total else None)

    async def detail(self, request: web.Request) -> web.Response:
        owner = await self._owner(request)
        result = await self._generation(request, owner)
        token, root = request.match_info["token"], _root(request)
        base = f"{root}g/{token}/r/{result.id}"
        kept = await self._all_kept(result.files)
        files = []
        for index, name in enumerate(result.files):
            suffix = Path(name).suffix.lower()
            files.append({
                "name": name,
                "href": f"{base}/file/{index}",
                "kind": "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in CONTENT_TYPES else "other",
                "kept": kept[index],
                "on_discord": _cdn_url(result, index) is not None,
            })
        favorite = result.id in await self._store.favorite_ids(owner[0], [result.id])
        return self._page("detail.html", request, result=result, files=files, favorite=favorite,
                          details=_details(result), prompt=str(result.params.get("prompt") or ""),
                          discord=_message_link(result), gallery=f"{root}g/{token}",
                          favorite_action=f"{base}/favorite", not_kept=NOT_KEPT)

    async def favorite(self, request: web.Request) -> web.Response:
        owner = await self._owner(request)
        result = await self._generation(request, owner)
        wanted = (await request.post()).get("on")
        if wanted in ("0", "1"):
            on = wanted == "1"
        else:
            on = result.id not in await self._store.favorite_ids(owner[0], [result.id])
        await self._store.set_favorite(owner[0], result.id, on)
        location = f"{_root(request)}g/{request.match_info['token']}/r/{result.id}"
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        """The file from the folder; with OUTPUT_STORE a redirect to a short-lived presigned URL, so the
        bytes go from the bucket to the browser (the link's owner was checked here first)."""
        result, index, path = await self._file(request)
        url = await self._link(path.name)
        if url is not None:
            return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        if not await asyncio.to_thread(path.is_file):
            return _gone(result, index)
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers = {"Content-Type": content_type, "Cache-Control": "private"}
        if content_type == "application/octet-stream":
            headers["Content-Disposition"] = "attachment"
        return web.FileResponse(path, headers=headers)

    async def thumb(self, request: web.Request) -> web.StreamResponse:
        result, index, path = await self._file(request)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return _placeholder("video")
        if not self._settings.output_store and not await asyncio.to_thread(path.is_file):
            return _gone(result, index)
        made = await self.thumbs.get(path.name)  # with OUTPUT_STORE, from a copy fetched back if need be
        if made is None:
            return _gone(result, index) if not await asyncio.to_thread(path.is_file) else _placeholder("no preview")
        return web.FileResponse(made, headers={"Content-Type": "image/webp", "Cache-Control": "private"})

    # --- access ---------------------------------------------------------------------------

    async def _owner(self, request: web.Request) -> tuple[int, int | None]:
        """The person and server the link names; Refused when it is expired, changed or garbage."""
        if self._secret is None:
            self._secret = await link_secret(self._store, self._settings)
        try:
            return verify(self._secret, request.match_info["token"], self._clock())
        except LinkError as exc:
            raise Refused(exc.reason) from None

    async def _generation(self, request: web.Request, owner: tuple[int, int | None]) -> Generation:
        """The result the path names, if it is that person's in that server and not deleted."""
        generation_id = int(request.match_info["generation_id"])
        if not 0 < generation_id <= _MAX_ID:
            raise NotFound
        result = await self._store.get_generation(generation_id)
        if result is None or result.deleted_at is not None or (result.user_id, result.guild_id) != owner:
            raise NotFound
        return result

    async def _file(self, request: web.Request) -> tuple[Generation, int, Path]:
        """The result, file index and file path the request names; NotFound for a stored name that
        would leave outputs_dir (it comes from the database, yet is checked all the same)."""
        result = await self._generation(request, await self._owner(request))
        index = int(request.match_info["index"])
        if index >= len(result.files):
            raise NotFound
        path = self._inside(str(result.files[index]))
        if path is None:
            log.warning("web_unsafe_file_name", generation=result.id, index=index)
            raise NotFound
        return result, index, path

    def _inside(self, name: str) -> Path | None:
        """The path of a stored file name, if it is a plain name that stays inside outputs_dir."""
        if not name or name != Path(name).name or name.startswith(".") or "\\" in name or "\0" in name:
            return None
        path = (self._outputs / name).resolve()
        return path if path.parent == self._outputs else None

    async def _link(self, name: str) -> str | None:
        """A presigned URL of the kept file, or None (no object store; or the file is not in it, or the
        store failed: then the local copy, or the copy on Discord, as without one)."""
        if self._results is None:
            return None
        try:
            return await self._results.link(name)
        except OutputError as exc:
            log.info("web_no_link", file=name, error=str(exc))
            return None

    async def _all_kept(self, names: list[str]) -> list[bool]:
        local = await asyncio.to_thread(lambda: [self._kept(name) for name in names])
        if self._results is None or not self._settings.output_store:
            return local
        found = []
        for name, here in zip(names, local):
            try:
                found.append(here or await self._results.exists(name))
            except OutputError:
                found.append(here)
        return found

    def _kept(self, name: str) -> bool:
        path = self._inside(name)
        return path is not None and path.is_file()

    # --- pages ----------------------------------------------------------------------------

    def _page(self, template: str, request: web.Request, *, status: int = 200, **values: Any) -> web.Response:
        html = self.templates.get_template(template).render(root=_root(request), **values)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def error_page(self, request: web.Request, status: int, title: str, message: str, hint: str = "") -> web.Response:
        return self._page("error.html", request, status=status, title=title, message=message, hint=hint)


@web.middleware
async def error_pages(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Refusals, missing results and failures as readable HTML pages."""
    gallery = request.app[GALLERY]
    try:
        return await handler(request)
    except Refused as refused:
        message = ("This gallery link has expired." if refused.reason == "expired"
                   else "This gallery link is not valid: it may have been cut short or changed.")
        return gallery.error_page(request, 403, "Link not accepted", message, ASK_AGAIN)
    except (NotFound, web.HTTPNotFound):
        return gallery.error_page(request, 404, "Not found",
                                  "There is no such result in this gallery. It may have been deleted.",
                                  "A gallery link shows only your own results in one server.")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("web_failed", route=request.match_info.route.name or request.method)
        return gallery.error_page(request, 500, "Something went wrong",
                                  "The gallery could not show this page. Please try again in a moment.")


def _root(request: web.Request) -> str:
    """The relative path from this page up to the app's root: "../" per folder level."""
    return "../" * (request.rel_url.raw_path.count("/") - 1) or "./"


def _page_number(value: str | None) -> int:
    try:
        return min(max(int(value or 1), 1), 100_000)
    except ValueError:
        return 1


def _cdn_url(result: Generation, index: int) -> str | None:
    """The file's Discord attachment URL, if it has one on Discord's CDN."""
    urls = result.attachment_urls or []
    url = str(urls[index]) if index < len(urls) and urls[index] else ""
    parts = urlsplit(url)
    return url if parts.scheme == "https" and parts.hostname in CDN_HOSTS else None


def _gone(result: Generation, index: int) -> web.Response:
    """A file no longer in the output folder: its copy on Discord, else a placeholder."""
    url = _cdn_url(result, index)
    if url is not None:
        return web.Response(status=302, headers={"Location": url, "Cache-Control": "private"})
    return _placeholder(NOT_KEPT)


def _message_link(result: Generation) -> str | None:
    if result.message_id is None:
        return None
    return f"https://discord.com/channels/{result.guild_id or '@me'}/{result.channel_id}/{result.message_id}"


def _alt(result: Generation) -> str:
    prompt = str(result.params.get("prompt") or result.kind)
    return prompt if len(prompt) <= 120 else prompt[:119] + "…"


def _details(result: Generation) -> list[tuple[str, str]]:
    """The settings shown on the detail page, as (label, text), those it has."""
    params = result.params
    shown = [
        ("Negative prompt", params.get("negative_prompt")),
        ("Model", params.get("model") or params.get("checkpoint")),
        ("Size", f"{params['width']} × {params['height']}" if params.get("width") and params.get("height") else None),
        ("Seed", params.get("seed")),
        ("Steps", params.get("steps")),
        ("CFG", params.get("cfg")),
        ("Style", params.get("style")),
        ("LoRAs", _loras(params.get("loras"))),
        ("Kind", result.kind),
        ("Date", datetime.fromtimestamp(result.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    return [(label, str(value)) for label, value in shown if value not in (None, "", [])]


def _loras(value: Any) -> str | None:
    """`[[file, strength], ...]` as "file (0.8), other (1)"."""
    if not value:
        return None
    parts = []
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, list | tuple) and len(item) == 2:
            parts.append(f"{item[0]} ({item[1]:g})" if isinstance(item[1], int | float) else f"{item[0]} ({item[1]})")
        elif isinstance(item, dict):
            parts.append(f"{item.get('name', '?')} ({item.get('strength', item.get('weight', 1))})")
        else:
            parts.append(str(item))
    return ", ".join(parts)


def _placeholder(text: str) -> web.Response:
    """A small grey SVG image saying `text`, in place of an image that cannot be shown."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="320" height="320" viewBox="0 0 320 320">'
           '<rect width="320" height="320" fill="#2b2d31"/>'
           '<text x="160" y="165" fill="#b5bac1" font-family="sans-serif" font-size="18" text-anchor="middle">'
           f'{text}</text></svg>')
    return web.Response(body=svg.encode(), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, no-cache"})
