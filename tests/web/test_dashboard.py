"""Tests for the admin dashboard (web/dashboard.py): admin links, the page, the charts, the forms and
their CSRF token, and what is refused.

The app runs with WebServer(port=0) on 127.0.0.1, on a Store in tmp_path, with a fake AdminPanel that
records every call; requests go over real HTTP with aiohttp's client.
"""

from __future__ import annotations

import base64
import inspect
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest

from store import Store
from tests.conftest import make_settings
from web.app import SECURITY_HEADERS, WebServer
from web.dashboard import ACTIONS, AdminPanel, csrf_token
from links import LinkError, dashboard_url, sign, sign_admin, verify, verify_admin

SECRET = "dashboard-test-secret"
ALICE, GUILD = 3001, 5001
FAILED_AT = 1_764_300_000.0
REPORTED_AT = 1_764_310_000.0
DISCORD_LINK = "https://discord.com/channels/5001/7001/9001"


def usage(days: int = 30, start: date = date(2026, 11, 1)) -> list[dict]:
    """`days` days of usage, oldest first; the first day has none."""
    return [{"day": (start + timedelta(days=n)).isoformat(), "images": n % 7 * 3, "gpu_seconds": float(n * 10 % 97),
             "cost": round(n * 0.05, 2)} for n in range(days)]


def sample() -> dict:
    return {
        "paused": False, "paused_everywhere": False, "waiting": 4, "running": 2,
        "queue": [
            {"kind": "txt2img", "user_id": 4001, "state": "running", "position": None, "prompt": "a lighthouse at dusk"},
            {"kind": "upscale", "user_id": 4002, "state": "waiting", "position": 1, "prompt": "<b>bold</b> fox & friends"},
        ],
        "servers": [
            {"number": 1, "label": "gpu-alpha", "up": True, "problem": None, "load": 1, "capacity": 2, "drained": False},
            {"number": 2, "label": "gpu-beta", "up": False, "problem": "connection refused", "load": 0, "capacity": 1,
             "drained": False},
            {"number": 3, "label": "gpu-gamma", "up": True, "problem": "no checkpoint sdxl.safetensors", "load": 0,
             "capacity": 3, "drained": True},
        ],
        "usage_by_day": usage(),
        "currency": "EUR",
        "failures": [{"at": FAILED_AT, "kind": "animate", "user_id": 4003, "error": "ComfyUI ran out of memory"}],
        "reports": [
            {"at": REPORTED_AT, "reporter_id": 4004, "author_id": 4005, "generation_id": 77, "link": DISCORD_LINK},
            {"at": REPORTED_AT - 60, "reporter_id": 4006, "author_id": 4007, "generation_id": 78, "link": None},
            {"at": REPORTED_AT - 120, "reporter_id": 4008, "author_id": 4009, "generation_id": 79,
             "link": "javascript:alert(1)"},
        ],
        "blocked": [{"user_id": 4010, "reason": "spam <script>alert(1)</script>"}],
    }


class FakePanel:
    """An AdminPanel that records its calls; `act` answers from `replies` or raises `error`."""

    def __init__(self, data: dict | None = None) -> None:
        self.data = sample() if data is None else data
        self.overviews: list[int | None] = []
        self.calls: list[tuple[int | None, int, str, str]] = []
        self.error: str | None = None

    async def overview(self, guild_id: int | None) -> dict:
        self.overviews.append(guild_id)
        return self.data

    async def act(self, guild_id: int | None, actor_id: int, action: str, value: str) -> str:
        self.calls.append((guild_id, actor_id, action, value))
        if self.error is not None:
            raise ValueError(self.error)
        if action in ("pause", "resume"):
            self.data["paused"] = action == "pause"
        return {"pause": "Paused.", "resume": "Resumed."}.get(action, f"Done: {action} {value}.")


