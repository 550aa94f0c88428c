"""The API explorer (/api/docs) in a real headless Chromium: it renders the API's own document from
files served by the app (no CDN, no Content-Security-Policy error), and a "Try it out" call made with a
key shows the key's generations. Uses tests/web/test_web_browser.py's Chromium and bounded waits."""

from __future__ import annotations

import aiohttp
import pytest
from selenium.webdriver.common.by import By

from tests.conftest import make_settings
from tests.web.test_api import ADMIN, GUILD, FakeService, open_store
from tests.web.test_web_browser import ARTIFACTS, chrome, csp_errors, open_page, run, wait_for  # noqa: F401 (chrome: fixture)
from web.app import WebServer

LIST = "#operations-default-listGenerations"  # Swagger UI's id: the tag (none: default), the operationId


@pytest.fixture
async def served(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, web_host="127.0.0.1", web_secret="docs-test-secret")
    settings.outputs_dir.mkdir(parents=True)
    store = await open_store(settings.data_dir / "bot.sqlite3", monkeypatch)
    _, key = await store.create_key(GUILD, "explorer", ADMIN)
    server = WebServer(store, settings, port=0, api=FakeService(settings.outputs_dir))
    await server.start()
    try:
        yield server.url, key
    finally:
        await server.stop()
        await store.close()


def explore(driver, url: str, key: str) -> tuple[list[str], str, str]:
    """Open the explorer, authorize with `key`, try GET /api/v1/generations: the operations shown, and
    the status and body of the answer the page shows (and a screenshot in tests/artifacts/)."""
    open_page(driver, f"{url}/api/docs")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 9, "the operations did not show")
    paths = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    driver.find_element(By.CSS_SELECTOR, ".scheme-container button.authorize").click()
    field = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".auth-container input"), "no key field")
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done"), "not authorized")
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()
    driver.find_element(By.CSS_SELECTOR, f"{LIST} .opblock-summary-control").click()
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{LIST} .try-out__btn"), "no Try it out").click()
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{LIST} button.execute"), "no Execute").click()
    answer = f"{LIST} .live-responses-table tr.response"
    status = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{answer} .response-col_status").text,
                      "no answer shown")
    body = driver.find_element(By.CSS_SELECTOR, f"{answer} .response-col_description pre").text
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "api-docs.png"))
    return paths, status, body


async def test_the_explorer_shows_the_api_and_tries_a_call_with_a_key(served, chrome):
    url, key = served
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(f"{url}/api/v1/generations", headers={"Authorization": f"Bearer {key}"},
                             json={"kind": "txt2img", "prompt": "a lighthouse"}) as made:
            job_id = (await made.json())["id"]
    driver = await run(chrome.driver)
    paths, status, body = await run(explore, driver, url, key)
    assert "/api/v1/generations/{id}/cancel" in paths and "/api/v1/webhook" in paths
    assert status == "200" and f'"id": {job_id}' in body and "a lighthouse" in body
    assert await run(csp_errors, driver) == []
    loaded = await run(driver.execute_script, "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(url) for name in loaded)  # nothing from a CDN
