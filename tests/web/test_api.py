"""Tests for the HTTP API (web/api.py), its OpenAPI document (web/openapi.py) and its keys (store/api.py).

The app runs through aiohttp's test server on 127.0.0.1, on a real Store in tmp_path whose schema has
store_api's migration added, with a fake ApiService that keeps jobs in memory and writes real files in
the output folder.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from store import engine as store_module
from store import api as store_api
from image_gen import RequestError
from web.api_fields import KINDS  # the kinds the API offers: not those that take a video result
from store import Job, Store
from store.api import ApiKey, ApiStore
from tests.conftest import make_settings
from web import api as api_module
from web import api_fields, api_views
from web.api import ApiService, RateLimiter
from web.api_errors import ApiError, InvalidField, LimitReached, Unavailable
from web.api_views import API
from web.app import make_app

GUILD, OTHER_GUILD, ADMIN = 5001, 5002, 3001
LIMIT = api_module.BODY_LIMIT


class ApiTestStore(Store, ApiStore):
    """store.Store with the API's tables, until the bot's Store includes them."""


async def open_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> ApiTestStore:
    """A Store at `path` whose schema has store_api.MIGRATION (added once, as migration 8 will be)."""
    if store_api.MIGRATION not in store_module._MIGRATIONS:
        monkeypatch.setattr(store_module, "_MIGRATIONS", (*store_module._MIGRATIONS, store_api.MIGRATION))
    made = ApiTestStore(path)
    await made.open()
    return made


def png(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeService:
    """An ApiService keeping jobs in memory: each belongs to the key that submitted it."""

    def __init__(self, outputs: Path) -> None:
        self.outputs = outputs
        self.jobs: dict[int, dict[str, Any]] = {}
        self.owner: dict[int, int] = {}
        self.files: dict[int, list[str]] = {}
        self.submitted: list[tuple[int, str, dict, dict]] = []
        self.refusal: Exception | None = None
        self.next_id = 100

    async def submit(self, key: ApiKey, kind: str, request: dict, images: dict[str, bytes]) -> dict:
        assert not key.revoked
        if self.refusal is not None:
            raise self.refusal
        self.submitted.append((key.id, kind, request, images))
        job_id, self.next_id = self.next_id, self.next_id + 1
        waiting = sum(job["state"] == "waiting" for job in self.jobs.values())
        now = time.time()
        self.jobs[job_id] = {"id": job_id, "kind": kind, "state": "waiting", "position": waiting, "error": None,
                             "files": 0, "settings": {**request, "seed": request.get("seed", 1234),
                                                      "checkpoint": "secret-file.safetensors", "input": "in.png"},
                             "created_at": now, "updated_at": now}
        self.owner[job_id] = key.id
        return {"id": job_id, "state": "waiting", "position": waiting}

    def finish(self, job_id: int, count: int = 2, *, write: bool = True) -> list[str]:
        names = [f"20260101-000000-{job_id:06d}-{index}.png" for index in range(count)]
        if write:
            for name in names:
                (self.outputs / name).write_bytes(png())
        self.files[job_id] = names
        self.jobs[job_id].update(state="done", files=count, position=None)
        return names

    def fail(self, job_id: int, error: str) -> None:
        self.jobs[job_id].update(state="failed", error=error, position=None)

    def _mine(self, key: ApiKey, job_id: int) -> dict | None:
        return dict(self.jobs[job_id]) if self.owner.get(job_id) == key.id else None

    async def get(self, key: ApiKey, job_id: int) -> dict | None:
        return self._mine(key, job_id)

    async def cancel(self, key: ApiKey, job_id: int) -> dict | None:
        job = self._mine(key, job_id)
        if job is not None and job["state"] not in ("done", "failed", "cancelled"):
            self.jobs[job_id].update(state="cancelled", error="You cancelled it.", position=None)
            job = dict(self.jobs[job_id])
        return job

    async def list(self, key: ApiKey, limit: int, before: int | None) -> list[dict]:
        ids = sorted((job_id for job_id, owner in self.owner.items()
                      if owner == key.id and (before is None or job_id < before)), reverse=True)
        return [dict(self.jobs[job_id]) for job_id in ids[:limit]]

    async def file(self, key: ApiKey, job_id: int, index: int) -> Path | None:
        if self._mine(key, job_id) is None or index >= len(self.files.get(job_id, [])):
            return None
        return self.outputs / self.files[job_id][index]


class Client:
    """The app under test, its store and service, and two keys of one server plus one revoked."""

    def __init__(self, client: TestClient, store: ApiTestStore, service: FakeService, keys: dict[str, str],
                 settings) -> None:
        self.client, self.store, self.service, self.keys, self.settings = client, store, service, keys, settings

    def auth(self, who: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def call(self, method: str, path: str, who: str | None = "alice", **kwargs) -> tuple[Any, Any]:
        headers = {**(self.auth(who) if who else {}), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, allow_redirects=False, **kwargs) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response, json.loads(body)
            return response, body

    async def submit(self, who: str = "alice", **fields) -> int:
        """POST a job: "a fox" unless `prompt` is given (None leaves the field out)."""
        body = {name: value for name, value in {"prompt": "a fox", **fields}.items() if value is not None}
        response, body = await self.call("POST", f"{API}/generations", who, json=body)
        assert response.status == 202, body
        return body["id"]


async def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides):
    settings = make_settings(tmp_path, web_secret="api-test-secret", **overrides)
    settings.outputs_dir.mkdir(parents=True)
    store = await open_store(settings.data_dir / "bot.sqlite3", monkeypatch)
    keys = {}
    for name, guild in (("alice", GUILD), ("bob", GUILD), ("revoked", GUILD), ("other", OTHER_GUILD)):
        key_id, keys[name] = await store.create_key(guild, f"{name}'s site", ADMIN)
        if name == "revoked":
            assert await store.revoke_key(key_id, GUILD)
    service = FakeService(settings.outputs_dir)
    client = TestClient(TestServer(make_app(store, settings, api=service), host="127.0.0.1"))
    await client.start_server()
    return Client(client, store, service, keys, settings)


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made = await serve(tmp_path, monkeypatch)
    try:
        yield made
    finally:
        await made.client.close()
        await made.store.close()


def schema_validator(document: dict, name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the document's component schemas (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": document["components"]})


def assert_error(response, body, status: int, code: str | None = None, field: str | None = None) -> None:
    assert response.status == status, body
    assert response.content_type == "application/json"
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    message = body["error"]["message"]
    assert message.endswith(".") and len(message) > 10, message
    if code is not None:
        assert body["error"]["code"] == code
    assert body["error"].get("field") == field
    assert response.headers["Cache-Control"] == "no-store"


# --- the store's keys ---------------------------------------------------------------------------


async def test_keys_are_stored_only_as_hashes(tmp_path, monkeypatch):
    store = await open_store(tmp_path / "bot.sqlite3", monkeypatch)
    try:
        key_id, plaintext = await store.create_key(GUILD, "site", ADMIN)
        assert re.fullmatch(r"cfb_[A-Za-z0-9_-]{43}", plaintext)
        other_id, other = await store.create_key(GUILD, "bot", ADMIN)
        assert other != plaintext and other_id != key_id
        found = await store.key_by_plaintext(plaintext)
        assert found is not None and (found.id, found.guild_id, found.name, found.created_by) == (key_id, GUILD,
                                                                                                     "site", ADMIN)
        assert found.prefix == plaintext[:8] and not found.revoked and "secret" not in repr(found)
        for wrong in ("", plaintext[:-1], plaintext + "x", "x" * 5000, plaintext.upper()):
            assert await store.key_by_plaintext(wrong) is None
        assert [key.id for key in await store.keys(GUILD)] == [other_id, key_id]
        assert await store.keys(OTHER_GUILD) == []
        assert not await store.revoke_key(key_id, OTHER_GUILD)  # not that server's key
        assert await store.revoke_key(key_id, GUILD)
        assert not await store.revoke_key(key_id, GUILD)  # already
        assert (await store.key_by_plaintext(plaintext)).revoked
        assert await store.set_webhook(other_id, "https://example.org/hook", "whsec_x")
        assert (await store.key(other_id)).webhook_url == "https://example.org/hook"
        with pytest.raises(ValueError):
            await store.set_webhook(other_id, "https://example.org/hook", None)
        job = await store.add_job(Job(id=None, kind="txt2img", user_id=1, channel_id=0, guild_id=GUILD,
                                      request={"prompt": "x"}))
        await store.add_api_job(other_id, job.id)
        assert await store.api_job_key(job.id) == other_id and await store.api_job_key(job.id + 1) is None
        assert await store.api_job_ids(other_id, 10) == [job.id] and await store.api_job_ids(other_id, 10, job.id) == []
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        dump = "\n".join(db.iterdump())
    assert plaintext not in dump and other not in dump  # never the key itself
    assert store_api.hash_key(plaintext) in dump


# --- generations ---------------------------------------------------------------------------------


async def test_submit_get_and_files(api):
    response, body = await api.call("POST", f"{API}/generations", json={
        "prompt": "a lighthouse", "negative_prompt": "blur", "width": 512, "height": 768, "steps": 20, "cfg": 6.5,
        "seed": 7, "batch": 2, "model": "sdxl", "style": "watercolor",
        "loras": [{"name": "detail.safetensors", "strength": 0.5}, {"name": "ink"}]})
    assert response.status == 202, body
    assert body == {"id": 100, "state": "waiting", "position": 0}
    assert response.headers["Location"].endswith(f"{API}/generations/100")
    key_id, kind, request, images = api.service.submitted[0]
    assert kind == "txt2img" and images == {}
    assert request == {"prompt": "a lighthouse", "negative_prompt": "blur", "width": 512, "height": 768, "steps": 20,
                       "cfg": 6.5, "seed": 7, "batch": 2, "model": "sdxl", "style": "watercolor",
                       "loras": [["detail.safetensors", 0.5], ["ink", 1.0]]}
    assert key_id == (await api.store.key_by_plaintext(api.keys["alice"])).id

    second = await api.submit()
    response, body = await api.call("GET", f"{API}/generations/{second}")
    assert response.status == 200 and body["state"] == "waiting" and body["position"] == 1 and body["files"] == []
    names = api.service.finish(100)
    response, body = await api.call("GET", f"{API}/generations/100")
    assert response.status == 200
    assert body["state"] == "done" and body["position"] is None and body["error"] is None
    base = str(api.client.make_url(""))
    assert body["files"] == [f"{base}{API}/generations/100/files/0", f"{base}{API}/generations/100/files/1"]
    assert body["settings"]["seed"] == 7 and body["settings"]["prompt"] == "a lighthouse"
    assert "checkpoint" not in body["settings"] and "input" not in body["settings"]  # only the documented ones
    schema_validator(api_module_document(api), "Generation").validate(body)

    response, data = await api.call("GET", body["files"][1].removeprefix(base))
    assert response.status == 200 and data == (api.settings.outputs_dir / names[1]).read_bytes()
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="generation-100-1.png"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response, body = await api.call("GET", f"{API}/generations/100/files/2")
    assert_error(response, body, 404, "not_found")
    (api.settings.outputs_dir / names[0]).unlink()
    response, body = await api.call("GET", f"{API}/generations/100/files/0")
    assert_error(response, body, 410, "file_gone")


async def test_failed_generation_says_why(api):
    job_id = await api.submit()
    api.service.fail(job_id, "ComfyUI ran out of memory; try a smaller size.")
    response, body = await api.call("GET", f"{API}/generations/{job_id}")
    assert body["state"] == "failed" and body["error"] == "ComfyUI ran out of memory; try a smaller size."
    assert body["files"] == [] and body["position"] is None


async def test_image_kinds_take_base64_images(api):
    image = png()
    await api.submit(kind="img2img", image=base64.b64encode(image).decode(), strength=0.4)
    await api.submit(kind="inpaint", image="data:image/png;base64," + base64.b64encode(image).decode(),
                     mask=base64.urlsafe_b64encode(png()).decode().rstrip("="))
    await api.submit(kind="upscale", image=base64.b64encode(image).decode(), factor=4, prompt=None)
    (_, kind1, request1, images1), (_, kind2, _, images2), (_, kind3, request3, images3) = api.service.submitted
    assert (kind1, request1, images1) == ("img2img", {"prompt": "a fox", "strength": 0.4}, {"image": image})
    assert kind2 == "inpaint" and images2 == {"image": image, "mask": png()}
    assert (kind3, request3, images3) == ("upscale", {"factor": 4}, {"image": image})


async def test_cancel(api):
    job_id = await api.submit()
    response, body = await api.call("POST", f"{API}/generations/{job_id}/cancel")
    assert response.status == 200 and body["state"] == "cancelled" and body["error"] == "You cancelled it."
    done = await api.submit()
    api.service.finish(done)
    response, body = await api.call("POST", f"{API}/generations/{done}/cancel")
    assert_error(response, body, 409, "already_finished")
    response, body = await api.call("POST", f"{API}/generations/999/cancel")
    assert_error(response, body, 404, "not_found")


async def test_list_newest_first_with_pages(api):
    mine = [await api.submit() for _ in range(5)]
    await api.submit("bob")
    response, body = await api.call("GET", f"{API}/generations?limit=2")
    assert response.status == 200
    assert [item["id"] for item in body["generations"]] == mine[::-1][:2] and body["next_before"] == mine[3]
    schema_validator(api_module_document(api), "GenerationList").validate(body)
    seen = []
    before: int | None = None
    while True:
        query = f"?limit=2&before={before}" if before else "?limit=2"
        _, body = await api.call("GET", f"{API}/generations{query}")
        seen += [item["id"] for item in body["generations"]]
        before = body["next_before"]
        if before is None:
            break
    assert seen == mine[::-1]
    _, body = await api.call("GET", f"{API}/generations")
    assert len(body["generations"]) == 5 and body["next_before"] is None
    for query, field in (("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("before=-1", "before"),
                         ("before=1.5", "before"), ("limit=", "limit"), ("limit=1&limit=2", "limit"),
                         ("before=9223372036854775808", "before"), ("limt=5", "limt")):
        response, body = await api.call("GET", f"{API}/generations?{query}")
        assert_error(response, body, 400, "invalid_field", field)
    _, body = await api.call("GET", f"{API}/generations?limt=5")
    assert body["error"]["message"] == "limt is not a parameter of this route (it takes limit and before)."
    _, body = await api.call("GET", f"{API}/generations?limit=")
    assert body["error"]["message"] == "limit must be a whole number from 1 to 100."


# --- who may see what ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers, code", [
    ({}, "unauthorized"),
    ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "unauthorized"),
    ({"Authorization": "Bearer "}, "unauthorized"),
    ({"Authorization": "Bearer cfb_not-a-key"}, "unauthorized"),
    ({"Authorization": "Bearer " + "x" * 5000}, "unauthorized"),
])
async def test_missing_or_unknown_key_is_401(api, headers, code):
    for method, path in (("GET", f"{API}/generations"), ("POST", f"{API}/generations"),
                         ("GET", f"{API}/generations/100"), ("POST", f"{API}/generations/100/cancel"),
                         ("GET", f"{API}/generations/100/files/0"), ("GET", f"{API}/webhook"),
                         ("PUT", f"{API}/webhook"), ("DELETE", f"{API}/webhook")):
        response, body = await api.call(method, path, None, headers=headers, json={"prompt": "x"})
        assert_error(response, body, 401, code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert api.service.submitted == []


async def test_revoked_key_is_401(api):
    response, body = await api.call("POST", f"{API}/generations", "revoked", json={"prompt": "x"})
    assert_error(response, body, 401, "revoked")
    assert api.service.submitted == []
    key = await api.store.key_by_plaintext(api.keys["alice"])
    await api.submit()
    await api.store.revoke_key(key.id)
    response, body = await api.call("GET", f"{API}/generations/100")
    assert_error(response, body, 401, "revoked")


async def test_another_keys_generation_is_404_as_if_missing(api):
    job_id = await api.submit("alice")
    api.service.finish(job_id)
    missing = {}
    for method, path in (("GET", f"{API}/generations/{{}}"), ("POST", f"{API}/generations/{{}}/cancel"),
                         ("GET", f"{API}/generations/{{}}/files/0")):
        response, body = await api.call(method, path.format(job_id), "bob")
        assert_error(response, body, 404, "not_found")
        other = await api.call(method, path.format(job_id + 50), "bob")
        assert (other[0].status, other[1]) == (404, body)  # exactly as for one that does not exist
        missing[path] = body
        response, body = await api.call(method, path.format(job_id), "other")  # another server's key
        assert response.status == 404
    _, body = await api.call("GET", f"{API}/generations", "bob")
    assert body["generations"] == []
    response, _ = await api.call("GET", f"{API}/generations/{job_id}", "alice")
    assert response.status == 200
    response, body = await api.call("GET", f"{API}/generations/99999999999999999999")  # past 19 digits
    assert_error(response, body, 404, "not_found")
    response, body = await api.call("GET", f"{API}/generations/0")
    assert_error(response, body, 404, "not_found")


# --- bad input -----------------------------------------------------------------------------------

IMAGE = base64.b64encode(png()).decode()


async def test_a_null_is_refused_as_the_schemas_have_none(api):
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "a fox", "seed": None})
    assert_error(response, body, 400, "invalid_field", "seed")
    assert body["error"]["message"] == "seed must not be null; leave it out instead."
    assert api.service.submitted == []


@pytest.mark.parametrize("fields, field", [
    ({"kind": "nope"}, "kind"),
    ({"kind": 3}, "kind"),
    ({"widht": 512}, "widht"),
    ({"prompt": None}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 1501}, "prompt"),
    ({"width": 10}, "width"),
    ({"width": 99999}, "width"),
    ({"width": 512.5}, "width"),
    ({"width": "512"}, "width"),
    ({"width": True}, "width"),
    ({"steps": 0}, "steps"),
    ({"cfg": 31}, "cfg"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**53}, "seed"),
    ({"kind": "video_upscale"}, "kind"),  # takes a video result of the bot: not offered over HTTP
    ({"batch": 99}, "batch"),
    ({"model": ["sdxl"]}, "model"),
    ({"loras": [{"name": "a"}] * 4}, "loras"),
    ({"loras": [{"name": "a", "strength": 3}]}, "loras"),
    ({"loras": [{"file": "a"}]}, "loras"),
    ({"strength": 0.5}, "strength"),  # not taken by txt2img
    ({"image": IMAGE}, "image"),  # nor this
    ({"kind": "img2img"}, "image"),  # needs one
    ({"kind": "img2img", "image": "not base64!"}, "image"),
    ({"kind": "img2img", "image": base64.b64encode(b"GIF-ish but not an image").decode()}, "image"),
    ({"kind": "img2img", "image": 12}, "image"),
    ({"kind": "img2img", "image": IMAGE, "strength": 2}, "strength"),
    ({"kind": "inpaint", "image": IMAGE}, "mask"),
    ({"kind": "upscale", "image": IMAGE, "prompt": None}, "factor"),
    ({"kind": "upscale", "image": IMAGE, "prompt": None, "factor": 3}, "factor"),
    ({"kind": "upscale", "image": IMAGE, "factor": 2}, "prompt"),  # upscale takes no prompt
    ({"kind": "outpaint", "image": IMAGE, "prompt": None, "zoom": 3}, "zoom"),
    ({"kind": "controlnet", "image": IMAGE, "control_start": 1.5}, "control_start"),
])
async def test_bad_input_names_the_field(api, fields, field):
    response, body = await api.call("POST", f"{API}/generations",
                                    json={key: value for key, value in {"prompt": "a fox", **fields}.items()
                                          if value is not None})
    assert_error(response, body, 400, "invalid_field", field)
    assert field in body["error"]["message"]
    assert api.service.submitted == []


async def test_bad_json_is_400(api):
    for data in (b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'"text"'):
        response, body = await api.call("POST", f"{API}/generations", data=data,
                                        headers={"Content-Type": "application/json"})
        assert_error(response, body, 400, "invalid_json")


async def test_bot_refusals_become_errors(api):
    api.service.refusal = RequestError("width must be between 64 and 2048 (got 4000)")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x", "width": 1024})
    assert_error(response, body, 400, "invalid_field", "width")
    api.service.refusal = RequestError("control strength must be between 0 and 2 (got 3)")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 400, "invalid_field", "control_strength")
    api.service.refusal = RequestError("upscale factor must be one of 2x, 4x, 8x")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 400, "invalid_field", "factor")
    api.service.refusal = RequestError("the image's size is not known, so it cannot be zoomed out")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 400, "invalid_field", "request")
    api.service.refusal = InvalidField("model", "there is no model preset 'zzz' here")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x", "model": "zzz"})
    assert_error(response, body, 400, "invalid_field", "model")
    api.service.refusal = LimitReached("This key already has 3 generations waiting or running", retry_after=12.2)
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 429, "limit_reached")
    assert response.headers["Retry-After"] == "13"
    api.service.refusal = Unavailable("The bot is paused on this server")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 503, "unavailable")
    assert body["error"]["message"] == "The bot is paused on this server."
    assert int(response.headers["Retry-After"]) > 0
    api.service.refusal = ApiError(403, "forbidden", "That style is only for age-restricted channels")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 403, "forbidden")
    api.service.refusal = RuntimeError("a bug with a secret in it")
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "x"})
    assert_error(response, body, 500, "internal")
    assert "secret" not in json.dumps(body)


async def test_body_too_large_is_413(api):
    big = b'{"prompt": "' + b"x" * LIMIT + b'"}'
    response, body = await api.call("POST", f"{API}/generations", data=io.BytesIO(big),
                                    headers={"Content-Type": "application/json"})
    assert_error(response, body, 413, "too_large")

    async def chunks():  # no Content-Length: counted while read
        yield b'{"prompt": "'
        for _ in range(LIMIT // (1024 * 1024) + 1):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response, body = await api.call("POST", f"{API}/generations", data=chunks(),
                                    headers={"Content-Type": "application/json"})
    assert_error(response, body, 413, "too_large")
    huge_image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(api_fields.IMAGE_LIMIT)).decode()
    huge = json.dumps({"kind": "img2img", "prompt": "x", "image": huge_image}).encode()
    assert len(huge) < LIMIT  # the body fits: the image is what is too large
    response, body = await api.call("POST", f"{API}/generations", data=io.BytesIO(huge),
                                    headers={"Content-Type": "application/json"})
    assert_error(response, body, 413, "too_large", "image")
    response, body = await api.call("PUT", f"{API}/webhook", json={"url": "https://example.org/" + "x" * 70_000})
    assert_error(response, body, 413, "too_large")
    assert api.service.submitted == []
    assert await api.submit() == 100  # the server is fine afterwards


async def test_too_many_requests_is_429(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    store = await open_store(tmp_path / "bot.sqlite3", monkeypatch)
    now = [1000.0]
    app = web.Application()
    api_module.add_routes(app, FakeService(tmp_path), store, settings,
                          limiter=RateLimiter(burst=3, per_second=0.5, clock=lambda: now[0]))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        _, alice = await store.create_key(GUILD, "a", ADMIN)
        _, bob = await store.create_key(GUILD, "b", ADMIN)

        async def get(key: str):
            async with client.get(f"{API}/generations", headers={"Authorization": f"Bearer {key}"}) as response:
                return response, await response.json()

        for _ in range(3):
            assert (await get(alice))[0].status == 200
        response, body = await get(alice)
        assert_error(response, body, 429, "too_many_requests")
        assert response.headers["Retry-After"] == "2"  # one request back after 2 s at 0.5 a second
        assert (await get(bob))[0].status == 200  # each key has its own
        now[0] += 2
        assert (await get(alice))[0].status == 200
        assert (await get(alice))[0].status == 429
    finally:
        await client.close()
        await store.close()


# --- routes, errors and the document -------------------------------------------------------------


async def test_unknown_routes_and_methods_are_json(api):
    response, body = await api.call("GET", f"{API}/nothing")
    assert_error(response, body, 404, "not_found")
    response, body = await api.call("DELETE", f"{API}/generations")
    assert_error(response, body, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    response, _ = await api.call("GET", "/g/not-a-token")  # the gallery keeps its HTML pages
    assert response.status == 403 and response.content_type == "text/html"


async def test_webhook_routes(api):
    response, body = await api.call("GET", f"{API}/webhook")
    assert response.status == 200 and body == {"url": None, "deliveries": []}
    # a public address, so that no name is looked up from the tests
    response, body = await api.call("PUT", f"{API}/webhook", json={"url": "https://93.184.215.14/hook"})
    assert response.status == 200 and body["url"] == "https://93.184.215.14/hook"
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    key = await api.store.key_by_plaintext(api.keys["alice"])
    assert (key.webhook_url, key.webhook_secret) == ("https://93.184.215.14/hook", body["secret"])
    await api.store.queue_delivery(key.id, "generation.done", {"event": "generation.done", "id": 100})
    response, body = await api.call("GET", f"{API}/webhook")
    assert body["url"] == "https://93.184.215.14/hook" and body["deliveries"][0]["state"] == "pending"
    assert body["deliveries"][0]["job_id"] == 100
    schema_validator(api_module_document(api), "Webhook").validate(body)
    _, again = await api.call("PUT", f"{API}/webhook", json={"url": "https://93.184.215.14/hook"})
    assert again["secret"] != key.webhook_secret  # a new secret each time
    for bad in ({"url": "ftp://example.org/"}, {"url": "https://user:pw@example.org/"}, {"url": "/relative"},
                {"url": 5}, {}, {"url": "https://example.org/", "secret": "mine"}):
        response, body = await api.call("PUT", f"{API}/webhook", json=bad)
        assert_error(response, body, 400, "invalid_field", "secret" if "secret" in bad else "url")
    response, body = await api.call("GET", f"{API}/webhook", "bob")
    assert body["url"] is None  # bob's key has none
    response, _ = await api.call("DELETE", f"{API}/webhook")
    assert response.status == 204
    assert (await api.store.key(key.id)).webhook_url is None


# --- where a webhook may lead, checked when it is set ----------------------------------------------

LOOPBACK = "leads to 127.0.0.1, a loopback address; webhooks go only to public internet addresses."
SHORT_FORM = "is an IP address in a short or old form that cannot be sent to; write it as four numbers, " \
             "like 203.0.113.7."


@pytest.mark.parametrize("host, said", [
    ("127.1", f"url's host 127.1 {SHORT_FORM}"),
    ("2130706433", f"url's host 2130706433 {SHORT_FORM}"),
    ("0177.0.0.1", f"url's host 0177.0.0.1 {SHORT_FORM}"),
    ("127.0.0.1.", f"url's host 127.0.0.1. {SHORT_FORM}"),
    ("0x7f.1", f"url's host 0x7f.1 {LOOPBACK}"),
    ("127.0.0.1", "url's host 127.0.0.1 is a loopback address; webhooks go only to public internet addresses."),
    ("[::ffff:127.0.0.1]", "url's host ::ffff:127.0.0.1 is a loopback address; webhooks go only to public "
                           "internet addresses."),
    ("[::1]", "url's host ::1 is a loopback address; webhooks go only to public internet addresses."),
    ("localhost.", "url's host localhost. is this machine; webhooks go only to public internet addresses."),
    ("LOCALHOST", "url's host localhost is this machine; webhooks go only to public internet addresses."),
    ("10.0.0.7", "url's host 10.0.0.7 is a private address; webhooks go only to public internet addresses."),
    ("169.254.169.254", "url's host 169.254.169.254 is a link-local address; webhooks go only to public internet "
                        "addresses."),
    ("[fe80::1%25eth0]", "url's host fe80::1%25eth0 is a link-local address; webhooks go only to public internet "
                         "addresses."),
    ("0.0.0.0", "url's host 0.0.0.0 is an unspecified address; webhooks go only to public internet addresses."),
])
async def test_a_webhook_to_a_private_host_is_refused_when_set(api, host, said):
    url = f"http://{host}:8080/hook"
    response, body = await api.call("PUT", f"{API}/webhook", json={"url": url})
    assert response.status == 400, body
    assert body == {"error": {"code": "invalid_field", "message": said, "field": "url"}}
    key = await api.store.key_by_plaintext(api.keys["alice"])
    assert key.webhook_url is None


async def test_webhook_private_ok_lets_private_hosts_be_set(tmp_path, monkeypatch):
    made = await serve(tmp_path, monkeypatch, webhook_private_ok=True)
    try:
        for url in ("http://127.0.0.1:8080/hook", "http://localhost:8080/hook", "http://[::1]:8080/hook",
                    "http://0x7f.1:8080/hook"):
            response, body = await made.call("PUT", f"{API}/webhook", json={"url": url})
            assert response.status == 200 and body["url"] == url, body
        response, body = await made.call("PUT", f"{API}/webhook", json={"url": "http://127.1:8080/hook"})
        assert body["error"]["message"] == f"url's host 127.1 {SHORT_FORM}"  # never deliverable, whatever is allowed
    finally:
        await made.client.close()
        await made.store.close()


def api_module_document(api: Client) -> dict:
    return api_module.Api(api.service, api.store, api.settings).document


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app has under /api/v1, HEAD aside."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(API) and route.method != "HEAD":
            found.add((route.method, path))
    return found


async def test_openapi_document_matches_the_routes(api):
    response, document = await api.call("GET", f"{API}/openapi.json", None)  # no key needed
    assert response.status == 200
    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert documented == registered(api.client.app)
    assert len(documented) >= 9


async def test_openapi_document_shape(api):
    _, document = await api.call("GET", f"{API}/openapi.json", None)
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert {"openapi", "info", "paths", "components"} <= set(document)
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": document["components"]["securitySchemes"]["bearer"]
        ["description"]}
    assert document["security"] == [{"bearer": []}]
    operation_ids = []
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    for path, operations in [*document["paths"].items(), *document["webhooks"].items()]:
        assert set(operations) <= methods, path
        for method, operation in operations.items():
            assert operation["responses"], (method, path)
            assert all(re.fullmatch(r"[1-5](\d\d|XX)", status) for status in operation["responses"])
            operation_ids.append(operation["operationId"])
            for name in re.findall(r"{(\w+)}", path):  # every path parameter is described
                assert any(p["name"] == name and p["in"] == "path" and p["required"]
                           for p in operation.get("parameters", [])), (path, name)
            if operation.get("security") != [] and path.startswith(API):
                assert "401" in operation["responses"], (method, path)
    assert len(operation_ids) == len(set(operation_ids))

    def refs(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "$ref":
                    yield item
                else:
                    yield from refs(item)
        elif isinstance(value, list):
            for item in value:
                yield from refs(item)

    for ref in refs(document):  # every reference leads somewhere
        target = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    request_schema = schema_validator(document, "GenerationRequest")
    request_schema.validate({"kind": "img2img", "prompt": "x", "image": IMAGE, "strength": 0.5})
    with pytest.raises(jsonschema.ValidationError):
        request_schema.validate({"widht": 5})
    request_schema.validate({"prompt": "x"})  # no kind: a txt2img
    for bad in ({"kind": "upscale", "image": IMAGE}, {"kind": "txt2img", "prompt": "  "},
                {"kind": "animate", "image": IMAGE, "prompt": "x"}, {"kind": "video", "prompt": "x"}):
        with pytest.raises(jsonschema.ValidationError):  # no factor; a blank prompt; a field it does not take
            request_schema.validate(bad)
    schemas = document["components"]["schemas"]
    assert set(schemas["GenerationRequest"]["discriminator"]["mapping"]) == set(KINDS)
    assert not {"video_upscale", "interpolate"} & set(KINDS) and {"animate", "text_to_video"} <= set(KINDS)
    assert schemas["Txt2imgRequest"]["properties"]["width"]["maximum"] == api.settings.max_width


async def test_responses_match_the_document(api):
    _, document = await api.call("GET", f"{API}/openapi.json", None)
    response, body = await api.call("POST", f"{API}/generations", json={"prompt": "a fox"})
    schema_validator(document, "Accepted").validate(body)
    api.service.finish(body["id"])
    _, body = await api.call("GET", f"{API}/generations/{body['id']}")
    schema_validator(document, "Generation").validate(body)
    _, body = await api.call("GET", f"{API}/generations/12345")
    schema_validator(document, "Error").validate(body)
    _, body = await api.call("POST", f"{API}/generations", json={"width": 1})
    schema_validator(document, "Error").validate(body)


def test_the_fake_service_has_the_protocol_signatures():
    import inspect

    for name in ("submit", "get", "cancel", "list", "file"):
        protocol, fake = getattr(ApiService, name), getattr(FakeService, name)
        assert inspect.iscoroutinefunction(protocol) and inspect.iscoroutinefunction(fake)
        assert list(inspect.signature(protocol).parameters) == list(inspect.signature(fake).parameters), name


def test_file_urls():
    assert api_views.file_urls("https://bot.example.org/", 12, 2) == [
        "https://bot.example.org/api/v1/generations/12/files/0", "https://bot.example.org/api/v1/generations/12/files/1"]