class Site:
    def __init__(self, server: WebServer, store: Store, session: aiohttp.ClientSession,
                 panel: FakePanel | None) -> None:
        self.server, self.store, self.session, self.panel = server, store, session, panel

    def url(self, path: str) -> str:
        return self.server.url + path

    async def get(self, path: str, **kwargs) -> tuple[aiohttp.ClientResponse, str]:
        async with self.session.get(self.url(path), allow_redirects=False, **kwargs) as response:
            return response, await response.text()

    async def post(self, path: str, data, **kwargs) -> tuple[aiohttp.ClientResponse, str]:
        async with self.session.post(self.url(path), data=data, allow_redirects=False, **kwargs) as response:
            return response, await response.text()

    async def form_token(self, link: str) -> str:
        _, html = await self.get(f"/admin/{link}")
        return re.search(r'name="csrf" value="([^"]+)"', html).group(1)

    async def follow(self, path: str, response: aiohttp.ClientResponse) -> tuple[aiohttp.ClientResponse, str]:
        """GET the page a 303 answer sends back to (its Location is relative to `path`)."""
        target = urljoin(self.url(path), response.headers["Location"])
        async with self.session.get(target, allow_redirects=False) as page:
            return page, await page.text()


async def serve(tmp_path: Path, panel: FakePanel | None, **settings) -> AsyncIterator[Site]:
    config = make_settings(tmp_path, **{"web_secret": SECRET, **settings})
    store = Store(config.data_dir / "bot.sqlite3")
    await store.open()
    server = WebServer(store, config, port=0, admin=panel)
    await server.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Site(server, store, session, panel)
    finally:
        await session.close()
        await server.stop()
        await store.close()


@pytest.fixture
async def site(tmp_path: Path):
    async for made in serve(tmp_path, FakePanel()):
        yield made


def admin_link(user_id: int = ALICE, guild_id: int | None = GUILD, hours: float = 1.0, secret: str = SECRET) -> str:
    return sign_admin(secret, user_id, guild_id, time.time() + hours * 3600)


def gallery_link(user_id: int = ALICE, guild_id: int | None = GUILD) -> str:
    return sign(SECRET, user_id, guild_id, time.time() + 3600)


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


def bars(html: str, chart: str) -> list[dict[str, float]]:
    """The bars of one chart: x, y, width and height of each <rect class="bar">."""
    figure = re.search(rf'<figure class="chart chart-{chart}">.*?</figure>', html, re.S).group(0)
    return [{key: float(value) for key, value in re.findall(r'(x|y|width|height)="([0-9.]+)"', rect)}
            for rect in re.findall(r'<rect class="bar"[^>]*>', figure)]


def section(html: str, name: str) -> str:
    return re.search(rf'<section id="{name}".*?</section>', html, re.S).group(0)


# --- links ---------------------------------------------------------------------------------------


def test_admin_links_round_trip_and_expire():
    now = time.time()
    for guild_id in (GUILD, None, 2**63):
        made = sign_admin(SECRET, 2**64 - 1, guild_id, now + 60)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", made)
        assert verify_admin(SECRET, made, now) == (2**64 - 1, guild_id)
    made = sign_admin(SECRET, ALICE, GUILD, 1000.0)
    assert verify_admin(SECRET, made, 999.0) == (ALICE, GUILD)
    with pytest.raises(LinkError) as caught:
        verify_admin(SECRET, made, 1000.0)
    assert caught.value.reason == "expired"
    with pytest.raises(LinkError):
        verify_admin("another secret", admin_link(), now)
    for index in (3, 20, 40, 69, 70):
        with pytest.raises(LinkError) as caught:
            verify_admin(SECRET, flip(admin_link(), index), now)
        assert caught.value.reason == "not valid"


def test_admin_and_gallery_tokens_are_never_confused():
    now = time.time()
    gallery, admin = sign(SECRET, ALICE, GUILD, now + 60), sign_admin(SECRET, ALICE, GUILD, now + 60)
    assert gallery != admin and len(gallery) == len(admin)
    for check, other in ((verify_admin, gallery), (verify, admin)):
        with pytest.raises(LinkError) as caught:
            check(SECRET, other, now)
        assert caught.value.reason == "not valid"
    # Not even with the other kind's version byte written in: the HMAC domains differ too.
    raw = bytearray(base64.urlsafe_b64decode(gallery + "="))
    raw[0] = base64.urlsafe_b64decode(admin + "=")[0]
    with pytest.raises(LinkError):
        verify_admin(SECRET, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), now)
    assert verify(SECRET, gallery, now) == verify_admin(SECRET, admin, now) == (ALICE, GUILD)


