"""The versioned HTTP API under /api/v1: other programs (a website, another bot) queue generations in
the same queue as the bot's Discord users, follow them, fetch their files and get webhooks.

Every route but `GET /api/v1/openapi.json` needs `Authorization: Bearer <key>`, a key a server admin made
(store_api.py): a missing, unknown or revoked key is 401. A key sees only the generations it started:
another key's is 404, exactly as one that does not exist. Errors are JSON,
`{"error": {"code": "...", "message": "A sentence.", "field": "width"}}` (field only when one is wrong),
with the status that fits: 400 bad input, 401, 404, 405, 409, 410, 413 a body over BODY_LIMIT, 429 over
the key's limits (with Retry-After), 503 when the bot cannot take jobs.

The routes talk to the bot only through an `ApiService` (bot.py implements it; the tests fake it).
The document of it all is web/openapi.py, served at /api/v1/openapi.json.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from web import webhooks
from config import MIB, Settings
from image_gen import CONTROL, SEED_LIMIT, STRENGTH, UPSCALE_FACTORS, ZOOMS, RequestError
from jobs.kinds import KINDS
from safe_text import clip
from store.api import ApiKey
from web import openapi

log = structlog.get_logger(__name__)

API = "/api/v1"
BODY_LIMIT = 25 * MIB  # bytes of a request body
IMAGE_LIMIT = 16 * MIB  # bytes of one decoded image
SMALL_BODY = 64 * 1024  # bytes of a body that holds no image
OFF_LOOP = 256 * 1024  # bytes of a body from which it is decoded in a thread
PROMPT_MAX = 1500  # characters, as in Discord
NAME_MAX = 100  # characters of a model, style, sampler, scheduler or control type name
LORAS_MAX = 3
LIST_DEFAULT, LIST_MAX = 20, 100
ERROR_MAX = 500  # characters of a generation's error sentence
BURST, PER_SECOND = 60, 2.0  # requests per key: this many at once, refilled at this rate
NO_STORE = {"Cache-Control": "no-store"}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm"}
_MAX_ID = openapi.MAX_ID


class ApiError(Exception):
    """A request the API refuses: becomes {"error": {"code", "message", "field"?}} with `status`.

    The ApiService raises these (or the subclasses below) to refuse a job in words."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 retry_after: float | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, _sentence(message), field
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return _json({"error": error}, self.status, headers=self.headers)


class InvalidField(ApiError):
    """400: a request field is wrong; `message` says how ("width must be at most 2048")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, "invalid_field", message, field=field)


class LimitReached(ApiError):
    """429: the key's limits are reached (its active jobs, its server's quota, ...)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(429, "limit_reached", message, retry_after=retry_after or 60)


class Unavailable(ApiError):
    """503: the bot cannot take jobs now (paused, no ComfyUI server up, shutting down)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(503, "unavailable", message, retry_after=retry_after or 30)


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

    async def file(self, key: ApiKey, job_id: int, index: int) -> Path | None:
        """The path of result file `index` of the key's generation `job_id` (inside OUTPUTS_DIR; it may no
        longer exist), or None when there is no such generation or file."""
        ...


# --- the request fields ------------------------------------------------------------------------

SAMPLING = tuple(name for name, kind in KINDS.items() if "prompt" in kind.shown)
IMAGE_KINDS = tuple(name for name, kind in KINDS.items() if kind.image_input)
PROMPT_OPTIONAL = ("outpaint",)  # zooming out may go without a prompt


def _of(*names: str) -> tuple[str, ...]:
    return tuple(name for name in names if name in KINDS)


def request_fields(settings: Settings) -> list[openapi.RequestField]:
    """The fields of `POST /api/v1/generations` with this bot's limits (kind aside)."""
    field = openapi.RequestField
    prompted = tuple(name for name in SAMPLING if name not in PROMPT_OPTIONAL)
    low, high, _ = STRENGTH
    return [
        field("prompt", "string", "What to draw.", SAMPLING, prompted, max_length=PROMPT_MAX),
        field("negative_prompt", "string", "What to avoid.", SAMPLING, max_length=PROMPT_MAX),
        field("width", "integer", "Width in pixels.", _of("txt2img", "controlnet"), minimum=64,
              maximum=settings.max_width),
        field("height", "integer", "Height in pixels.", _of("txt2img", "controlnet"), minimum=64,
              maximum=settings.max_height),
        field("steps", "integer", "Sampling steps.", SAMPLING, minimum=1, maximum=settings.max_steps),
        field("cfg", "number", "How closely to follow the prompt.", SAMPLING, minimum=0, maximum=30),
        field("seed", "integer", "The same seed and settings give the same image; left out, a random one.",
              (*SAMPLING, *_of("animate")), minimum=0, maximum=SEED_LIMIT - 1),
        field("batch", "integer", "Images in one generation.", _of("txt2img", "controlnet"), minimum=1,
              maximum=settings.max_batch),
        field("model", "string", "One of the operator's model presets (/models in Discord).", SAMPLING,
              max_length=NAME_MAX),
        field("style", "string", "A style name: built in, or saved on the key's server.", SAMPLING,
              max_length=NAME_MAX),
        field("sampler", "string", "A sampler the servers have; left out, the workflow's own.", SAMPLING,
              max_length=NAME_MAX),
        field("scheduler", "string", "A noise schedule the servers have; left out, the workflow's own.", SAMPLING,
              max_length=NAME_MAX),
        field("loras", "loras", f"Up to {LORAS_MAX} LoRA files the servers have, each with a strength.", SAMPLING,
              maximum=LORAS_MAX),
        field("strength", "number", "How much of the image is redrawn.", _of("img2img", "inpaint"), minimum=low,
              maximum=high),
        field("factor", "integer", "How many times larger.", _of("upscale"), _of("upscale"),
              choices=UPSCALE_FACTORS),
        field("zoom", "number", "How far to zoom out.", _of("outpaint"), choices=ZOOMS),
        field("control_type", "string", "What to follow in the control image: canny, or another type the bot "
              "offers.", _of("controlnet"), max_length=NAME_MAX),
        *(field(f"control_{name}", "number", f"ControlNet {name} (default {default:g}).", _of("controlnet"),
                minimum=least, maximum=most) for name, (least, most, default) in CONTROL.items()),
        field("image", "base64", "The image to start from (for controlnet: the control image).", IMAGE_KINDS,
              IMAGE_KINDS, max_length=IMAGE_LIMIT),
        field("mask", "base64", "White where the image is redrawn, black where it stays.", _of("inpaint"),
              _of("inpaint"), max_length=IMAGE_LIMIT),
    ]


