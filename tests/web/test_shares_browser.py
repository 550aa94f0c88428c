"""A shared result's public page in a real headless Chromium (driven by Selenium, as
tests/web/test_web_browser.py does, whose browser fixture and helpers this reuses): what a visitor sees,
its tags as the browser parsed them, and the page gone after a revoke."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from links import share_token
from store import Generation, Store
from tests.conftest import make_settings
from tests.web.test_web_browser import ARTIFACTS, SECRET, Chrome, csp_errors, images_loaded, open_page, picture, run
from web.app import WebServer

BASE = "https://pictures.example.org"
OWNER, GUILD = 2101, 6101
PROMPT = 'a lighthouse <img src=x onerror="document.title=\'pwned\'"> & "q"'  # under 70: the whole title
TAGS = ("return Object.fromEntries(Array.from(document.querySelectorAll('meta[property], meta[name]'))"
        ".map(m => [m.getAttribute('property') || m.getAttribute('name'), m.content]))")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module (test_web_browser.py's, started on first use)."""
    chrome = Chrome(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.quit()


@pytest.fixture
async def shared(tmp_path):
    """The app on 127.0.0.1 with one result of 768×512, shared with its prompt: (server, store, page path)."""
    settings = make_settings(tmp_path, web_secret=SECRET, web_base_url=BASE)
    settings.outputs_dir.mkdir(parents=True)
    picture(3, (768, 512)).save(settings.outputs_dir / "lighthouse.png")
    store = Store(settings.data_dir / "bot.sqlite3")
    await store.open()
    made = await store.add_generation(Generation(
        id=None, job_id=None, kind="txt2img", user_id=OWNER, guild_id=GUILD, channel_id=7001,
        params={"prompt": PROMPT, "width": 768, "height": 512}, files=["lighthouse.png"], server="s", duration=1.0))
    share = await store.share_result(made.id, GUILD, OWNER, True)
    server = WebServer(store, settings, port=0)
    await server.start()
    try:
        yield server, store, share.token, f"/s/{share_token(SECRET, share.token)}"
    finally:
        await server.stop()
        await store.close()


async def test_the_page_shows_the_picture_and_its_tags_and_is_gone_once_revoked(shared, browser):
    server, store, share_id, path = shared
    driver = await run(browser.driver)
    await run(driver.set_window_size, 1280, 900)
    await run(open_page, driver, server.url + path)
    assert await run(lambda: driver.title) == PROMPT  # escaped: the markup in the prompt is only text
    heading = await run(driver.find_element, By.TAG_NAME, "h1")
    assert await run(lambda: heading.text) == PROMPT
    assert await run(images_loaded, driver, "figure img") == [768]
    tags = await run(driver.execute_script, TAGS)
    assert tags["og:image"] == tags["twitter:image"] == f"{BASE}{path}/file/0"
    assert (tags["og:image:width"], tags["og:image:height"]) == ("768", "512")
    assert tags["og:title"] == tags["og:description"] == PROMPT and tags["twitter:card"] == "summary_large_image"
    assert await run(driver.execute_script, "return document.scripts.length") == 0
    background = await run(driver.execute_script, "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(30, 31, 34)"  # the gallery's stylesheet, allowed by the CSP
    assert await run(csp_errors, driver) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert await run(driver.save_screenshot, str(ARTIFACTS / "share.png"))

    phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    await run(driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", phone)
    try:
        await run(open_page, driver, server.url + path)
        await run(images_loaded, driver, "figure img")
        assert await run(driver.execute_script, "return document.documentElement.scrollWidth") <= 390
    finally:
        await run(driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})

    assert await store.revoke_share(share_id, OWNER)
    await run(open_page, driver, server.url + path)
    assert await run(lambda: driver.title) == "Not found"
    assert await run(driver.find_elements, By.CSS_SELECTOR, "figure img") == []
    assert await run(driver.execute_script, TAGS) == {"viewport": "width=device-width, initial-scale=1",
                                                      "referrer": "no-referrer", "robots": "noindex, nofollow"}
