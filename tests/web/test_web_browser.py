"""The gallery in a real headless Chromium, driven by Selenium: what a person sees and clicks.

Uses Debian's /usr/bin/chromium and /usr/bin/chromedriver (`make browser` installs them); Selenium
Manager is never asked to download anything. The app runs in the test's event loop on 127.0.0.1;
every Selenium call blocks, so each runs in a thread while the loop serves the pages. Every wait is
bounded. Screenshots of the gallery go to tests/artifacts/ and docs/gallery.png.
"""

from __future__ import annotations

import asyncio
import colorsys
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw
from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from store import Generation, Store
from tests.conftest import ROOT, make_settings
from tests.web.test_dashboard import ALICE as ADMIN, GUILD as ADMIN_GUILD
from tests.web.test_dashboard import FakePanel, admin_link, serve
from web.app import WebServer
from links import sign

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT = 15.0  # seconds any one wait may take
SECRET = "browser-test-secret"
ALICE, BOB, GUILD = 2001, 2002, 6001
PROMPTS = [
    "a lighthouse on a cliff at dusk, oil painting",
    "a castle above the clouds, morning light",
    "a red fox curled up in fresh snow",
    "neon city street in the rain, cinematic",
    "a bowl of ramen, studio photo",
    "an old castle ruin covered in ivy",
    "a paper boat on a calm lake",
    "portrait of a cat astronaut, detailed",
    "a desert road under the milky way",
    "cherry blossoms over a wooden bridge",
    "a cozy reading nook with a fireplace",
    "a whale swimming through clouds",
]


def picture(index: int, size: tuple[int, int]) -> Image.Image:
    """A colourful test picture: a two-hue gradient with a sun and a horizon, different for each index."""
    hue = index / len(PROMPTS)
    top = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.55, 0.95))
    bottom = tuple(int(c * 255) for c in colorsys.hsv_to_rgb((hue + 0.35) % 1, 0.8, 0.35))
    mask = Image.linear_gradient("L").resize(size)
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)
    draw = ImageDraw.Draw(image)
    width, height = size
    radius = min(size) // 6
    x, y = width * (0.25 + 0.5 * ((index * 7) % 10) / 10), height * 0.35
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 236, 170))
    draw.polygon([(0, height), (0, height * 0.7), (width * 0.4, height * 0.55), (width, height * 0.75), (width, height)],
                 fill=tuple(max(0, c - 60) for c in bottom))
    return image


def link(user_id: int = ALICE, hours: float = 1.0) -> str:
    return sign(SECRET, user_id, GUILD, time.time() + hours * 3600)


class Site:
    """The web app on 127.0.0.1 with Alice's results (and one of Bob's) in a fresh store."""

    def __init__(self, server: WebServer, store: Store, alice: list[Generation], bob: Generation) -> None:
        self.server, self.store, self.alice, self.bob = server, store, alice, bob

    def url(self, path: str) -> str:
        return self.server.url + path


@pytest.fixture
async def site(tmp_path):
    settings = make_settings(tmp_path, web_secret=SECRET)
    settings.outputs_dir.mkdir(parents=True)
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    alice = []
    sizes = [(512, 512), (512, 768), (768, 512)]
    for index, prompt in enumerate(PROMPTS):
        size = sizes[index % 3]
        name = f"result-{index:02d}.png"
        picture(index, size).save(settings.outputs_dir / name)
        alice.append(await store.add_generation(Generation(
            id=None, job_id=None, kind="txt2img", user_id=ALICE, guild_id=GUILD, channel_id=7001,
            params={"prompt": prompt, "negative_prompt": "blurry, text", "model": "sdxl", "width": size[0],
                    "height": size[1], "seed": 1000 + index, "steps": 25, "cfg": 7.0},
            files=[name], server="http://127.0.0.1:8188", duration=4.0, message_id=9000 + index)))
    for favorite in alice[1::4]:
        await store.set_favorite(ALICE, favorite.id, True)
    picture(99, (512, 512)).save(settings.outputs_dir / "bob.png")
    bob = await store.add_generation(Generation(
        id=None, job_id=None, kind="txt2img", user_id=BOB, guild_id=GUILD, channel_id=7001,
        params={"prompt": "bob's secret castle"}, files=["bob.png"], server="s", duration=1.0))
    server = WebServer(store, settings, port=0)
    await server.start()
    try:
        yield Site(server, store, alice, bob)
    finally:
        await server.stop()
        await store.close()