def parse_request(body: Any, fields: list[openapi.RequestField]) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """(kind, checked request values, decoded images) of a `POST /api/v1/generations` body; InvalidField
    naming the first wrong field, or ApiError 413 for an image over its limit."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object")
    by_name = {spec.name: spec for spec in fields}
    kind = body.get("kind", openapi.DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidField("kind", f"kind must be one of {', '.join(KINDS)}")
    for name in body:
        if name != "kind" and name not in by_name:
            raise InvalidField(str(name)[:50], f"{clip(name, 50)} is not a field of this API")
    request: dict[str, Any] = {}
    images: dict[str, bytes] = {}
    for spec in fields:
        value = body.get(spec.name)
        if value is None:
            if kind in spec.required_for:
                raise InvalidField(spec.name, f"{spec.name} is needed for {kind}")
            continue
        if kind not in spec.kinds:
            raise InvalidField(spec.name, f"{spec.name} is not taken by {kind} (only by {', '.join(spec.kinds)})")
        if spec.type == "base64":
            images[spec.name] = _image(spec, value)
        else:
            request[spec.name] = _value(spec, value)
            if spec.name == "prompt" and kind in spec.required_for and not value.strip():
                raise InvalidField("prompt", "prompt must not be empty")
    return kind, request, images


def _value(spec: openapi.RequestField, value: Any) -> Any:
    name = spec.name
    if spec.type == "string":
        if not isinstance(value, str):
            raise InvalidField(name, f"{name} must be a string")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidField(name, f"{name} must be at most {spec.max_length} characters")
        return value
    if spec.type == "loras":
        return _loras(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField(name, f"{name} must be a number")
    if spec.type == "integer":
        if isinstance(value, float) and not value.is_integer():
            raise InvalidField(name, f"{name} must be a whole number")
        value = int(value)
    if spec.choices and value not in spec.choices:
        raise InvalidField(name, f"{name} must be one of {', '.join(f'{choice:g}' for choice in spec.choices)}")
    low = spec.minimum if spec.minimum is not None else -math.inf
    high = spec.maximum if spec.maximum is not None else math.inf
    if not low <= value <= high:
        raise InvalidField(name, f"{name} must be from {low:g} to {high:g}")
    return value


def _loras(value: Any) -> list[list[Any]]:
    if not isinstance(value, list) or len(value) > LORAS_MAX:
        raise InvalidField("loras", f"loras must be a list of at most {LORAS_MAX} {{\"name\", \"strength\"}} objects")
    found = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"name", "strength"}:
            raise InvalidField("loras", "each of loras must be an object with a name and a strength")
        name, strength = item.get("name"), item.get("strength", 1)
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidField("loras", "each of loras needs a name (a LoRA file's name)")
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not -2 <= strength <= 2:
            raise InvalidField("loras", "each strength in loras must be a number from -2 to 2")
        found.append([name, float(strength)])
    return found


_IMAGE_STARTS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def _image(spec: openapi.RequestField, value: Any) -> bytes:
    name, limit = spec.name, spec.max_length or IMAGE_LIMIT
    if not isinstance(value, str):
        raise InvalidField(name, f"{name} must be a base64 string")
    text = value.strip()
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise InvalidField(name, f"{name} is a data: URL that is not base64")
    text = "".join(text.split())
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise ApiError(413, "too_large", f"{name} is larger than {limit // MIB} MiB", field=name)
    try:
        urlsafe = "-" in text or "_" in text
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(name, f"{name} is not valid base64") from None
    if len(data) > limit:
        raise ApiError(413, "too_large", f"{name} is larger than {limit // MIB} MiB", field=name)
    if not (data.startswith(_IMAGE_STARTS) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise InvalidField(name, f"{name} must be a PNG, JPEG, WebP or GIF image")
    return data


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
            accepted = await self._service.submit(key, kind, values, images)
        except RequestError as exc:
            raise _request_error(str(exc), ["kind", *(spec.name for spec in self.fields)]) from None
        job_id = int(accepted["id"])
        log.info("api_submitted", key_id=key.id, job_id=job_id, kind=kind)
        state = str(accepted.get("state") or "waiting")
        return _json({"id": job_id, "state": state, "position": _position(accepted.get("position"))}, 202,
                     headers={"Location": f"{_base(request, self._settings)}{API}/generations/{job_id}"})

    async def get(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        found = await self._service.get(key, _id(request))
        if found is None:
            raise _not_found()
        return _json(_generation(found, _base(request, self._settings)))

    async def cancel(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        found = await self._service.cancel(key, _id(request))
        if found is None:
            raise _not_found()
        view = _generation(found, _base(request, self._settings))
        if view["state"] in ("done", "failed"):
            ended = "finished" if view["state"] == "done" else "failed"
            raise ApiError(409, "already_finished",
                           f"Generation {view['id']} had already {ended}, so it cannot be cancelled")
        return _json(view, 200 if view["state"] == "cancelled" else 202)

    async def list(self, request: web.Request) -> web.Response:
        key = await self._key(request)
        if unknown := sorted(set(request.query) - {"limit", "before"}):
            raise InvalidField(clip(unknown[0], 50), f"{clip(unknown[0], 50)} is not a parameter of this route "
                               "(it takes limit and before)")
        limit = _query_int(request, "limit", LIST_DEFAULT, 1, LIST_MAX)
        before = _query_int(request, "before", None, 1, _MAX_ID)
        found = await self._service.list(key, limit, before)
        base = _base(request, self._settings)
        views = [_generation(item, base) for item in found[:limit]]
        return _json({"generations": views, "next_before": views[-1]["id"] if len(views) == limit else None})

    async def file(self, request: web.Request) -> web.StreamResponse:
        key = await self._key(request)
        job_id, index = _id(request), int(request.match_info["index"])
        path = await self._service.file(key, job_id, index)
        if path is None:
            raise _not_found()
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
        return _json({"url": key.webhook_url, "deliveries": deliveries})

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
        return _json({"url": url, "secret": secret})

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


def _json(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(value, separators=(",", ":")).encode("utf-8"), status=status,
                        content_type="application/json", headers={**NO_STORE, **(headers or {})})


def _sentence(text: str) -> str:
    """One line that ends like a sentence."""
    text = " ".join(str(text).split()) or "The request was refused"
    return text if text.endswith((".", "!", "?")) else text + "."


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "There is no such generation for this key")


# the bot's sentences about a field that do not start with its name
_ALIASES = {"upscale factor": "factor", "upscaled": "factor", "the control must start": "control_start",
            "there is no ControlNet type": "control_type", "zoomed out": "zoom"}


def _request_error(message: str, names: list[str]) -> InvalidField:
    """A RequestError from the bot ("width must be between 64 and 2048 (got 4000)") as InvalidField,
    naming the field its sentence starts with ("request" when none)."""
    found = [name for name in names if message.startswith((name + " ", name.replace("_", " ") + " "))]
    if found:
        return InvalidField(max(found, key=len), message)
    alias = next((field for start, field in _ALIASES.items() if message.startswith(start)), "request")
    return InvalidField(alias, message)


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


def _position(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def file_urls(base: str, job_id: int, count: int) -> list[str]:
    """The URLs of a generation's result files, as the API and its webhooks give them; `base` is where
    clients reach the app (WEB_BASE_URL)."""
    return [f"{base.rstrip('/')}{API}/generations/{job_id}/files/{index}" for index in range(count)]


def _generation(found: Mapping[str, Any], base: str) -> dict[str, Any]:
    """The API's view of a generation the service gave."""
    job_id = int(found["id"])
    state = str(found.get("state") or "")
    files = found.get("files") or 0
    count = len(files) if isinstance(files, list | tuple) else int(files) if isinstance(files, int) else 0
    settings = found.get("settings") or {}
    error = found.get("error")
    return {
        "id": job_id,
        "kind": str(found.get("kind") or ""),
        "state": state,
        "position": _position(found.get("position")) if state == "waiting" else None,
        "error": clip(" ".join(str(error).split()), ERROR_MAX) if error and state in ("failed", "cancelled") else None,
        "files": file_urls(base, job_id, count) if state == "done" else [],
        "settings": {name: settings[name] for name in openapi.SETTINGS_SHOWN
                     if name in settings and settings[name] is not None},
        "created_at": _number(found.get("created_at")),
        "updated_at": _number(found.get("updated_at")),
    }


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB and limit % MIB == 0 else f"{limit // 1024} KiB"
