"""A Postman collection (format v2.1) made from the API's OpenAPI document: one request per operation,
named by its summary, with the key as a collection-wide bearer token and a body to start from where an
operation takes one. Bruno and Insomnia import the same file.

`python -m web.postman` writes examples/postman_collection.json from the document the bot serves (the
default settings' one: the collection names no limit, so any bot's document gives the same file);
tests/test_examples.py checks the committed file is what this makes of the document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "examples" / "postman_collection.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
METHODS = ("get", "put", "post", "delete", "patch")
# bodies to start from, by operationId: a small image from a prompt, and a webhook URL to replace
BODIES = {"createGeneration": {"kind": "txt2img", "prompt": "a lighthouse at dusk, oil painting",
                               "width": 512, "height": 512},
          "setWebhook": {"url": "https://example.com/comfy-webhook"}}
# values for path parameters, as collection variables
PATH_VALUES = {"id": "{{generationId}}", "index": "0"}


def collection(document: dict[str, Any]) -> dict[str, Any]:
    """The collection of `document`'s operations, in the document's order."""
    items = []
    for path, operations in document["paths"].items():
        items.extend(_request(path, method, operation) for method, operation in operations.items()
                     if method in METHODS)
    info = document["info"]
    return {
        "info": {"name": info["title"], "description": info.get("description", ""),
                 "version": info["version"], "schema": SCHEMA},
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}]},
        "variable": [{"key": "baseUrl", "value": "http://127.0.0.1:8080", "description": "The bot's WEB_BASE_URL."},
                     {"key": "apiKey", "value": "", "description": "A key from `/admin apikey create`."},
                     {"key": "generationId", "value": "1", "description": "An id that createGeneration answered."}],
        "item": items,
    }


def _request(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    parts = path.strip("/").split("/")
    url: dict[str, Any] = {"raw": "", "host": ["{{baseUrl}}"], "path": []}
    for part in parts:
        url["path"].append(":" + part[1:-1] if part.startswith("{") else part)
    parameters = operation.get("parameters", [])
    variables = [{"key": p["name"], "value": PATH_VALUES.get(p["name"], ""), "description": p.get("description", "")}
                 for p in parameters if p["in"] == "path"]
    query = [{"key": p["name"], "value": str(p.get("schema", {}).get("default", "")),
              "description": p.get("description", ""), "disabled": "default" not in p.get("schema", {})}
             for p in parameters if p["in"] == "query"]
    if variables:
        url["variable"] = variables
    if query:
        url["query"] = query
    raw_query = "&".join(f"{q['key']}={q['value']}" for q in query if not q["disabled"])
    url["raw"] = "{{baseUrl}}/" + "/".join(url["path"]) + (f"?{raw_query}" if raw_query else "")
    request: dict[str, Any] = {"method": method.upper(), "url": url,
                               "description": operation.get("description", operation.get("summary", ""))}
    if operation.get("security") == []:
        request["auth"] = {"type": "noauth"}
    if "requestBody" in operation:
        request["header"] = [{"key": "Content-Type", "value": "application/json"}]
        request["body"] = {"mode": "raw", "raw": json.dumps(BODIES[operation["operationId"]], indent=2),
                           "options": {"raw": {"language": "json"}}}
    return {"name": operation.get("summary", operation["operationId"]), "request": request}


def render(document: dict[str, Any]) -> str:
    """The collection as the committed file's text."""
    return json.dumps(collection(document), indent=2, ensure_ascii=False) + "\n"


def default_document() -> dict[str, Any]:
    """The document of a bot with the default settings."""
    from config import Settings
    from web import openapi
    from web.api import BODY_LIMIT, LIST_MAX
    from web.api_fields import KINDS, request_fields

    return openapi.document(request_fields(Settings(_env_file=None)), KINDS, body_limit=BODY_LIMIT,
                            list_max=LIST_MAX)


def main() -> None:
    OUTPUT.write_text(render(default_document()))
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