class Chrome:
    """One headless Chromium for the module, started on first use."""

    def __init__(self, profile: Path) -> None:
        self._profile = profile
        self._driver: webdriver.Chrome | None = None

    def driver(self) -> webdriver.Chrome:
        if self._driver is None:
            missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
            if missing:
                pytest.fail(f"{' and '.join(missing)} not found: run `make browser` to install Chromium and "
                            "chromedriver (apt-get install chromium chromium-driver)", pytrace=False)
            options = webdriver.ChromeOptions()
            options.binary_location = str(CHROMIUM)
            for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--window-size=1280,900", f"--user-data-dir={self._profile}"):
                options.add_argument(argument)
            options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
            driver.set_page_load_timeout(WAIT)
            driver.set_script_timeout(WAIT)
            self._driver = driver
        return self._driver

    def quit(self) -> None:
        if self._driver is not None:
            self._driver.quit()


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    browser = Chrome(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.quit()


async def run(work, *args):
    """A blocking Selenium call, in a thread, so the event loop keeps serving the app meanwhile."""
    return await asyncio.wait_for(asyncio.to_thread(work, *args), WAIT * 2)


def wait_for(driver: webdriver.Chrome, condition, message: str):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)
    except TimeoutException:
        raise AssertionError(f"{message} (waited {WAIT:g} s) on {driver.current_url}") from None


def images_loaded(driver: webdriver.Chrome, selector: str) -> list[int]:
    """The naturalWidth of every image matching `selector`, once all of them finished loading."""
    script = ("return Array.from(document.querySelectorAll(arguments[0]))"
              ".map(img => img.complete ? img.naturalWidth : -1)")
    return wait_for(driver, lambda d: (widths := d.execute_script(script, selector)) and -1 not in widths and widths,
                    f"images {selector} did not finish loading")


def tiles(driver: webdriver.Chrome) -> list[str]:
    """The tiles' links, read in one script (so a page that is being replaced cannot half-answer)."""
    return driver.execute_script("return Array.from(document.querySelectorAll('li.tile > a')).map(a => a.href)")


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", "page did not load")


def replaced(page):
    """A wait condition: `page`'s document is gone. Chromium reports a node of a document being torn down
    either as stale or as "does not belong to the document"; both mean the same here."""
    def check(driver: webdriver.Chrome) -> bool:
        try:
            page.is_enabled()
        except (StaleElementReferenceException, WebDriverException):
            return True
        return False

    return check


