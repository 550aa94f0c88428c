"""The public page of a shared result (web/shares.py): its tags, as a crawler that unfurls links parses
them, its files, and the 404 it becomes at once when the share is revoked or the result deleted.

The app runs on 127.0.0.1 through aiohttp's test server, on a real Store with real PNG files; the tags
are read with the standard library's HTML parser, as Discord's, X's and Mastodon's crawlers read them.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from links import LinkError, share_token, share_url, verify_share
from store import Generation, Store
from tests.conftest import make_settings
from web.app import SECURITY_HEADERS, make_app

SECRET = "test-secret-for-share-links"
BASE = "https://pictures.example.org/bot"
OWNER, MODERATOR, GUILD = 3001, 3002, 7001
PROMPT = 'a red fox in snow, "golden hour" <b>bold</b> & more'
CDN = "https://cdn.discordapp.com/attachments/1/2/fox.png"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class Tags(HTMLParser):
    """The <meta> tags (by property or name), the <title> and every img/video src of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title, self.sources, self.scripts, self._in_title = "", [], 0, False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and (key := values.get("property") or values.get("name")):
            self.meta[key] = values.get("content") or ""
        elif tag in ("img", "video"):
            self.sources.append(values.get("src"))
        elif tag == "script":
            self.scripts += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


class Site:
    """A store, an output folder and the app, with helpers to add and share results."""

    def __init__(self, tmp_path: Path, store: Store, client: TestClient, settings) -> None:
        self.outputs, self.store, self.client, self.settings = tmp_path / "outputs", store, client, settings

    async def add(self, files: dict[str, bytes], prompt: str = PROMPT, urls: list[str] | None = None) -> Generation:
        for name, data in files.items():
            (self.outputs / name).write_bytes(data)
        return await self.store.add_generation(Generation(
            id=None, job_id=None, kind="txt2img", user_id=OWNER, guild_id=GUILD, channel_id=5,
            params={"prompt": prompt, "negative_prompt": "secret negative words", "width": 512, "height": 768,
                    "seed": 123456789}, files=list(files), server="s", duration=1.0, attachment_urls=urls or []))

    async def share(self, generation: Generation, show_prompt: bool) -> str:
        """The path of the result's page."""
        share = await self.store.share_result(generation.id, GUILD, OWNER, show_prompt)
        return "/s/" + share_token(SECRET, share.token)

    async def get(self, path: str):
        return await self.client.get(path, allow_redirects=False)


