"""The OpenAPI 3.1 document of the HTTP API (web/api.py), served at `GET /api/v1/openapi.json`.

Built from the same field table the API checks requests with (`RequestField`, made by
web.api.request_fields from the settings' limits), so the documented bounds are the enforced ones.
tests/test_api.py checks that the documented paths and methods are exactly the routes the app registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

VERSION = "1.0.0"
STATES = ("waiting", "submitted", "running", "delivering", "done", "failed", "cancelled")
SETTINGS_SHOWN = ("prompt", "negative_prompt", "width", "height", "steps", "cfg", "seed", "batch", "model", "style",
                  "sampler", "scheduler", "loras", "strength", "factor", "zoom", "control_type", "control_strength",
                  "control_start", "control_end")


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


def _field_schema(spec: RequestField) -> dict[str, Any]:
    used = "Used by: " + ", ".join(spec.kinds) + "."
    needed = f" Required for: {', '.join(spec.required_for)}." if spec.required_for else ""
    schema: dict[str, Any]
    if spec.type == "base64":
        schema = {"type": "string", "contentEncoding": "base64",
                  "description": f"{spec.description} Base64 (standard or URL-safe, or a data: URL) of a PNG, JPEG, "
                  f"WebP or GIF, at most {spec.max_length} bytes decoded. "}
    elif spec.type == "loras":
        schema = {"type": "array", "maxItems": int(spec.maximum or 3), "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                           "strength": {"type": "number", "minimum": -2, "maximum": 2, "default": 1}}},
            "description": spec.description + " "}
    else:
        schema = {"type": spec.type, "description": spec.description + " "}
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        if spec.choices:
            schema["enum"] = list(spec.choices)
    schema["description"] = (schema["description"] + used + needed).strip()
    return schema


def document(fields: Sequence[RequestField], kinds: Iterable[str], *, body_limit: int, list_max: int) -> dict[str, Any]:
    """The OpenAPI document for an API taking `fields` for the job `kinds`."""
    kinds = list(kinds)
    request_properties: dict[str, Any] = {"kind": {"type": "string", "enum": kinds, "default": "txt2img",
                                                   "description": "What to make. Defaults to txt2img."}}
    request_properties.update({spec.name: _field_schema(spec) for spec in fields})
    id_parameter = {"name": "id", "in": "path", "required": True, "description": "The generation's id.",
                    "schema": {"type": "integer", "minimum": 1}}
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
        "GenerationRequest": {
            "type": "object", "additionalProperties": False, "properties": request_properties,
            "description": "A field a kind does not take is refused (400, naming the field), as is an unknown one."},
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
            "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2000,
                                   "description": "An http or https URL on the public internet."}}},
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
        "BadRequest": _json(error, "The request is not valid; `field` names the wrong field."),
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
                     "schema": {"type": "integer", "minimum": 1}}],
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
                                                  "schema": {"type": "integer", "minimum": 0}}],
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
