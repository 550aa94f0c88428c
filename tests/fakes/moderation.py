"""A wire-level fake of an OpenAI-compatible moderation endpoint, for tests.

It follows OpenAI's API reference for "Create moderation" (POST /v1/moderations) with the omni models:

- the request is JSON {"model": "...", "input": ...}, where input is a string, a list of strings, or a
  list of parts {"type": "text", "text": "..."} and {"type": "image_url", "image_url": {"url": "..."}}
  (an https URL or a data: URL of base64 image bytes); at most one image per request;
- `Authorization: Bearer <key>`; a wrong or missing key is 401 with an "invalid_api_key" error;
- the answer is {"id": "modr-...", "model": "...", "results": [...]}: one result per string of a string
  list, one result for a list of parts; each result has "flagged", "categories" (name -> bool),
  "category_scores" (name -> float) and "category_applied_input_types" (name -> ["text"] / ["image"]);
- errors are {"error": {"message", "type", "param", "code"}}.

Knobs: `delay` (seconds before answering), `image_delay` (the same, for requests with an image), `status` (answer every request with this HTTP error),
`garbage` (answer 200 with a body that is not JSON), `text_scores` (a word -> the scores given to text
that has it), `image_scores` (the scores given to every image), `flag_at` (from which score the fake's
own `categories` and `flagged` say true). `requests` records each request's JSON body and its
Authorization header. Only 127.0.0.1 is bound.

    fake = FakeModeration(key="sk-test")
    await fake.start()      # fake.base_url == "http://127.0.0.1:<port>/v1"
    ...
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from typing import Any

from aiohttp import web

CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
IMAGE_CATEGORIES = ("self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence",
                    "violence/graphic")  # the omni models score images for these only
LOW = 0.0001


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status)


class FakeModeration:
    def __init__(self, *, key: str | None = "sk-test", delay: float = 0.0) -> None:
        self.key = key
        self.delay = delay
        self.image_delay = 0.0
        self.status: int | None = None
        self.garbage = False
        self.text_scores: dict[str, dict[str, float]] = {}
        self.image_scores: dict[str, float] = {}
        self.flag_at = 0.5
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/moderations", self._moderations)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _moderations(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        authorization = request.headers.get("Authorization")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if self.image_delay and '"image_url"' in json.dumps(body.get("input")):
            await asyncio.sleep(self.image_delay)
        self.requests.append({"body": body, "authorization": authorization})
        if self.key is not None and authorization != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.status is not None:
            return _error(self.status, "The server had an error while processing your request.", "server_error")
        if self.garbage:
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        try:
            results = self._results(body.get("input"))
        except ValueError as error:
            return _error(400, str(error), "invalid_request_error", param="input")
        return web.json_response({"id": f"modr-{uuid.uuid4().hex[:24]}", "model": body.get("model") or
                                  "omni-moderation-latest", "results": results})

    def _results(self, given: Any) -> list[dict[str, Any]]:
        if isinstance(given, str):
            return [self._result([given], 0)]
        if not isinstance(given, list) or not given:
            raise ValueError("'input' must be a string, a list of strings or a list of input parts.")
        if all(isinstance(item, str) for item in given):
            return [self._result([text], 0) for text in given]
        texts, images = [], 0
        for part in given:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                raise ValueError("Each input part must have type 'text' or 'image_url'.")
            if part["type"] == "text":
                texts.append(str(part.get("text", "")))
            else:
                images += 1
                self._check_image(part.get("image_url"))
        if images > 1:
            raise ValueError("Only one image may be given per request.")
        return [self._result(texts, images)]

    @staticmethod
    def _check_image(image_url: Any) -> None:
        url = image_url.get("url") if isinstance(image_url, dict) else None
        if not isinstance(url, str):
            raise ValueError("image_url.url is required.")
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            if not header.endswith(";base64") or not header[5:].startswith("image/"):
                raise ValueError("A data URL must be base64 image data.")
            try:
                base64.b64decode(data, validate=True)
            except binascii.Error:
                raise ValueError("The image data is not valid base64.") from None
        elif not url.startswith("https://"):
            raise ValueError("image_url.url must be an https URL or a data URL.")

    def _result(self, texts: list[str], images: int) -> dict[str, Any]:
        scores = dict.fromkeys(CATEGORIES, LOW)
        applied: dict[str, list[str]] = {name: [] for name in CATEGORIES}
        for text in texts:
            for name in CATEGORIES:
                applied[name].append("text")
            for word, given in self.text_scores.items():
                if word.casefold() in text.casefold():
                    for name, score in given.items():
                        scores[name] = max(scores[name], score)
        if images:
            for name in IMAGE_CATEGORIES:
                applied[name].append("image")
                scores[name] = max(scores[name], self.image_scores.get(name, LOW))
        categories = {name: score >= self.flag_at for name, score in scores.items()}
        return {"flagged": any(categories.values()), "categories": categories, "category_scores": scores,
                "category_applied_input_types": {name: sorted(set(kinds)) for name, kinds in applied.items()}}


def body_of(request: dict[str, Any]) -> str:
    """A recorded request's body as JSON text (to assert what was not sent)."""
    return json.dumps(request["body"])