@pytest.fixture
async def site(tmp_path: Path):
    settings = make_settings(tmp_path, web_secret=SECRET, web_base_url=BASE)
    settings.outputs_dir.mkdir(parents=True)
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    client = TestClient(TestServer(make_app(store, settings), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Site(tmp_path, store, client, settings)
    finally:
        await client.close()
        await store.close()


def test_a_share_token_is_its_id_then_its_signature():
    made = share_token(SECRET, "A" * 20)
    assert len(made) == 40 and made.startswith("A" * 20) and verify_share(SECRET, made) == "A" * 20
    changed = [made[:30] + ("B" if made[30] != "B" else "C") + made[31:], "B" + made[1:], made[:-1], made + "A",
               share_token("another installation", "A" * 20), "A" * 39 + "=", "Ä" * 40]
    for bad in changed:
        with pytest.raises(LinkError):
            verify_share(SECRET, bad)
    with pytest.raises(ValueError):
        share_token(SECRET, "short")


async def test_the_page_unfurls_with_the_image_and_the_prompt_when_chosen(site):
    made = await site.add({"fox.png": png(640, 360)})
    path = await site.share(made, show_prompt=True)
    response = await site.get(path)
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    html = await response.text()
    tags = Tags(html)
    image = f"{BASE}{path}/file/0"
    assert tags.meta == {
        "viewport": "width=device-width, initial-scale=1", "referrer": "no-referrer", "robots": "noindex, nofollow",
        "description": PROMPT, "og:site_name": "ComfyUI", "og:title": PROMPT, "og:description": PROMPT,
        "og:url": f"{BASE}{path}", "og:type": "website", "og:image": image, "og:image:type": "image/png",
        "og:image:width": "640", "og:image:height": "360",  # the file's own size, not the request's
        "og:image:alt": PROMPT, "twitter:card": "summary_large_image", "twitter:title": PROMPT,
        "twitter:description": PROMPT, "twitter:image": image, "twitter:image:alt": PROMPT}
    assert tags.title == PROMPT and tags.scripts == 0
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html  # escaped everywhere
    assert "secret negative words" not in html and "123456789" not in html  # only the prompt, when chosen
    (source,) = tags.sources
    assert source == f"..{path}/file/0"
    served = await site.get(f"{path}/file/0")
    assert served.status == 200 and served.content_type == "image/png"
    assert await served.read() == (site.outputs / "fox.png").read_bytes()
    assert served.headers["Cache-Control"] == "no-store"
    for head in (path, f"{path}/file/0"):  # some crawlers ask with HEAD first
        assert (await site.client.head(head)).status == 200


async def test_without_the_prompt_the_page_says_a_neutral_line(site):
    made = await site.add({"fox.png": png(64, 48)}, prompt="my private prompt")
    html = await (await site.get(await site.share(made, show_prompt=False))).text()
    tags = Tags(html)
    assert "my private prompt" not in html
    assert tags.meta["og:title"] == "A shared picture" == tags.title
    assert tags.meta["og:description"] == "A picture made with ComfyUI, shared from Discord." == tags.meta["og:image:alt"]
    assert tags.meta["twitter:card"] == "summary_large_image"


async def test_a_long_prompt_is_clipped_in_the_title_and_whole_on_the_page(site):
    prompt = "a lighthouse on a cliff at dusk, " * 20
    made = await site.add({"fox.png": png(64, 48)}, prompt=prompt)
    html = await (await site.get(await site.share(made, show_prompt=True))).text()
    tags = Tags(html)
    assert len(tags.meta["og:title"]) == 70 and tags.meta["og:title"].endswith("…")
    assert len(tags.meta["og:description"]) == 300 and prompt.strip() in html


async def test_a_video_unfurls_as_a_video(site):
    made = await site.add({"clip.mp4": b"\x00\x00\x00\x18ftypmp42 not really a video"})
    path = await site.share(made, show_prompt=False)
    tags = Tags(await (await site.get(path)).text())
    assert tags.meta["og:video"] == tags.meta["og:video:secure_url"] == f"{BASE}{path}/file/0"
    assert tags.meta["og:video:type"] == "video/mp4" and tags.meta["og:type"] == "video.other"
    assert (tags.meta["og:video:width"], tags.meta["og:video:height"]) == ("512", "768")
    assert "og:image" not in tags.meta and tags.meta["twitter:card"] == "summary"
    assert tags.meta["og:title"] == "A shared video"
    served = await site.get(f"{path}/file/0")
    assert served.status == 200 and served.content_type == "video/mp4"


async def test_every_file_of_a_batch_is_on_the_page_and_the_first_image_unfurls(site):
    made = await site.add({"a.png": png(32, 32), "b.png": png(48, 32), "c.png": png(64, 32)})
    path = await site.share(made, show_prompt=True)
    tags = Tags(await (await site.get(path)).text())
    assert tags.sources == [f"..{path}/file/{index}" for index in range(3)]
    assert tags.meta["og:image"].endswith("/file/0") and tags.meta["og:image:width"] == "32"
    assert (await site.get(f"{path}/file/3")).status == 404


async def test_revoking_or_deleting_makes_the_page_and_its_files_404_at_once(site):
    unknown = await site.get("/s/" + share_token(SECRET, "Z" * 20))  # well signed, never made
    nowhere = await site.get("/nowhere/at-all")  # any unknown page at the same depth
    assert unknown.status == nowhere.status == 404
    not_found = await unknown.text()
    assert not_found == await nowhere.text()

    kept = await site.add({"kept.png": png(64, 48)})
    doomed = await site.add({"doomed.png": png(64, 48)})
    revoked_path, deleted_path = await site.share(kept, True), await site.share(doomed, False)
    for path in (revoked_path, f"{revoked_path}/file/0", deleted_path, f"{deleted_path}/file/0"):
        assert (await site.get(path)).status == 200
    share_id = revoked_path.removeprefix("/s/")[:20]
    assert await site.store.revoke_share(share_id, MODERATOR)
    await site.store.mark_deleted(doomed.id)
    for path in (revoked_path, f"{revoked_path}/file/0", deleted_path, f"{deleted_path}/file/0"):
        response = await site.get(path)
        assert response.status == 404 and response.headers["Cache-Control"] == "no-store"
        if path.count("/") == 2:
            assert await response.text() == not_found  # the same page as any unknown one
    # a changed signature is a made-up link, not a hint that the share exists
    forged = f"/s/{share_id}{'A' * 20}"
    assert (await site.get(forged)).status == 404


async def test_a_file_no_longer_kept_comes_from_discord_else_404(site):
    on_discord = await site.add({"gone.png": png(64, 48)}, urls=[CDN])
    nowhere = await site.add({"lost.png": png(64, 48)})
    (site.outputs / "gone.png").unlink()
    (site.outputs / "lost.png").unlink()
    moved = await site.get(f"{await site.share(on_discord, False)}/file/0")
    assert moved.status == 302 and moved.headers["Location"] == CDN
    assert (await site.get(f"{await site.share(nowhere, False)}/file/0")).status == 404


def test_the_link_for_discord_is_absolute_under_web_base_url(tmp_path):
    settings = make_settings(tmp_path, web_secret=SECRET, web_base_url=BASE + "/")
    assert share_url(settings, SECRET, "Q" * 20) == f"{BASE}/s/{share_token(SECRET, 'Q' * 20)}"
    assert verify_share(SECRET, share_url(settings, SECRET, "Q" * 20).rpartition("/")[2]) == "Q" * 20
