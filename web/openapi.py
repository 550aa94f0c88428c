"""The OpenAPI 3.1 document of the HTTP API (web/api.py), served at `GET /api/v1/openapi.json`.

Built from the same field table the API checks requests with (`RequestField`, made by
web.api_fields.request_fields from the settings' limits and kinds.KINDS), so the documented kinds, fields
and bounds are the enforced ones: `GenerationRequest` is one of a schema per kind (Txt2imgRequest, ...),
told apart by `kind`, each with exactly the fields that kind takes.
tests/web/test_api.py checks that the documented paths and methods are exactly the routes the app registers;
tests/web/test_api_schema.py fuzzes the running app from this document with schemathesis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

VERSION = "1.0.0"
STATES = ("waiting", "submitted", "running", "delivering", "done", "failed", "cancelled")
DEFAULT_KIND = "txt2img"  # the kind of a request that names none
NOT_BLANK = r"\S"  # a text with something in it besides spaces
MAX_ID = 2**63 - 1  # the largest generation id
MAX_FILE_INDEX = 9999  # the largest result file index
SETTINGS_SHOWN = ("prompt", "negative_prompt", "width", "height", "steps", "cfg", "seed", "batch", "model", "style",
                  "sampler", "scheduler", "loras", "strength", "factor", "zoom", "control_type", "control_strength",
                  "control_start", "control_end", "model_reason")


@dataclass(frozen=True)
class RequestField:
    """One field of `POST /api/v1/generations`: its JSON type and bounds, and the kinds that take it."""

    name: str
    type: str  # "string" | "integer" | "number" | "base64" (an image) | "loras"
    description: str
    kinds: tuple[str, ...]  # the job kinds that take it
    required_for: tuple[str, ...] = ()  # the kinds that must have it
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # characters of a string; of a base64 image: decoded bytes
    choices: tuple[Any, ...] = ()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _field_schema(spec: RequestField, kind: str) -> dict[str, Any]:
    """The schema of one field as `kind` takes it."""
    schema: dict[str, Any]
    if spec.type == "base64":
        schema = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*", "minLength": 1,
                  "description": f"{spec.description} Base64 (standard or URL-safe, or a data: URL) of a PNG, JPEG, "
                  f"WebP or GIF, at most {spec.max_length} bytes decoded. One that is not such an image is refused "
                  "(400, or 413 when too large, naming the field)."}
    elif spec.type == "loras":
        schema = {"type": "array", "maxItems": int(spec.maximum or 3), "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                           "strength": {"type": "number", "minimum": -2, "maximum": 2, "default": 1}}},
            "description": spec.description}
    else:
        schema = {"type": spec.type, "description": spec.description}
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        if spec.choices:
            schema["enum"] = list(spec.choices)
    if spec.type == "string" and kind in spec.required_for:
        schema["pattern"] = NOT_BLANK  # a required text must say something: only spaces is refused
    return schema


def request_name(kind: str) -> str:
    """The component schema of one kind's request: txt2img's is Txt2imgRequest."""
    return kind[:1].upper() + kind[1:] + "Request"


def _kind_request(kind: str, fields: Sequence[RequestField]) -> dict[str, Any]:
    """The body of `POST /api/v1/generations` for one kind: exactly the fields it takes."""
    taken = [spec for spec in fields if kind in spec.kinds]
    properties: dict[str, Any] = {"kind": {"const": kind}}
    properties.update({spec.name: _field_schema(spec, kind) for spec in taken})
    required = [spec.name for spec in taken if kind in spec.required_for]
    if kind != DEFAULT_KIND:  # a body without a kind is a txt2img
        required.insert(0, "kind")
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties,
            "description": f"A {kind} generation." + (" `kind` may be left out." if kind == DEFAULT_KIND else "")}


def request_schemas(fields: Sequence[RequestField], kinds: Iterable[str]) -> dict[str, Any]:
    """GenerationRequest (one of the kinds' requests, told apart by `kind`) and each kind's request."""
    kinds = list(kinds)
    mapping = {kind: f"#/components/schemas/{request_name(kind)}" for kind in kinds}
    return {
        "GenerationRequest": {
            "oneOf": [_ref(request_name(kind)) for kind in kinds],
            "discriminator": {"propertyName": "kind", "mapping": mapping},
            "description": f"What to make: `kind` is one of {', '.join(kinds)} (left out: {DEFAULT_KIND}), and "
                           "each kind takes its own fields. A field a kind does not take is refused (400, naming "
                           "the field), as is an unknown one."},
        **{request_name(kind): _kind_request(kind, fields) for kind in kinds},
    }


def document(fields: Sequence[RequestField], kinds: Iterable[str], *, body_limit: int, list_max: int) -> dict[str, Any]:
    """The OpenAPI document for an API taking `fields` for the job `kinds`."""
    id_parameter = {"name": "id", "in": "path", "required": True, "description": "The generation's id.",
                    "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}}
    nullable_number = {"type": ["number", "null"]}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "description": "A stable, machine-readable code, e.g. invalid_field."},
                    "message": {"type": "string", "description": "What went wrong, as a sentence for people."},
                    "field": {"type": "string", "description": "The request field that is wrong, when one is."}}}}},
        **request_schemas(fields, kinds),
        "Accepted": {
            "type": "object", "required": ["id", "state", "position"], "additionalProperties": False,
            "properties": {"id": {"type": "integer"}, "state": {"type": "string", "enum": list(STATES)},
                           "position": {"type": ["integer", "null"], "minimum": 0,
                                        "description": "Jobs ahead of this one while it waits."}}},
        "Generation": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "kind", "state", "position", "error", "files", "settings", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "integer"},
                "kind": {"type": "string"},
                "state": {"type": "string", "enum": list(STATES),
                          "description": "done, failed and cancelled are final."},
                "position": {"type": ["integer", "null"], "minimum": 0,
                             "description": "While waiting: how many jobs are ahead. Otherwise null."},
                "error": {"type": ["string", "null"], "description": "When failed or cancelled: why, as a sentence."},
                "files": {"type": "array", "items": {"type": "string", "format": "uri"},
                          "description": "When done: the URLs of the result files (fetched with the same key)."},
                "settings": {"type": "object", "description": "The settings it ran with (the seed chosen, ...).",
                             "propertyNames": {"enum": list(SETTINGS_SHOWN)}},
                "created_at": nullable_number, "updated_at": nullable_number}},
        "GenerationList": {
            "type": "object", "required": ["generations", "next_before"], "additionalProperties": False,
            "properties": {"generations": {"type": "array", "items": _ref("Generation")},
                           "next_before": {"type": ["integer", "null"],
                                           "description": "Pass as `before` for the next (older) page; null at the end."}}},
        "WebhookRequest": {
            "type": "object", "required": ["url"], "additionalProperties": False,
            "properties": {"url": {
                "type": "string", "format": "uri", "maxLength": 2000, "pattern": "^https?://[^/?#@\\s]",
                "description": "An http or https URL whose host leads only to public internet addresses, without a "
                               "user name or password. A host that cannot be found, or that leads to a loopback, "
                               "private, link-local or reserved address (in any spelling), or an IPv4 address in a "
                               "short form (127.1, 2130706433), is refused (400, naming url)."}}},
        "WebhookCreated": {
            "type": "object", "required": ["url", "secret"], "additionalProperties": False,
            "properties": {"url": {"type": "string"}, "secret": {
                "type": "string", "description": "Signs every delivery. Shown only now; PUT again for a new one."}}},
        "Webhook": {
            "type": "object", "required": ["url", "deliveries"], "additionalProperties": False,
            "properties": {"url": {"type": ["string", "null"]}, "deliveries": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["id", "event", "job_id", "attempts", "state", "next_at", "delivered_at", "last_error",
                             "created_at"],
                "properties": {"id": {"type": "integer"}, "event": {"type": "string"},
                               "job_id": {"type": ["integer", "null"]}, "attempts": {"type": "integer"},
                               "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                               "next_at": nullable_number, "delivered_at": nullable_number,
                               "last_error": {"type": ["string", "null"]}, "created_at": {"type": "number"}}}}}},
        "WebhookEvent": {
            "type": "object", "required": ["event", "id", "state", "files", "error"], "additionalProperties": False,
            "properties": {"event": {"type": "string", "enum": ["generation.done", "generation.failed"]},
                           "id": {"type": "integer"}, "state": {"type": "string", "enum": ["done", "failed", "cancelled"]},
                           "files": {"type": "array", "items": {"type": "string", "format": "uri"}},
                           "error": {"type": ["string", "null"]}}},
    }
    error = _ref("Error")
    retry_after = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                   "schema": {"type": "integer", "minimum": 1}}}
    responses = {
        "BadRequest": _json(error, "The request is not valid; `field` names the wrong field. Besides what the "
                            "schemas say, the bot refuses an image that does not decode as one, a webhook URL "
                            "that leads to a private address, and a model, style, sampler, scheduler, LoRA or "
                            "ControlNet type it does not have."),
        "Unauthorized": {**_json(error, "No API key, or an unknown or revoked one."),
                         "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
        "NotFound": _json(error, "No such generation for this key (another key's are never shown)."),
        "TooLarge": _json(error, f"The body is larger than {body_limit} bytes, or an image larger than allowed."),
        "TooMany": {**_json(error, "This key's limits are reached (requests, active jobs or quota)."),
                    "headers": retry_after},
        "Unavailable": {**_json(error, "The bot cannot take jobs now (paused, or no server up)."),
                        "headers": retry_after},
    }
    common = {"401": _response("Unauthorized"), "429": _response("TooMany")}
    paths = {
        "/api/v1/generations": {
            "post": {
                "operationId": "createGeneration", "summary": "Queue a generation",
                "description": "Queued with everyone else's jobs; the key counts as one person of its Discord server.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("GenerationRequest")}}},
                "responses": {"202": {**_json(_ref("Accepted"), "Queued."),
                                      "headers": {"Location": {"schema": {"type": "string"},
                                                               "description": "The generation's URL."}}},
                              "400": _response("BadRequest"), "413": _response("TooLarge"),
                              "503": _response("Unavailable"), **common}},
            "get": {
                "operationId": "listGenerations", "summary": "This key's generations, newest first",
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": list_max, "default": 20}},
                    {"name": "before", "in": "query", "required": False, "description": "Only ids below this one.",
                     "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}}],
                "responses": {"200": _json(_ref("GenerationList"), "The generations."),
                              "400": _response("BadRequest"), **common}},
        },
        "/api/v1/generations/{id}": {
            "get": {"operationId": "getGeneration", "summary": "A generation's state, and when done its files",
                    "parameters": [id_parameter],
                    "responses": {"200": _json(_ref("Generation"), "The generation."),
                                  "404": _response("NotFound"), **common}}},
        "/api/v1/generations/{id}/cancel": {
            "post": {"operationId": "cancelGeneration", "summary": "Cancel a generation",
                     "parameters": [id_parameter],
                     "responses": {"200": _json(_ref("Generation"), "Cancelled."),
                                   "202": _json(_ref("Generation"), "Asked to stop; it may still finish."),
                                   "409": _json(error, "It had already finished."),
                                   "404": _response("NotFound"), **common}}},
        "/api/v1/generations/{id}/files/{index}": {
            "get": {"operationId": "getGenerationFile", "summary": "A result file's bytes",
                    "parameters": [id_parameter, {"name": "index", "in": "path", "required": True,
                                                  "schema": {"type": "integer", "minimum": 0, "maximum": MAX_FILE_INDEX}}],
                    "responses": {"200": {"description": "The file.", "content": {
                        "image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/gif": {}, "video/mp4": {},
                        "video/webm": {}, "application/octet-stream": {}}},
                        "404": _response("NotFound"),
                        "410": _json(error, "The bot no longer keeps this file."), **common}}},
        "/api/v1/webhook": {
            "get": {"operationId": "getWebhook", "summary": "This key's webhook URL and its latest deliveries",
                    "responses": {"200": _json(_ref("Webhook"), "The webhook."), **common}},
            "put": {"operationId": "setWebhook", "summary": "Set this key's webhook URL; answers a new signing secret",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("WebhookRequest")}}},
                    "responses": {"200": _json(_ref("WebhookCreated"), "Set."), "400": _response("BadRequest"),
                                  "413": _response("TooLarge"), **common}},
            "delete": {"operationId": "deleteWebhook", "summary": "Remove this key's webhook",
                       "responses": {"204": {"description": "Removed."}, **common}}},
        "/api/v1/openapi.json": {
            "get": {"operationId": "getOpenApi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "The OpenAPI document.",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    webhook_headers = [
        {"name": "X-Webhook-Timestamp", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Unix seconds when this attempt was sent; refuse it when more than 300 s from your clock."},
        {"name": "X-Webhook-Signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": 'v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the webhook secret>.'},
        {"name": "X-Webhook-Id", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "The delivery's id: the same on every retry, to drop duplicates."},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "ComfyUI Discord bot API", "version": VERSION,
                 "description": "Queue images and videos on the bot's ComfyUI servers, in the same queue as its "
                                "Discord users. Authenticate with `Authorization: Bearer <key>`; a server admin "
                                "makes keys in Discord. Errors are JSON: {\"error\": {\"code\", \"message\", "
                                "\"field\"}}."},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "webhooks": {"generationFinished": {"post": {
            "operationId": "generationFinished", "summary": "A generation of the key finished or failed",
            "description": "Retried after 5 s, 30 s, 2 min, 10 min and 1 h until a 2xx answer; given up after the "
                           "6th attempt. Redirects are not followed.",
            "parameters": webhook_headers,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WebhookEvent")}}},
            "responses": {"2XX": {"description": "Received (the body is ignored)."}}}}},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key: cfb_ and 43 characters."}},
            "schemas": schemas,
            "responses": responses,
        },
    }