def test_dashboard_url(tmp_path):
    settings = make_settings(tmp_path, web_base_url="https://bot.example.org/", gallery_link_hours=2)
    url = dashboard_url(settings, SECRET, ALICE, GUILD, 1_000_000.0)
    assert url.startswith("https://bot.example.org/admin/")
    made = url.rsplit("/", 1)[1]
    assert verify_admin(SECRET, made, 1_000_000.0 + 2 * 3600 - 1) == (ALICE, GUILD)
    with pytest.raises(LinkError):
        verify_admin(SECRET, made, 1_000_000.0 + 2 * 3600)
    with pytest.raises(LinkError):
        verify(SECRET, made, 1_000_000.0)
    assert dashboard_url(make_settings(tmp_path, web_port=8080), SECRET, ALICE, None, 0.0).startswith(
        "http://127.0.0.1:8080/admin/")
    with pytest.raises(ValueError):  # the web app is off
        dashboard_url(make_settings(tmp_path), SECRET, ALICE, GUILD, 0.0)


def test_the_admin_panel_protocol():
    """Exactly two async methods, which the fake (and the bot) implement with the same parameters."""
    assert {name for name in vars(AdminPanel) if not name.startswith("_")} == {"overview", "act"}
    expected = {"overview": ["self", "guild_id"], "act": ["self", "guild_id", "actor_id", "action", "value"]}
    for name, parameters in expected.items():
        for owner in (AdminPanel, FakePanel):
            method = getattr(owner, name)
            assert inspect.iscoroutinefunction(method) and list(inspect.signature(method).parameters) == parameters
    panel: AdminPanel = FakePanel()
    assert panel.overviews == []


# --- the page ------------------------------------------------------------------------------------


