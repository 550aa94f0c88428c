"""The versioned HTTP API under /api/v1: other programs (a website, another bot) queue generations in
the same queue as the bot's Discord users, follow them, fetch their files and get webhooks.

Every route but `GET /api/v1/openapi.json` needs `Authorization: Bearer <key>`, a key a server admin made
(store/api.py): a missing, unknown or revoked key is 401. A key sees only the generations it started:
another key's is 404, exactly as one that does not exist. Errors are JSON,
`{"error": {"code": "...", "message": "A sentence.", "field": "width"}}` (field only when one is wrong),
with the status that fits: 400 bad input, 401, 404, 405, 409, 410, 413 a body over BODY_LIMIT, 429 over
the key's limits (with Retry-After), 503 when the bot cannot take jobs.

The routes talk to the bot only through an `ApiService` (bot.py implements it; the tests fake it).
Beside this module: web/api_fields.py checks a generation request's fields, web/api_views.py makes the
JSON view of a generation, web/api_errors.py the JSON errors. The document of it all is web/openapi.py,
served at /api/v1/openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from config import MIB, Settings
from image_gen import RequestError
from jobs import user_workflow
from safe_text import clip
from store.api import ApiKey
from web import openapi, webhooks
from web.api_errors import NO_STORE, ApiError, InvalidField, json_response
from web.api_fields import KINDS, parse_request, request_error, request_fields
from web.api_views import API, generation_view, position

log = structlog.get_logger(__name__)

BODY_LIMIT = 25 * MIB  # bytes of a request body
SMALL_BODY = 64 * 1024  # bytes of a body that holds no image
OFF_LOOP = 256 * 1024  # bytes of a body from which it is decoded in a thread
LIST_DEFAULT, LIST_MAX = 20, 100
BURST, PER_SECOND = 60, 2.0  # requests per key: this many at once, refilled at this rate
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}
_MAX_ID = openapi.MAX_ID


class ApiService(Protocol):
    """What the API needs from the bot (bot.py implements it; the tests fake it). `key` is the
    authenticated, unrevoked key; a job of another key is None, never another answer.

    A generation is a dict: {"id": int (the job id), "kind": str, "state": one of store.JOB_STATES,
    "position": int | None (jobs ahead, while waiting), "error": str | None (the sentence, when failed or
    cancelled), "files": int (how many result files, when done), "settings": dict (what it ran with:
    prompt, seed, width, ...; other keys are left out), "created_at": float, "updated_at": float}.
    """

    async def submit(self, key: ApiKey, kind: str, request: dict[str, Any], images: dict[str, bytes]) -> dict:
        """Queue a job of `kind` (one of kinds.KINDS) for the key, counted as one person of the key's
        server. `request` holds the checked fields given (as the /generate request: prompt, width, ...,
        "loras" as [[name, strength]]); `images` the decoded "image" and "mask" the kind takes.
        Returns {"id", "state", "position"}. Raises InvalidField for a bad value (a RequestError is
        taken as one too), LimitReached (429) at the key's or its server's limits, Unavailable (503)
        when no job can be taken, or ApiError(403, ...) for a refusal by the server's rules."""
        ...

    async def get(self, key: ApiKey, job_id: int) -> dict | None:
        """The key's generation `job_id`, or None."""
        ...

    async def cancel(self, key: ApiKey, job_id: int) -> dict | None:
        """Cancel the key's generation `job_id` if it has not finished; the generation after that, or None."""
        ...

    async def list(self, key: ApiKey, limit: int, before: int | None) -> list[dict]:
        """The key's generations, newest first (ids below `before` when given), at most `limit`."""
        ...

    async def file(self, key: ApiKey, job_id: int, index: int) -> Path | str | None:
        """The path of result file `index` of the key's generation `job_id` (inside OUTPUTS_DIR; it may no
        longer exist), a presigned URL of it in the bucket (OUTPUT_STORE), or None when there is no such
        generation or file."""
        ...


