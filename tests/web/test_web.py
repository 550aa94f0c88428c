"""Tests for the gallery web app (web/): signed links, who sees what, pages, files and thumbnails.

The app runs on 127.0.0.1 through aiohttp's test server, on a real Store in tmp_path with real PNG
files in the output folder.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from store import Generation, Store
from tests.conftest import make_settings
from web import thumbs as thumbs_module
from web.app import SECURITY_HEADERS, WebServer, make_app
from web.gallery import GALLERY
from links import LinkError, gallery_url, sign, verify

SECRET = "test-secret-for-links"
ALICE, BOB = 1001, 1002
GUILD, OTHER_GUILD = 5001, 5002
CDN = "https://cdn.discordapp.com/attachments/1/2/result.png"


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def token(user_id: int = ALICE, guild_id: int | None = GUILD, hours: float = 1.0, secret: str = SECRET) -> str:
    return sign(secret, user_id, guild_id, time.time() + hours * 3600)


class Gallery:
    """A store, an output folder and the app under test, with helpers to add results."""

    def __init__(self, tmp_path: Path, store: Store, client: TestClient) -> None:
        self.tmp_path = tmp_path
        self.outputs = tmp_path / "outputs"
        self.store = store
        self.client = client
        self._files = 0

    async def add(self, prompt: str = "a red fox in snow", *, user_id: int = ALICE, guild_id: int | None = GUILD,
                  files: list[str] | None = None, write: bool = True, urls: list[str] | None = None,
                  **params) -> Generation:
        if files is None:
            self._files += 1
            files = [f"20250101-000000-{self._files:06d}-result.png"]
        if write:
            for name in files:
                if "/" not in name and not name.startswith("."):
                    (self.outputs / name).write_bytes(png())
        generation = Generation(
            id=None, job_id=None, kind="txt2img", user_id=user_id, guild_id=guild_id, channel_id=7001,
            params={"prompt": prompt, "negative_prompt": "blurry", "model": "sdxl", "width": 512, "height": 768,
                    "seed": 42, "steps": 25, "cfg": 7.5, "style": "watercolor", "loras": [["detail.safetensors", 0.8]],
                    **params},
            files=files, server="http://127.0.0.1:8188", duration=3.0, message_id=9001,
            attachment_urls=urls if urls is not None else [],
        )
        return await self.store.add_generation(generation)

    async def get(self, path: str, **kwargs):
        return await self.client.get(path, allow_redirects=False, **kwargs)


@pytest.fixture
async def gallery(tmp_path: Path):
    settings = make_settings(tmp_path, web_secret=SECRET)
    settings.outputs_dir.mkdir(parents=True)
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    client = TestClient(TestServer(make_app(store, settings), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Gallery(tmp_path, store, client)
    finally:
        await client.close()
        await store.close()


def ids_on(html: str) -> set[int]:
    """The result ids the grid links to."""
    return {int(found) for found in re.findall(r'href="[^"]*/r/(\d+)"', html)}


# --- links ---------------------------------------------------------------------------------------


def test_link_round_trip():
    now = time.time()
    for guild_id in (GUILD, None, 2**63):
        made = sign(SECRET, 2**64 - 1, guild_id, now + 60)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", made) and len(made) < 200
        assert verify(SECRET, made, now) == (2**64 - 1, guild_id)


def test_link_expired():
    made = sign(SECRET, ALICE, GUILD, 1000.0)
    assert verify(SECRET, made, 999.0) == (ALICE, GUILD)
    for now in (1000.0, 1e9):
        with pytest.raises(LinkError) as caught:
            verify(SECRET, made, now)
        assert caught.value.reason == "expired"


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


def test_link_tampered_payload_and_signature():
    made = token()
    raw = bytearray(base64.urlsafe_b64decode(made + "="))
    raw[8] ^= 1  # another user id, same signature
    changed = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in (changed, flip(made, 3), flip(made, 20), flip(made, 40), flip(made, len(made) - 2), flip(made, len(made) - 1)):
        with pytest.raises(LinkError) as caught:
            verify(SECRET, bad, time.time())
        assert caught.value.reason == "not valid"
    with pytest.raises(LinkError):  # another installation's secret
        verify("another secret", made, time.time())
    with pytest.raises(LinkError):  # an expired link that was also changed is simply not valid
        verify(SECRET, flip(sign(SECRET, ALICE, GUILD, 1000.0), 5), 2000.0)


GOOD = token()


@pytest.mark.parametrize("garbage", ["", "x", "abc$", "é" * 71, "=" * 71, "A" * 71, "A" * 72, "A" * 500, GOOD[:-1],
                                     GOOD + "A", GOOD[:5] + "+" + GOOD[6:], GOOD[:5] + "/" + GOOD[6:],
                                     GOOD[:5] + "." + GOOD[6:], GOOD[:5] + " " + GOOD[6:], GOOD + "=", "\x00" * 71])
def test_link_garbage(garbage):
    with pytest.raises(LinkError) as caught:
        verify(SECRET, garbage, time.time())
    assert caught.value.reason == "not valid"


def test_gallery_url(tmp_path):
    settings = make_settings(tmp_path, web_base_url="https://bot.example.org/", gallery_link_hours=2)
    url = gallery_url(settings, SECRET, ALICE, GUILD, 1_000_000.0)
    assert url.startswith("https://bot.example.org/g/")
    made = url.rsplit("/", 1)[1]
    assert verify(SECRET, made, 1_000_000.0 + 2 * 3600 - 1) == (ALICE, GUILD)
    with pytest.raises(LinkError):
        verify(SECRET, made, 1_000_000.0 + 2 * 3600)
    local = gallery_url(make_settings(tmp_path, web_port=8080), SECRET, ALICE, None, 0.0)
    assert local.startswith("http://127.0.0.1:8080/g/")
    with pytest.raises(ValueError):  # the web app is off
        gallery_url(make_settings(tmp_path), SECRET, ALICE, GUILD, 0.0)


# --- who sees what -------------------------------------------------------------------------------


async def test_grid_shows_only_that_person_in_that_server(gallery):
    mine = [await gallery.add(f"fox number {n}") for n in range(3)]
    bob = await gallery.add("bob's fox", user_id=BOB)
    elsewhere = await gallery.add("fox elsewhere", guild_id=OTHER_GUILD)
    direct = await gallery.add("fox in a DM", guild_id=None)
    deleted = await gallery.add("deleted fox")
    await gallery.store.mark_deleted(deleted.id)

    response = await gallery.get(f"/g/{token()}")
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert ids_on(html) == {result.id for result in mine}
    for absent in ("bob&#39;s fox", "bob's fox", "fox elsewhere", "fox in a DM", "deleted fox"):
        assert absent not in html
    # newest first
    assert [int(found) for found in re.findall(r'/r/(\d+)"', html)] == [result.id for result in reversed(mine)]
    assert '<meta name="viewport"' in html

    assert ids_on(await (await gallery.get(f"/g/{token(guild_id=None)}")).text()) == {direct.id}
    assert ids_on(await (await gallery.get(f"/g/{token(BOB)}")).text()) == {bob.id}
    assert ids_on(await (await gallery.get(f"/g/{token(guild_id=OTHER_GUILD)}")).text()) == {elsewhere.id}


async def test_no_link_reaches_another_result(gallery):
    mine = await gallery.add()
    bob = await gallery.add("bob's", user_id=BOB)
    elsewhere = await gallery.add("elsewhere", guild_id=OTHER_GUILD)
    direct = await gallery.add("direct", guild_id=None)
    deleted = await gallery.add("deleted")
    await gallery.store.mark_deleted(deleted.id)
    link = token()
    for other in (bob, elsewhere, direct, deleted):
        for suffix in ("", "/file/0", "/thumb/0"):
            response = await gallery.get(f"/g/{link}/r/{other.id}{suffix}")
            assert response.status == 404, (other.id, suffix)
            assert "text/html" in response.headers["Content-Type"]
            assert "There is no such result" in await response.text()
        response = await gallery.client.post(f"/g/{link}/r/{other.id}/favorite", data={"on": "1"},
                                              allow_redirects=False)
        assert response.status == 404
        assert await gallery.store.favorite_ids(ALICE, [other.id]) == set()
    for missing in (999999, 0, 10**18, 9999999999999999999):
        assert (await gallery.get(f"/g/{link}/r/{missing}")).status == 404
    assert (await gallery.get(f"/g/{link}/r/{mine.id}")).status == 200
    assert (await gallery.get(f"/g/{link}/r/{mine.id}/file/1")).status == 404  # only one file


async def test_refused_links_get_a_readable_403(gallery):
    result = await gallery.add()
    expired = sign(SECRET, ALICE, GUILD, time.time() - 1)
    tampered = flip(token(), 10)
    for link, words in ((expired, "expired"), (tampered, "not valid"), ("garbage", "not valid")):
        for path in (f"/g/{link}", f"/g/{link}/r/{result.id}", f"/g/{link}/r/{result.id}/file/0",
                     f"/g/{link}/r/{result.id}/thumb/0"):
            response = await gallery.get(path)
            assert response.status == 403, path
            assert response.content_type == "text/html"
            html = await response.text()
            assert words in html and "/gallery" in html and "Discord" in html and "<html" in html
            assert b"\x89PNG" not in await response.read()
        response = await gallery.client.post(f"/g/{link}/r/{result.id}/favorite", data={"on": "1"},
                                              allow_redirects=False)
        assert response.status == 403
    assert await gallery.store.favorite_ids(ALICE, [result.id]) == set()


async def test_link_signed_with_the_databases_secret(tmp_path):
    settings = make_settings(tmp_path)  # no WEB_SECRET
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    try:
        async with TestClient(TestServer(make_app(store, settings), host="127.0.0.1")) as client:
            secret = await store.link_secret()
            assert (await client.get(f"/g/{token(secret=secret)}")).status == 200
            assert (await client.get(f"/g/{token(secret=SECRET)}")).status == 403
    finally:
        await store.close()


async def test_unknown_pages_are_readable_404s_with_security_headers(gallery):
    result = await gallery.add()
    link = token()
    paths = ["/", "/nothing", f"/g/{link}/r/abc", f"/g/{link}/r/{result.id}/file/x", "/static/../app.py",
             "/static/app.py", f"/g/{link}/r/{result.id}/file/..%2F..%2Fapp.py"]
    for path in paths:
        response = await gallery.get(path)
        assert response.status == 404, path
        assert "Not found" in await response.text()
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value


async def test_security_headers_everywhere(gallery):
    result = await gallery.add()
    pruned = await gallery.add(write=False, urls=[CDN])
    link = token()
    for path in (f"/g/{link}", f"/g/{link}/r/{result.id}", f"/g/{link}/r/{result.id}/file/0",
                 f"/g/{link}/r/{result.id}/thumb/0", f"/g/{link}/r/{pruned.id}/file/0", "/static/style.css",
                 "/g/bad"):
        response = await gallery.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, path
    assert SECURITY_HEADERS["Content-Security-Policy"] == (
        "default-src 'none'; img-src 'self' https://cdn.discordapp.com https://media.discordapp.net; "
        "media-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'")


async def test_stylesheet(gallery):
    response = await gallery.get("/static/style.css")
    assert response.status == 200 and response.content_type == "text/css"
    assert ".grid" in await response.text()


# --- grid ----------------------------------------------------------------------------------------


async def test_search(gallery):
    fox = await gallery.add("a red fox in the snow")
    foxes = await gallery.add("two foxes playing")
    await gallery.add("a castle at night", negative_prompt="fog")
    fog = await gallery.add("harbour", negative_prompt="no fog please")
    link = token()
    assert ids_on(await (await gallery.get(f"/g/{link}", params={"q": "fox"})).text()) == {fox.id, foxes.id}
    assert ids_on(await (await gallery.get(f"/g/{link}", params={"q": "red snow"})).text()) == {fox.id}
    assert ids_on(await (await gallery.get(f"/g/{link}", params={"q": "fog"})).text()) >= {fog.id}
    html = await (await gallery.get(f"/g/{link}", params={"q": "unicorn"})).text()
    assert ids_on(html) == set() and "Nothing matches" in html and "unicorn" in html
    html = await (await gallery.get(f"/g/{link}", params={"q": '"); DROP TABLE generations; --'})).text()
    assert ids_on(html) == set()
    html = await (await gallery.get(f"/g/{link}", params={"q": "<script>alert(1)</script>"})).text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert len(ids_on(await (await gallery.get(f"/g/{link}", params={"q": "  "})).text())) == 4


async def test_paging(gallery):
    made = [await gallery.add(f"fox {n}", files=[f"f{n}.png"], write=False) for n in range(65)]
    link = token()
    html = await (await gallery.get(f"/g/{link}")).text()
    assert ids_on(html) == {result.id for result in made[5:]}
    assert "Older" in html and "Newer" not in html and "1–60 of 65" in html
    older = re.search(r'href="([^"]*page=2[^"]*)"', html).group(1).replace("&amp;", "&")
    page_two = await (await gallery.get("/g/" + older.split("g/", 1)[1])).text()
    assert ids_on(page_two) == {result.id for result in made[:5]}
    assert "Newer" in page_two and "Older" not in page_two
    for weird in ("0", "-3", "abc", "99999999999999999999"):
        assert (await gallery.get(f"/g/{link}", params={"page": weird})).status == 200
    assert "past the end" in await (await gallery.get(f"/g/{link}", params={"page": "9"})).text()
    html = await (await gallery.get(f"/g/{link}", params={"q": "fox", "page": "2"})).text()
    assert "q=fox" in html and ids_on(html) == {result.id for result in made[:5]}


async def test_favorites_round_trip(gallery):
    first = await gallery.add("first")
    second = await gallery.add("second")
    link = token()
    response = await gallery.client.post(f"/g/{link}/r/{first.id}/favorite", data={"on": "1"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"../../../../g/{link}/r/{first.id}"
    assert await gallery.store.favorite_ids(ALICE, [first.id, second.id]) == {first.id}

    html = await (await gallery.get(f"/g/{link}")).text()
    tiles = re.findall(r'<li class="tile">.*?</li>', html, re.S)
    starred = {int(re.search(r"/r/(\d+)", tile).group(1)) for tile in tiles if "★" in tile}
    assert starred == {first.id}
    assert ids_on(await (await gallery.get(f"/g/{link}", params={"fav": "1"})).text()) == {first.id}

    detail = await (await gallery.client.get(f"/g/{link}/r/{first.id}/favorite", allow_redirects=False)).text()
    assert "Not found" in detail or "405" in detail  # GET does not change anything
    html = await (await gallery.client.post(f"/g/{link}/r/{first.id}/favorite", data={"on": "1"})).text()
    assert "Remove from favorites" in html  # followed the redirect to the detail page; idempotent
    await gallery.client.post(f"/g/{link}/r/{first.id}/favorite", data={})  # no value: toggles
    assert await gallery.store.favorite_ids(ALICE, [first.id]) == set()
    await gallery.client.post(f"/g/{link}/r/{first.id}/favorite", data={})
    assert await gallery.store.favorite_ids(ALICE, [first.id]) == {first.id}
    await gallery.client.post(f"/g/{link}/r/{first.id}/favorite", data={"on": "0"})
    html = await (await gallery.get(f"/g/{link}", params={"fav": "1"})).text()
    assert ids_on(html) == set() and "Nothing matches" in html


# --- detail --------------------------------------------------------------------------------------


async def test_detail_page(gallery):
    result = await gallery.add("a <b>bold</b> fox & friends", user_id=ALICE)
    html = await (await gallery.get(f"/g/{token()}/r/{result.id}")).text()
    for shown in ("a &lt;b&gt;bold&lt;/b&gt; fox &amp; friends", "blurry", "sdxl", "512 × 768", "42", "25", "7.5",
                  "watercolor", "detail.safetensors (0.8)", time.strftime("%Y-%m-%d", time.gmtime()),
                  f"https://discord.com/channels/{GUILD}/7001/9001", f'/r/{result.id}/file/0"',
                  'method="post"', "Add to favorites", "← Your gallery"):
        assert shown in html, shown
    assert "<b>bold" not in html and "<script" not in html
    direct = await gallery.add("dm", guild_id=None)
    html = await (await gallery.get(f"/g/{token(guild_id=None)}/r/{direct.id}")).text()
    assert "https://discord.com/channels/@me/7001/9001" in html


async def test_detail_with_several_files_and_a_video(gallery):
    for name in ("a.png", "b.png"):
        (gallery.outputs / name).write_bytes(png())
    (gallery.outputs / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42fake video")
    result = await gallery.add("moving fox", files=["a.png", "b.png", "clip.mp4"], write=False)
    link = token()
    html = await (await gallery.get(f"/g/{link}/r/{result.id}")).text()
    for index in range(3):
        assert f"{result.id}/file/{index}" in html
    assert "<video controls" in html and "File 3 of 3" in html
    response = await gallery.get(f"/g/{link}/r/{result.id}/file/2")
    assert response.content_type == "video/mp4" and await response.read() == (gallery.outputs / "clip.mp4").read_bytes()
    thumb = await gallery.get(f"/g/{link}/r/{result.id}/thumb/2")
    assert thumb.status == 200 and thumb.content_type == "image/svg+xml"

    video = await gallery.add("just a video", files=["clip.mp4"], write=False)
    grid = await (await gallery.get(f"/g/{link}")).text()
    tile = re.search(rf'<li class="tile">\s*<a href="[^"]*/r/{video.id}".*?</li>', grid, re.S).group(0)
    assert "video" in tile and "<img" not in tile


# --- files and thumbnails ------------------------------------------------------------------------


async def test_file_and_thumbnail(gallery, monkeypatch):
    name = "big.png"
    (gallery.outputs / name).write_bytes(png(1000, 500))
    result = await gallery.add(files=[name], write=False)
    link = token()
    response = await gallery.get(f"/g/{link}/r/{result.id}/file/0")
    assert response.status == 200 and response.content_type == "image/png"
    assert response.headers["Cache-Control"] == "private"
    assert await response.read() == (gallery.outputs / name).read_bytes()

    renders = []
    real = thumbs_module._render

    def counted(source, target):
        renders.append(source.name)
        time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
        return real(source, target)

    monkeypatch.setattr(thumbs_module, "_render", counted)
    responses = await asyncio.gather(*(gallery.get(f"/g/{link}/r/{result.id}/thumb/0") for _ in range(6)))
    assert renders == [name]  # made once, though asked for six times at once
    bodies = {await response.read() for response in responses}
    assert len(bodies) == 1
    for response in responses:
        assert response.status == 200 and response.content_type == "image/webp"
        assert response.headers["Cache-Control"] == "private"
    with Image.open(io.BytesIO(bodies.pop())) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (320, 160)
    assert (gallery.tmp_path / "data" / "thumbs" / f"{name}.webp").is_file()
    await gallery.get(f"/g/{link}/r/{result.id}/thumb/0")
    assert renders == [name]  # cached on disk
    assert gallery.client.app[GALLERY].thumbs._locks == {}


async def test_thumbnails_refuse_bombs_and_damaged_files(gallery, monkeypatch):
    (gallery.outputs / "damaged.png").write_bytes(png()[:40])
    damaged = await gallery.add(files=["damaged.png"], write=False)
    bomb = await gallery.add(files=["bomb.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    link = token()
    for result in (damaged, bomb):
        response = await gallery.get(f"/g/{link}/r/{result.id}/thumb/0")
        assert response.status == 200 and response.content_type == "image/svg+xml"
    assert not (gallery.tmp_path / "data" / "thumbs" / "bomb.png.webp").exists()
    thumbs = thumbs_module.Thumbnails(gallery.outputs, gallery.tmp_path / "t")
    assert await thumbs.get("bomb.png") is None
    assert await thumbs.get("missing.png") is None
    assert await thumbs.get("../outputs/bomb.png") is None
    assert await thumbs.get("clip.webm") is None


async def test_pruned_file_redirects_to_discord_or_shows_a_placeholder(gallery):
    on_discord = await gallery.add(write=False, urls=[CDN])
    nowhere = await gallery.add(write=False)
    elsewhere = await gallery.add(write=False, urls=["https://evil.example/x.png"])
    link = token()
    for kind in ("file", "thumb"):
        response = await gallery.get(f"/g/{link}/r/{on_discord.id}/{kind}/0")
        assert response.status == 302 and response.headers["Location"] == CDN
        for result in (nowhere, elsewhere):
            response = await gallery.get(f"/g/{link}/r/{result.id}/{kind}/0")
            assert response.status == 200 and response.content_type == "image/svg+xml"
            assert "private" in response.headers["Cache-Control"]
            assert b"no longer kept" in await response.read()
    html = await (await gallery.get(f"/g/{link}/r/{nowhere.id}")).text()
    assert "no longer kept by the bot" in html and "/file/0" not in html
    html = await (await gallery.get(f"/g/{link}/r/{on_discord.id}")).text()
    assert "shown from Discord" in html and f"{on_discord.id}/file/0" in html


async def test_pruned_file_loses_its_cached_thumbnail(gallery):
    result = await gallery.add()
    link = token()
    assert (await gallery.get(f"/g/{link}/r/{result.id}/thumb/0")).content_type == "image/webp"
    cached = gallery.tmp_path / "data" / "thumbs" / f"{result.files[0]}.webp"
    assert cached.is_file()
    (gallery.outputs / result.files[0]).unlink()
    assert (await gallery.get(f"/g/{link}/r/{result.id}/thumb/0")).content_type == "image/svg+xml"
    thumbs = gallery.client.app[GALLERY].thumbs
    assert await thumbs.get(result.files[0]) is None and not cached.exists()


@pytest.mark.parametrize("stored", ["../secret.png", "../../secret.png", "/etc/passwd", "sub/../../secret.png",
                                    "..", ".", "", ".hidden.png", "..\\secret.png", "a\x00.png", "link.png"])
async def test_stored_names_cannot_leave_the_output_folder(gallery, stored):
    (gallery.tmp_path / "secret.png").write_bytes(png(color=(1, 2, 3)))
    (gallery.outputs / ".hidden.png").write_bytes(png())
    (gallery.outputs / "link.png").symlink_to(gallery.tmp_path / "secret.png")
    result = await gallery.add(files=[stored], write=False, urls=[CDN])
    link = token()
    for kind in ("file", "thumb"):
        response = await gallery.get(f"/g/{link}/r/{result.id}/{kind}/0")
        assert response.status == 404, kind
        assert b"\x89PNG" not in await response.read()
    assert (await gallery.get(f"/g/{link}/r/{result.id}")).status == 200  # the page itself still shows
    assert not (gallery.tmp_path / "data" / "thumbs").exists() or not any((gallery.tmp_path / "data" / "thumbs").iterdir())


# --- the server ----------------------------------------------------------------------------------


async def test_web_server_runs_in_this_loop(tmp_path):
    settings = make_settings(tmp_path, web_secret=SECRET)
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    off = WebServer(store, settings)
    await off.start()  # no WEB_PORT: the web app is off
    assert off.port is None
    await off.stop()
    server = WebServer(store, settings, port=0)
    await server.start()
    try:
        assert server.port and server.url == f"http://127.0.0.1:{server.port}"
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
        writer.write(f"GET /g/{token()} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and b"No results yet" in reply
    finally:
        await server.stop()
        await server.stop()
        await store.close()