async def test_page_shows_every_section(site):
    link = admin_link()
    response, html = await site.get(f"/admin/{link}")
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert site.panel.overviews == [GUILD]
    assert '<meta name="viewport"' in html and "<script" not in html and "style=" not in html

    queue = section(html, "queue")
    assert "running" in queue and "4 waiting, 2 running" in queue and "paused" not in queue
    assert "a lighthouse at dusk" in queue and "&lt;b&gt;bold&lt;/b&gt; fox &amp; friends" in queue
    assert "4001" in queue and "upscale" in queue and 'value="pause"' in queue and 'value="resume"' not in queue

    servers = section(html, "servers")
    items = re.findall(r'<li class="server (\w+)">(.*?)</li>', servers, re.S)
    assert [status for status, _ in items] == ["up", "down", "unusable"]
    assert "gpu-alpha" in items[0][1] and "1 / 2 jobs" in items[0][1] and 'value="drain"' in items[0][1]
    assert "connection refused" in items[1][1] and "0 / 1 jobs" in items[1][1]
    assert "no checkpoint sdxl.safetensors" in items[2][1] and "drained" in items[2][1]
    assert 'value="undrain"' in items[2][1] and 'name="value" value="3"' in items[2][1]

    used = section(html, "usage")
    assert "Usage, last 30 days" in used and "Cost per day" in used and "Cost (EUR)" in used
    days = usage()
    table = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td><td>(\d+)</td><td>([\d,.]+)</td><td>([\d,.]+)</td></tr>", used)
    assert [row[0] for row in table] == [day["day"] for day in reversed(days[1:])]  # newest first, used days only
    assert table[0] == (days[-1]["day"], str(days[-1]["images"]), f"{days[-1]['gpu_seconds']:.1f}",
                        f"{days[-1]['cost']:.2f}")
    total = f"{sum(day['cost'] for day in days):,.2f}"
    assert re.search(rf"<tfoot><tr><th>Total</th><td>{sum(day['images'] for day in days)}</td><td>[\d,.]+</td>"
                     rf"<td>{re.escape(total)}</td>", used)

    failures = section(html, "failures")
    failed_at = datetime.fromtimestamp(FAILED_AT, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert failed_at in failures and "animate" in failures and "4003" in failures
    assert "ComfyUI ran out of memory" in failures

    reports = section(html, "reports")
    assert reports.count("<tr>") == 4  # a header and three reports
    assert f'<a href="{DISCORD_LINK}" rel="noopener noreferrer">Open in Discord</a>' in reports
    assert "javascript:" not in reports and reports.count("Open in Discord") == 1
    assert "#77" in reports and "#79" in reports and "4004" in reports and "4005" in reports
    assert datetime.fromtimestamp(REPORTED_AT, UTC).strftime("%Y-%m-%d %H:%M UTC") in reports

    blocked = section(html, "blocked")
    assert "4010" in blocked and "spam &lt;script&gt;alert(1)&lt;/script&gt;" in blocked
    assert 'value="unblock"' in blocked and 'value="block"' in blocked

    forms = re.findall(r"<form\b.*?</form>", html, re.S)
    assert len(forms) == 1 + 3 + 1 + 1  # pause, a drain per server, an unblock per member, block
    csrf = csrf_token(SECRET, link)
    for form in forms:
        assert 'method="post"' in form and f'action="../admin/{link}/act"' in form
        assert f'<input type="hidden" name="csrf" value="{csrf}">' in form
    assert SECRET not in html


async def test_charts_have_one_bar_per_day(site):
    _, html = await site.get(f"/admin/{admin_link()}")
    assert html.count("<svg") == 2
    days = usage()
    for chart, key in (("images", "images"), ("gpu-seconds", "gpu_seconds")):
        drawn = bars(html, chart)
        assert len(drawn) == len(days) == 30
        assert [bar["x"] for bar in drawn] == sorted(bar["x"] for bar in drawn)  # oldest on the left
        peak = max(day[key] for day in days)
        tallest = max(bar["height"] for bar in drawn)
        for bar, day in zip(drawn, days, strict=True):
            assert bar["height"] == pytest.approx(day[key] / peak * tallest, abs=0.02) if day[key] else bar["height"] == 0
            assert bar["y"] + bar["height"] == pytest.approx(drawn[0]["y"] + drawn[0]["height"])  # one baseline
    titles = re.findall(r"<rect class=\"bar\"[^>]*><title>([^<]*)</title>", html)
    assert f"{days[3]['day']}: {days[3]['images']} images" in titles
    assert f"{days[3]['day']}: {days[3]['gpu_seconds']:.1f} GPU seconds" in titles
    assert "GPU seconds per day" in html and "Images per day" in html


@pytest.mark.parametrize("given, shown", [
    (usage(3), 3),
    (usage(45), 30),  # the last 30 days
    ([usage(10)[0], usage(10)[9]], 10),  # the days between are drawn, as zero
    ([], 0),
])
async def test_charts_cover_the_days_given(site, given, shown):
    site.panel.data["usage_by_day"] = given
    _, html = await site.get(f"/admin/{admin_link()}")
    if not shown:
        assert "<svg" not in html and "No usage in the last 30 days" in html
        return
    assert len(bars(html, "images")) == len(bars(html, "gpu-seconds")) == shown
    assert f"Usage, last {shown} days" in html
    assert given[-1]["day"] in section(html, "usage")


async def test_an_empty_overview(site):
    site.panel.data = {"paused": True, "paused_everywhere": True, "waiting": 0, "running": 0, "queue": [],
                       "servers": [], "usage_by_day": [], "currency": "", "failures": [], "reports": [], "blocked": []}
    response, html = await site.get(f"/admin/{admin_link()}")
    assert response.status == 200
    for said in ("paused here", "paused on every server", "Nothing is waiting or running", "No ComfyUI servers",
                 "No usage", "No failures lately", "No reports", "Nobody is blocked"):
        assert said in html, said
    assert 'value="resume"' in html and 'value="pause"' not in html


async def test_a_link_outside_servers(site):
    response, html = await site.get(f"/admin/{admin_link(guild_id=None)}")
    assert response.status == 200 and "outside servers" in html
    assert site.panel.overviews == [None]


async def test_secrets_are_never_shown(site):
    site.panel.data["failures"][0]["error"] = f"bad key {SECRET} and Authorization: Bearer abc.def"
    site.panel.data["servers"][1]["problem"] = f"http://user:{SECRET}@gpu:8188 refused"
    _, html = await site.get(f"/admin/{admin_link()}")
    assert SECRET not in html and "abc.def" not in html
    assert "bad key ***" in html


# --- the forms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action, values, passed", [
    ("pause", [], ""),
    ("resume", [], ""),
    ("block", ["4011", "spamming the channel"], "4011 spamming the channel"),
    ("unblock", ["4010"], "4010"),
    ("drain", ["2"], "2"),
    ("undrain", ["3"], "3"),
])
async def test_each_action_posts_through(site, action, values, passed):
    assert action in ACTIONS
    link = admin_link()
    path = f"/admin/{link}/act"
    form = aiohttp.FormData([("csrf", await site.form_token(link)), ("action", action),
                             *(("value", value) for value in values)])
    response, _ = await site.post(path, form)
    assert response.status == 303
    assert response.headers["Cache-Control"] == "no-store"
    assert site.panel.calls == [(GUILD, ALICE, action, passed)]
    location = response.headers["Location"]
    assert location.startswith(f"../../admin/{link}?")
    said = {"pause": "Paused.", "resume": "Resumed."}.get(action, f"Done: {action} {passed}.")
    assert parse_qs(urlsplit(location).query) == {"msg": [said]}
    page, html = await site.follow(path, response)
    assert page.status == 200 and urlsplit(str(page.url)).path == f"/admin/{link}"
    assert re.search(rf'<p class="notice" role="status">{re.escape(said)}</p>', html)
    if action == "pause":
        assert "paused here" in html and 'value="resume"' in html