# --- per-key request limit ---------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_second`."""

    def __init__(self, burst: int = BURST, per_second: float = PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._burst, self._rate, self._clock = float(burst), per_second, clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key id: (tokens, when)

    def take(self, key_id: int) -> float:
        """0 when a request may go now (and counts it), else the seconds until one may."""
        now = self._clock()
        tokens, then = self._buckets.get(key_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self._rate if self._rate > 0 else 3600.0
        self._buckets[key_id] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget the full ones
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self._burst - 1}
        return 0.0


# --- the routes --------------------------------------------------------------------------------


class Api:
    """The route handlers and what they share."""

    def __init__(self, service: ApiService, store: Any, settings: Settings, *,
                 limiter: RateLimiter | None = None, body_limit: int = BODY_LIMIT) -> None:
        self._service = service
        self._store = store
        self._settings = settings
        self._limiter = limiter or RateLimiter()
        self._body_limit = body_limit
        self._outputs = settings.outputs_dir.resolve()
        self.fields = request_fields(settings)
        self.document = openapi.document(self.fields, KINDS, body_limit=body_limit, list_max=LIST_MAX)
        self._document_body = json.dumps(self.document, separators=(",", ":")).encode("utf-8")

    def add_routes(self, app: web.Application) -> None:
        generation = API + "/generations/{id:[0-9]{1,19}}"
        app.router.add_post(API + "/generations", self.create)
        app.router.add_get(API + "/generations", self.list)
        app.router.add_get(generation, self.get)
        app.router.add_post(generation + "/cancel", self.cancel)
        app.router.add_get(generation + "/files/{index:[0-9]{1,4}}", self.file)
        app.router.add_get(API + "/webhook", self.webhook)
        app.router.add_put(API + "/webhook", self.set_webhook)
        app.router.add_delete(API + "/webhook", self.delete_webhook)
        app.router.add_get(API + "/openapi.json", self.openapi)
        app.middlewares.append(json_errors)

    # --- generations ----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        data = await _read(request, self._body_limit)
        if len(data) > OFF_LOOP:  # decoding megabytes of JSON and base64 would stall every other request
            kind, values, images = await asyncio.to_thread(lambda: parse_request(_parse_json(data), self.fields))
        else:
            kind, values, images = parse_request(_parse_json(data), self.fields)
        try:
            if kind == user_workflow.NAME:  # a workflow shared in the key's server: bound as /generate binds it
                values = await self._workflow_request(key, values)
            accepted = await self._service.submit(key, kind, values, images)
        except RequestError as exc:
            raise request_error(str(exc), ["kind", *(spec.name for spec in self.fields)]) from None
        job_id = int(accepted["id"])
        log.info("api_submitted", key_id=key.id, job_id=job_id, kind=kind)
        state = str(accepted.get("state") or "waiting")
        return json_response({"id": job_id, "state": state, "position": position(accepted.get("position"))}, 202,
                     headers={"Location": f"{_base(request, self._settings)}{API}/generations/{job_id}"})

    async def _workflow_request(self, key: ApiKey, values: dict[str, Any]) -> dict[str, Any]:
        """The request of a job of kind "workflow": `workflow` (a name, or "#id") found among those shared in
        the key's Discord server, its current version and the values given (a model preset as its checkpoint)."""
        text, guild = str(values.pop("workflow")).strip(), key.guild_id or 0
        found = None
        if text.lstrip("#").isdigit() and len(text) < 19:
            found = await self._store.workflow(int(text.lstrip("#")))
            found = found if found and found.deleted_at is None and found.guild_id == guild and found.shared else None
        if found is None:
            found = next((w for w in await self._store.workflows_for(guild, -key.id, query=text, limit=25)
                          if w.name == text), None)
        if found is None:
            raise InvalidField("workflow", f"there is no workflow {clip(text, 80)!r} shared in this key's server")
        if "style" in values:
            raise InvalidField("style", "style is not taken by workflow; put the style's words in the prompt")
        if "model" in values:
            preset = self._settings.model_presets.get(values.pop("model"))
            if preset is None:
                raise InvalidField("model", "model must be one of the operator's presets (/models in Discord)")
            values["checkpoint"] = preset.checkpoint
        version = await self._store.version(found.id, found.version)
        return user_workflow.request_for(self._settings, found.id, found.name, version.version, version.graph,
                                         version.bindings, values, set(values), [], [])

    async def get(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        found = await self._service.get(key, _id(request))
        if found is None:
            raise _not_found()
        return json_response(generation_view(found, _base(request, self._settings)))

    async def cancel(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        found = await self._service.cancel(key, _id(request))
        if found is None:
            raise _not_found()
        view = generation_view(found, _base(request, self._settings))
        if view["state"] in ("done", "failed"):
            ended = "finished" if view["state"] == "done" else "failed"
            raise ApiError(409, "already_finished",
                           f"Generation {view['id']} had already {ended}, so it cannot be cancelled")
        return json_response(view, 200 if view["state"] == "cancelled" else 202)

    async def list(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        if unknown := sorted(set(request.query) - {"limit", "before"}):
            raise InvalidField(clip(unknown[0], 50), f"{clip(unknown[0], 50)} is not a parameter of this route "
                               "(it takes limit and before)")
        limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
        before = _query_int(request, "before", None, 1, _MAX_ID)
        found = await self._service.list(key, limit, before)
        base = _base(request, self._settings)
        views = [generation_view(item, base) for item in found[:limit]]
        return json_response({"generations": views, "next_before": views[-1]["id"] if len(views) == limit else None})

    async def file(self, request: web.Request) -> web.StreamResponse:
        key = await self._key(request)
        job_id, index = _id(request), int(request.match_info["index"])
        path = await self._service.file(key, job_id, index)
        if path is None:
            raise _not_found()
        if isinstance(path, str):  # a presigned URL into the bucket (OUTPUT_STORE): the bytes come from there
            return web.Response(status=302, headers={"Location": path, "Cache-Control": "no-store"})
        resolved = await asyncio.to_thread(lambda: Path(path).resolve())
        if not resolved.is_relative_to(self._outputs) or not await asyncio.to_thread(resolved.is_file):
            raise ApiError(410, "file_gone", "The bot no longer keeps this file")
        content_type = CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream")
        name = f"generation-{job_id}-{index}{resolved.suffix.lower() if content_type in CONTENT_TYPES.values() else ''}"
        return web.FileResponse(resolved, headers={"Content-Type": content_type, "Cache-Control": "private",
                                                   "Content-Disposition": f'attachment; filename="{name}"'})

    # --- webhook --------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        deliveries = await self._store.deliveries(key.id, 10)
        return json_response({"url": key.webhook_url, "deliveries": deliveries})

    async def set_webhook(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        body = _parse_json(await _read(request, SMALL_BODY))
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "The body must be a JSON object")
        if unknown := sorted(set(body) - {"url"}):
            raise InvalidField(str(unknown[0])[:50], f"{clip(unknown[0], 50)} is not a field of this API")
        try:
            url = await webhooks.check_destination(body.get("url"), allow_private=self._settings.webhook_private_ok)
        except ValueError as exc:
            raise InvalidField("url", str(exc)) from None
        secret = webhooks.new_secret()
        await self._store.set_webhook(key.id, url, secret)
        log.info("api_webhook_set", key_id=key.id)
        return json_response({"url": url, "secret": secret})

    async def delete_webhook(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        await self._store.set_webhook(key.id, None, None)
        log.info("api_webhook_removed", key_id=key.id)
        return web.Response(status=204, headers=NO_STORE)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._document_body, content_type="application/json",
                            headers={"Cache-Control": "public, max-age=300"})

    # --- access ---------------------------------------------------------------------------

    async def _key(self, request: web.Request) -> ApiKey:
        """The request's key, if it is known and not revoked; then counts the request against its limit."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.strip().partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="api"'}
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "unauthorized", "Send an API key in the Authorization header: Bearer <key>",
                           headers=challenge)
        key = await self._store.key_by_plaintext(presented.strip())
        if key is None:
            raise ApiError(401, "unauthorized", "This API key is not valid", headers=challenge)
        if key.revoked:
            raise ApiError(401, "revoked", "This API key was revoked; ask a server admin for a new one",
                           headers=challenge)
        wait = self._limiter.take(key.id)
        if wait > 0:
            raise ApiError(429, "too_many_requests", "This key sent too many requests; slow down",
                           retry_after=wait)
        return key


def add_routes(app: web.Application, service: ApiService, store: Any, settings: Settings, *,
               limiter: RateLimiter | None = None) -> Api:
    """Mount the API's routes under /api/v1 on `app`, with JSON errors for every path under it."""
    api = Api(service, store, settings, limiter=limiter)
    api.add_routes(app)
    return api


@web.middleware
async def json_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Under /api/: every refusal and failure as a JSON error, never the gallery's HTML pages."""
    if not (request.path == API or request.path.startswith(API + "/")):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        return ApiError(405, "method_not_allowed", f"This route takes {allowed}, not {request.method}",
                        headers={"Allow": allowed}).response()
    except web.HTTPNotFound:
        return ApiError(404, "not_found", "There is no such API route").response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return ApiError(error.status, "http_error", error.reason).response()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api_failed", path=request.match_info.route.resource.canonical
                      if request.match_info.route.resource else request.method)
        return ApiError(500, "internal", "The bot could not answer this request; please try again in a moment"
                        ).response()


# --- helpers -----------------------------------------------------------------------------------


async def _read(request: web.Request, limit: int) -> bytes:
    """The request's body, read up to `limit` bytes (413 past it). Read from the stream, so the app's
    client_max_size (the gallery's 64 KiB) does not apply here."""
    too_large = ApiError(413, "too_large", f"The body must be at most {_size(limit)}")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON") from None


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "There is no such generation for this key")


def _id(request: web.Request) -> int:
    job_id = int(request.match_info["id"])
    if not 0 < job_id <= _MAX_ID:
        raise _not_found()
    return job_id


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    given = request.query.getall(name, [])
    if not given:
        return default
    if len(given) > 1:
        raise InvalidField(name, f"{name} must be given once")
    text = given[0]
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not low <= int(text) <= high:
        raise InvalidField(name, f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _base(request: web.Request, settings: Settings) -> str:
    """Where clients reach the app: WEB_BASE_URL, else the address they used."""
    if settings.web_base_url:
        return settings.web_base_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB and limit % MIB == 0 else f"{limit // 1024} KiB"
