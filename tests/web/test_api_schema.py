"""The HTTP API against its own OpenAPI document, with schemathesis: requests made from the document
(fetched from the running app), sent to the real aiohttp app on 127.0.0.1, and every answer checked
against the document. No 5xx, no answer the document does not describe, and no request the document
calls valid refused, but for the refusals the document names (`REFUSALS`): what a schema cannot say
(an image that does not decode, a webhook host that leads to a private address).

The app runs in a thread with its own event loop (schemathesis sends with `requests`, which blocks),
on a real Store and tests/test_api.py's FakeService.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from schemathesis.checks import CheckContext
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import positive_data_acceptance

from web.api_fields import KINDS  # the kinds the API offers: not those that take a video result
from tests.conftest import make_settings
from tests.web.test_api import ADMIN, GUILD, FakeService, open_store
from web import api as api_module
from web.api_views import API
from web.app import make_app

EXAMPLES = 30  # per operation and mode: the whole file runs in well under a minute
# (operation, status, the error's field): a documented refusal of a request the document calls valid
REFUSALS = {("createGeneration", 400, "image"), ("createGeneration", 400, "mask"),
            ("createGeneration", 413, "image"), ("createGeneration", 413, "mask"),
            ("createGeneration", 400, "workflow"),  # a name no workflow shared in the key's server has
            ("setWebhook", 400, "url")}


class Served:
    """The app on 127.0.0.1 in its own thread and loop; `stop()` ends both."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides) -> None:
        self._tmp_path, self._monkeypatch, self._overrides = tmp_path, monkeypatch, overrides
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.base, self.key = self._run(self._start())

    def _run(self, coroutine, timeout: float = 20):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> tuple[str, str]:
        settings = make_settings(self._tmp_path, web_secret="schema-test-secret", **self._overrides)
        settings.outputs_dir.mkdir(parents=True)
        self._store = await open_store(settings.data_dir / "bot.sqlite3", self._monkeypatch)
        _, key = await self._store.create_key(GUILD, "fuzzer", ADMIN)
        app = make_app(self._store, settings)
        # no 429s while fuzzing: the request limit has its own test in tests/test_api.py
        api_module.add_routes(app, FakeService(settings.outputs_dir), self._store, settings,
                              limiter=api_module.RateLimiter(burst=10**9))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}", key

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._store.close()

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    # webhook_private_ok: the fuzzer's made-up hosts are then never looked up (no DNS from tests)
    app = Served(tmp_path, monkeypatch, webhook_private_ok=True)
    yield app
    app.stop()


def refused_as_documented(ctx: CheckContext, response, case) -> bool | None:
    """The built-in positive_data_acceptance, but a refusal listed in REFUSALS (an Error naming that
    field) is what the document promises too."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        try:
            field = response.json()["error"].get("field")
        except (ValueError, KeyError, TypeError, AttributeError):
            field = None  # not an Error: the failure stands
        if (case.operation.definition.raw.get("operationId"), response.status_code, field) not in REFUSALS:
            raise
        return None


def operations(base: str) -> list:
    schema = schemathesis.openapi.from_url(f"{base}{API}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(served: Served, mode: schemathesis.GenerationMode) -> dict[str, set[int]]:
    """Send EXAMPLES requests of `mode` to every operation; the statuses each operation answered."""
    headers = {"Authorization": f"Bearer {served.key}"}
    seen: dict[str, set[int]] = {}
    with requests.Session() as session:
        for operation in operations(served.base):
            statuses = seen.setdefault(operation.label, set())

            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 suppress_health_check=list(hypothesis.HealthCheck),
                                 phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
            @hypothesis.given(operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                response = case.call_and_validate(base_url=served.base, session=session, headers=headers,
                                                  timeout=10, excluded_checks=[positive_data_acceptance],
                                                  additional_checks=[refused_as_documented])
                statuses.add(response.status_code)

            run()
    return seen


def test_every_valid_request_is_served_as_documented(served):
    seen = fuzz(served, schemathesis.GenerationMode.POSITIVE)
    # all but GET /api/v1/openapi.json, which schemathesis leaves out as the document itself
    assert len(seen) == 8
    assert 202 in seen["POST /api/v1/generations"] and 200 in seen["PUT /api/v1/webhook"]  # not only refusals


def test_invalid_requests_are_refused_in_documented_words(served):
    fuzz(served, schemathesis.GenerationMode.NEGATIVE)


def test_each_kind_has_its_own_request_schema(served):
    document = requests.get(f"{served.base}{API}/openapi.json", timeout=10).json()
    request = document["components"]["schemas"]["GenerationRequest"]
    assert request["discriminator"]["propertyName"] == "kind"
    mapping = request["discriminator"]["mapping"]
    assert set(mapping) == set(KINDS) and len(request["oneOf"]) == len(KINDS)
    for kind, ref in mapping.items():
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert schema["properties"]["kind"] == {"const": kind}, kind
        assert schema["additionalProperties"] is False
    upscale = document["components"]["schemas"][mapping["upscale"].rsplit("/", 1)[1]]
    assert set(upscale["required"]) == {"kind", "image", "factor"} and "prompt" not in upscale["properties"]
    txt2img = document["components"]["schemas"][mapping["txt2img"].rsplit("/", 1)[1]]
    assert "image" not in txt2img["properties"] and txt2img["properties"]["prompt"]["pattern"] == r"\S"
    listing = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/generations"]["get"]["parameters"]}
    assert listing["before"]["maximum"] == 2**63 - 1