async def test_missing_or_wrong_csrf_is_refused(site):
    link = admin_link()
    path = f"/admin/{link}/act"
    right = await site.form_token(link)
    wrong = [
        {"action": "pause"},
        {"action": "pause", "csrf": ""},
        {"action": "pause", "csrf": "0" * len(right)},
        {"action": "pause", "csrf": right[:-1]},
        {"action": "pause", "csrf": right.upper()},
        {"action": "pause", "csrf": csrf_token(SECRET, admin_link(user_id=ALICE + 1))},  # another link's
        {"action": "pause", "csrf": csrf_token("another secret", link)},
        {"action": "pause", "csrf": "é" * 64},
    ]
    for data in wrong:
        response, html = await site.post(path, data)
        assert response.status == 403, data
        assert "Form not accepted" in html and "<html" in html
        assert response.headers["Cache-Control"] == "no-store"
    response, _ = await site.post(path, aiohttp.FormData([("action", "pause"), ("csrf", right), ("csrf", "x")]))
    assert response.status == 303  # the first one counts
    assert len(site.panel.calls) == 1
    site.panel.calls.clear()
    response, _ = await site.post(path, {"action": "pause", "csrf": right}, headers={"Content-Type": "text/plain"})
    assert response.status == 403
    assert (await site.get(path))[0].status == 405  # a GET changes nothing
    assert site.panel.calls == []


async def test_a_refused_value_is_shown(site):
    link = admin_link()
    path = f"/admin/{link}/act"
    site.panel.error = "There is no server 9: <b>/status</b> lists 3."
    response, _ = await site.post(path, {"action": "drain", "value": "9", "csrf": await site.form_token(link)})
    assert response.status == 303
    assert site.panel.calls == [(GUILD, ALICE, "drain", "9")]
    assert parse_qs(urlsplit(response.headers["Location"]).query) == {
        "msg": ["There is no server 9: <b>/status</b> lists 3."], "err": ["1"]}
    _, html = await site.follow(path, response)
    assert ('<p class="notice failed" role="alert">There is no server 9: &lt;b&gt;/status&lt;/b&gt; lists 3.</p>'
            in html)