def click_and_load(driver: webdriver.Chrome, selector: str) -> None:
    """Click the element and wait until the next page replaced this one and finished loading."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, selector).click()
    wait_for(driver, replaced(page), f"clicking {selector} did not open a page")
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", "page did not load")


def publish(shot: Path, doc: Path) -> None:
    """Copy the screenshot for the README, unless the one there looks the same (rendering varies by a
    few levels from run to run, which would leave the file changed after every test run)."""
    if doc.is_file():
        with Image.open(shot) as new, Image.open(doc) as old:
            if new.size == old.size and max(high for _, high in
                                            ImageChops.difference(new.convert("RGB"), old.convert("RGB")).getextrema()) <= 16:
                return
    doc.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, doc)


def csp_errors(driver: webdriver.Chrome) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


async def test_grid_renders_every_result_and_screenshots(site, chrome):
    driver = await run(chrome.driver)
    await run(driver.set_window_size, 1280, 900)
    await run(open_page, driver, site.url(f"/g/{link()}"))
    assert len(await run(tiles, driver)) == len(PROMPTS)
    widths = await run(images_loaded, driver, "li.tile img")
    assert len(widths) == len(PROMPTS) and all(width > 0 for width in widths)
    stars = await run(driver.find_elements, By.CSS_SELECTOR, "li.tile .star")
    assert len(stars) == len(site.alice[1::4])
    background = await run(driver.execute_script, "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(30, 31, 34)"  # the stylesheet applied under the CSP
    assert await run(csp_errors, driver) == []

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert await run(driver.save_screenshot, str(ARTIFACTS / "gallery.png"))
    publish(ARTIFACTS / "gallery.png", ROOT / "docs" / "gallery.png")

    phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    await run(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", phone)
    try:
        await run(open_page, driver, site.url(f"/g/{link()}"))
        await run(images_loaded, driver, "li.tile img")
        columns = await run(driver.execute_script, "return getComputedStyle(document.querySelector('.grid'))"
                                                   ".gridTemplateColumns.split(' ').length")
        assert columns == 2  # two tiles a row on a phone
        scroll = await run(driver.execute_script, "return document.documentElement.scrollWidth")
        assert scroll <= 390  # nothing wider than the screen
        assert await run(driver.save_screenshot, str(ARTIFACTS / "gallery-phone.png"))
    finally:
        await run(driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
    with Image.open(ARTIFACTS / "gallery.png") as desktop, Image.open(ARTIFACTS / "gallery-phone.png") as small:
        assert desktop.width >= 1000 and small.width < desktop.width


async def test_search_narrows_the_grid(site, chrome):
    driver = await run(chrome.driver)
    await run(open_page, driver, site.url(f"/g/{link()}"))
    assert len(await run(tiles, driver)) == len(PROMPTS)

    def search(words: str) -> None:
        box = driver.find_element(By.NAME, "q")
        box.clear()
        box.send_keys(words)
        click_and_load(driver, "form.search button[type=submit]")
        assert f"q={words}" in driver.current_url

    await run(search, "castle")
    found = await run(tiles, driver)
    castles = [result.id for result in site.alice if "castle" in result.params["prompt"]]
    assert len(found) == 2 and sorted(int(href.rsplit("/", 1)[1]) for href in found) == sorted(castles)
    assert site.bob.id not in [int(href.rsplit("/", 1)[1]) for href in found]
    assert await run(lambda: driver.find_element(By.NAME, "q").get_attribute("value")) == "castle"
    await run(search, "unicorn")
    assert await run(tiles, driver) == []
    assert "Nothing matches" in await run(lambda: driver.find_element(By.CSS_SELECTOR, ".summary").text)


async def test_tile_opens_the_detail_page_and_the_star_toggles(site, chrome):
    driver = await run(chrome.driver)
    await run(open_page, driver, site.url(f"/g/{link()}"))
    newest = site.alice[-1]
    assert newest.id not in {result.id for result in site.alice[1::4]}  # not a favorite yet

    def open_first_tile() -> None:
        click_and_load(driver, "li.tile > a")
        assert f"/r/{newest.id}" in driver.current_url

    await run(open_first_tile)
    widths = await run(images_loaded, driver, "img.full")
    assert widths == [newest.params["width"]]  # the full image, not the thumbnail
    text = await run(lambda: driver.find_element(By.TAG_NAME, "main").text)
    for shown in (newest.params["prompt"], "blurry, text", "sdxl", "1011", "Open the message in Discord"):
        assert shown in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert await run(driver.save_screenshot, str(ARTIFACTS / "detail.png"))

    def toggle() -> str:
        before = driver.find_element(By.CSS_SELECTOR, "form.favorite button").text
        click_and_load(driver, "form.favorite button")
        assert driver.find_element(By.CSS_SELECTOR, "form.favorite button").text != before
        assert f"/r/{newest.id}" in driver.current_url and "/favorite" not in driver.current_url
        return driver.find_element(By.CSS_SELECTOR, "h1").text

    assert (await run(toggle)).startswith("★")
    assert await site.store.favorite_ids(ALICE, [newest.id]) == {newest.id}
    await run(open_page, driver, site.url(f"/g/{link()}?fav=1"))
    assert f"/r/{newest.id}" in (await run(tiles, driver))[0]
    await run(open_page, driver, site.url(f"/g/{link()}/r/{newest.id}"))
    assert not (await run(toggle)).startswith("★")
    assert await site.store.favorite_ids(ALICE, [newest.id]) == set()


async def test_expired_link_is_refused(site, chrome):
    driver = await run(chrome.driver)
    await run(open_page, driver, site.url(f"/g/{link(hours=-1)}"))
    text = await run(lambda: driver.find_element(By.TAG_NAME, "body").text)
    assert "expired" in text and "/gallery" in text
    assert await run(tiles, driver) == [] and await run(driver.find_elements, By.TAG_NAME, "img") == []


async def test_another_persons_link_cannot_see_this_result(site, chrome):
    driver = await run(chrome.driver)
    mine = site.alice[0]
    await run(open_page, driver, site.url(f"/g/{link(BOB)}/r/{mine.id}"))
    text = await run(lambda: driver.find_element(By.TAG_NAME, "body").text)
    assert "Not found" in text and mine.params["prompt"] not in text
    await run(open_page, driver, site.url(f"/g/{link(BOB)}/r/{mine.id}/file/0"))
    assert "Not found" in await run(lambda: driver.find_element(By.TAG_NAME, "body").text)
    await run(open_page, driver, site.url(f"/g/{link(BOB)}"))
    found = await run(tiles, driver)
    assert len(found) == 1 and found[0].endswith(f"/r/{site.bob.id}")


async def test_admin_dashboard_renders_charts_and_pauses(tmp_path, chrome):
    panel = FakePanel()
    days = len(panel.data["usage_by_day"])
    async for dashboard in serve(tmp_path, panel):
        driver = await run(chrome.driver)
        await run(driver.set_window_size, 1280, 900)
        link = admin_link()
        await run(open_page, driver, dashboard.url(f"/admin/{link}"))
        assert await run(csp_errors, driver) == []
        background = await run(driver.execute_script, "return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(30, 31, 34)"  # the stylesheet applied under the CSP

        drawn = await run(driver.execute_script, """
            return Array.from(document.querySelectorAll('figure.chart svg')).map(svg => ({
                width: svg.getBoundingClientRect().width,
                bars: Array.from(svg.querySelectorAll('rect.bar')).map(rect => rect.getBoundingClientRect().height),
                fill: getComputedStyle(svg.querySelector('rect.bar')).fill}))""")
        assert len(drawn) == 2  # images and GPU seconds per day
        for chart in drawn:
            assert chart["width"] > 300 and len(chart["bars"]) == days
            assert sum(height > 5 for height in chart["bars"]) >= days // 2  # the bars show, scaled to the chart
            assert chart["fill"] not in ("", "none", "rgb(0, 0, 0)")  # coloured by the stylesheet
        text = await run(lambda: driver.find_element(By.TAG_NAME, "main").text)
        for shown in ("4 waiting, 2 running", "gpu-beta", "connection refused", "Cost per day",
                      "ComfyUI ran out of memory", "Open in Discord", "spam <script>alert(1)</script>"):
            assert shown in text, shown
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        height = await run(driver.execute_script, "return document.documentElement.scrollHeight")
        whole = {"width": 1280, "height": min(max(height, 900), 4000), "deviceScaleFactor": 1, "mobile": False}
        await run(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", whole)  # the whole page in the shot
        try:
            assert await run(driver.save_screenshot, str(ARTIFACTS / "dashboard.png"))
        finally:
            await run(driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})

        await run(click_and_load, driver, "form.pause button[value=pause]")
        notice = await run(lambda: driver.find_element(By.CSS_SELECTOR, ".notice").text)
        assert notice == "Paused."
        assert panel.calls == [(ADMIN_GUILD, ADMIN, "pause", "")]
        assert await run(lambda: driver.current_url.split("?")[0]) == dashboard.url(f"/admin/{link}")
        assert await run(driver.find_elements, By.CSS_SELECTOR, "form.pause button[value=resume]")

        phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
        await run(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", phone)
        try:
            await run(open_page, driver, dashboard.url(f"/admin/{link}"))
            scroll = await run(driver.execute_script, "return document.documentElement.scrollWidth")
            assert scroll <= 390  # nothing wider than the screen: wide tables scroll inside their panel
            assert await run(driver.save_screenshot, str(ARTIFACTS / "dashboard-phone.png"))
        finally:
            await run(driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