async def test_unknown_actions_and_long_values_are_not_passed_on(site):
    link = admin_link()
    path = f"/admin/{link}/act"
    csrf = await site.form_token(link)
    for data in ({"action": "reload", "csrf": csrf}, {"csrf": csrf}, {"action": "", "csrf": csrf},
                 {"action": "block", "value": "1 " + "x" * 600, "csrf": csrf}):
        response, _ = await site.post(path, data)
        assert response.status == 303
        assert parse_qs(urlsplit(response.headers["Location"]).query)["err"] == ["1"]
    assert site.panel.calls == []


async def test_the_message_is_escaped_and_bounded(site):
    link = admin_link()
    _, html = await site.get(f"/admin/{link}", params={"msg": "<script>alert(1)</script> " + "y" * 1000})
    notice = re.search(r'<p class="notice"[^>]*>(.*?)</p>', html, re.S).group(1)
    assert notice.startswith("&lt;script&gt;alert(1)&lt;/script&gt; yyy") and len(notice) < 400
    assert "<script>" not in html
    _, html = await site.get(f"/admin/{link}", params={"msg": f"leaked {SECRET}"})
    assert SECRET not in html


# --- refusals ------------------------------------------------------------------------------------


async def test_a_gallery_link_opens_no_dashboard_and_an_admin_link_no_gallery(site):
    gallery = gallery_link()
    response, html = await site.get(f"/admin/{gallery}")
    assert response.status == 403 and "not valid" in html and "Discord" in html
    response, html = await site.post(f"/admin/{gallery}/act", {"action": "pause",
                                                              "csrf": csrf_token(SECRET, gallery)})
    assert response.status == 403 and "not valid" in html
    admin = admin_link()
    response, html = await site.get(f"/g/{admin}")
    assert response.status == 403 and "not valid" in html
    assert (await site.get(f"/g/{gallery}"))[0].status == 200  # the gallery link still opens its gallery
    assert site.panel.overviews == [] and site.panel.calls == []


async def test_expired_and_tampered_links_are_refused(site):
    expired = admin_link(hours=-1)
    tampered = flip(admin_link(), 12)
    for link, words in ((expired, "expired"), (tampered, "not valid"), ("garbage", "not valid")):
        response, html = await site.get(f"/admin/{link}")
        assert response.status == 403 and response.content_type == "text/html"
        assert words in html and "dashboard link" in html and "Discord" in html and "<html" in html
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        response, html = await site.post(f"/admin/{link}/act", {"action": "pause", "csrf": csrf_token(SECRET, link)})
        assert response.status == 403 and words in html
    assert site.panel.overviews == [] and site.panel.calls == []


async def test_without_an_admin_panel_there_is_no_dashboard(tmp_path):
    async for site in serve(tmp_path, None):
        link = admin_link()
        for path in (f"/admin/{link}", "/admin/", "/admin"):
            response, html = await site.get(path)
            assert response.status == 404 and "Not found" in html
        response, _ = await site.post(f"/admin/{link}/act", {"action": "pause", "csrf": csrf_token(SECRET, link)})
        assert response.status in (404, 405)


async def test_the_databases_secret_signs_admin_links_too(tmp_path):
    async for site in serve(tmp_path, FakePanel(), web_secret=None):
        store_secret = await site.store.link_secret()
        assert (await site.get(f"/admin/{admin_link(secret=store_secret)}"))[0].status == 200
        assert (await site.get(f"/admin/{admin_link(secret=SECRET)}"))[0].status == 403
        link = admin_link(secret=store_secret)
        response, _ = await site.post(f"/admin/{link}/act", {"action": "resume", "csrf": csrf_token(store_secret, link)})
        assert response.status == 303 and site.panel.calls == [(GUILD, ALICE, "resume", "")]
