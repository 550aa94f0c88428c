"""The bot's client for one RunPod Serverless endpoint running worker-comfyui 5.x.

A job is POSTed to /run as `{"input": {"workflow": ..., "images": [{"name", "image": base64}]}}`, then
/status is polled until a final state. Outputs come as base64, or as presigned URLs when the endpoint
uploads to a bucket; both are capped in bytes. Every call has a timeout; redirects are followed only
for the bucket download, which never gets the API key; a 429 is retried with bounded exponential
backoff and the client keeps under RunPod's per-route rate limits. The key is never logged or shown.
This module knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from comfy.types import BadResponse, ComfyError, Interrupted, PromptLost, TimedOut, Unreachable
from safe_text import clip, server_line

log = structlog.get_logger(__name__)

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RUN_BODY_LIMIT = 10_000_000  # RunPod takes at most 10 MB on POST /run
MAX_ANSWER = 64 << 20  # an API answer larger than this is refused (base64 results are at most ~27 MB)
RETENTION_MINUTES = 30  # RunPod keeps a /run job's result this long after it finished
CHUNK = 256 * 1024
ENDED = {"TIMED_OUT": "RunPod timed the job out: it waited or ran past the endpoint's time limits.",
         "CANCELLED": "The job was cancelled on RunPod."}
NO_RESULT = ("RunPod reports the job done but returned no result: it drops results over its 10-20 MB limit "
             "(an S3 bucket on the endpoint avoids that).")


class KeyRefused(ComfyError):
    """RunPod answered 401: the API key is wrong or lacks permission on the endpoint."""


class NoEndpoint(ComfyError):
    """RunPod answered 404 for the endpoint itself: no endpoint has this id."""


class ResultGone(PromptLost):
    """RunPod no longer holds the job: its result's retention (or its TTL) passed."""


class WorkerFailed(ComfyError):
    """worker-comfyui (or the RunPod SDK around it) ended the job FAILED. str() is the sentence people are
    shown (the worker's reason where it is safe, bounded and inert); `detail` is its text, sanitized, for the log."""

    def __init__(self, said: str, detail: str = "") -> None:
        super().__init__(said)
        self.detail = detail or said


@dataclass(frozen=True)
class RunStatus:
    job_id: str
    state: str  # IN_QUEUE, IN_PROGRESS or one of FINAL
    delay_ms: int | None = None  # waited in RunPod's queue
    execution_ms: int | None = None  # ran on a worker (billed per second, rounded up)
    error: str | None = None  # sanitized; set for every final state but a COMPLETED with its result
    outputs: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, bytes) once COMPLETED
    warnings: list[str] = field(default_factory=list)  # the worker's non-fatal `errors`, sanitized
    worker_id: str | None = None
    said: ComfyError | None = None  # a FAILED job's error as people are told it (see _said)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def failure(self) -> ComfyError | None:
        """The error this status stands for; None while running or for a COMPLETED with its result."""
        if self.error is None or self.said is not None:
            return self.said
        kind = {"TIMED_OUT": TimedOut, "CANCELLED": Interrupted}.get(self.state, BadResponse)
        return kind(self.error)


BIG = 256 * 1024  # bytes past which encoding and decoding run in a thread, not on the event loop


def _run_body(workflow: dict, images: list[tuple[str, bytes]], policy: dict | None) -> bytes:
    """POST /run's body: the workflow and the input images as base64 (worker-comfyui 5.x)."""
    job_input: dict[str, Any] = {"workflow": workflow}
    if images:
        job_input["images"] = [{"name": name, "image": base64.b64encode(data).decode()} for name, data in images]
    return json.dumps({"input": job_input, **({"policy": policy} if policy else {})}).encode()


class RunPodClient:
    """One endpoint; `close()` after use. `limits` (per `window` s, concurrent) are RunPod's, per route."""

    limits = {"run": (1000, 200), "status": (2000, 400), "cancel": (100, 20)}
    window = 10.0

    def __init__(self, endpoint_id: str, api_key: str, *, base_url: str = "https://api.runpod.ai/v2",
                 timeout: float = 30.0, name: str = "RunPod endpoint", max_output_bytes: int = 64 << 20,
                 backoff: tuple[float, float] = (1.0, 30.0), retries: int = 6) -> None:
        self.endpoint_id, self.name, self.max_output_bytes = endpoint_id, name, max_output_bytes
        self._key, self._timeout, self._backoff, self._retries = api_key, timeout, backoff, retries
        self._base = base_url.rstrip("/") + "/" + quote(endpoint_id, safe="")
        self._session: aiohttp.ClientSession | None = None
        self._hits: dict[str, deque[float]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # no default headers: the bucket download must not get the key
            self._session = aiohttp.ClientSession()
        return self._session

    async def submit(self, workflow: dict, images: list[tuple[str, bytes]], *, policy: dict | None = None) -> str:
        """POST /run; returns RunPod's job id. A body over RunPod's 10 MB is refused before sending.
        `policy`: RunPod's per-job executionTimeout / ttl (ms) / lowPriority, passed as is."""
        if len({name for name, _ in images}) != len(images):
            raise ComfyError("Two input images have the same name; worker-comfyui needs unique names.")
        body = await asyncio.to_thread(_run_body, workflow, images, policy)  # base64 of megabytes: off the loop
        if len(body) > RUN_BODY_LIMIT:
            raise ComfyError(f"The job is {len(body) / 1e6:.1f} MB with its input images, over the 10 MB "
                             "RunPod takes on /run; use smaller input images.")
        status, raw = await self._call("POST", "run", body=body)
        if status == 404:
            raise self._no_endpoint()
        if status != 200:
            detail = server_line(raw.decode("utf-8", "replace")) or "no details"
            raise ComfyError(f"{self.name} refused the job (HTTP {status}): {detail}")
        data = _json(raw, "POST /run")
        job_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 200:
            raise BadResponse(f"{self.name} accepted the job but sent no job id.")
        log.info("runpod_submitted", endpoint=self.name, job=job_id, bytes=len(body))
        return job_id

    async def health(self) -> dict[str, int]:
        """GET /health: the endpoint's worker counts ("ready", "idle", "running", ...). Raises KeyRefused (401),
        NoEndpoint (404), Unreachable, or BadResponse for an answer that is not RunPod's."""
        status, raw = await self._call("GET", "health")
        if status == 404:
            raise self._no_endpoint()
        data = _json(raw, "GET /health") if status == 200 else None
        workers = data.get("workers") if isinstance(data, dict) else None
        if not isinstance(workers, dict):
            raise BadResponse(f"{self.name} answered GET /health with {status} or an unexpected shape.")
        return {server_line(key, 40): value for key, value in workers.items()
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0}

    def _no_endpoint(self) -> NoEndpoint:
        return NoEndpoint(f"RunPod knows no endpoint {clip(self.endpoint_id, 60)!r} (HTTP 404); check its id.")

    async def status(self, job_id: str) -> RunStatus:
        """GET /status; a COMPLETED job's outputs are decoded (or downloaded from the bucket)."""
        status, raw = await self._call("GET", "status", job_id)
        if status == 404:
            raise ResultGone(f"RunPod no longer holds this job's result (results are kept for {RETENTION_MINUTES} "
                             "minutes).")
        data = (await asyncio.to_thread(_json, raw, "GET /status") if len(raw) > BIG else _json(raw, "GET /status")) \
            if status == 200 else None
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise BadResponse(f"{self.name} answered GET /status with {status} or an unexpected shape.")
        state = "IN_PROGRESS" if data["status"] == "RUNNING" else server_line(data["status"], 40)
        output, error, outputs, warnings, said = data.get("output"), None, [], [], None
        if state == "FAILED":
            error = _failure_text(data.get("error"), output)
            said = _said(data.get("error"), output, error)
        elif state in ENDED or (state == "COMPLETED" and output is None):
            error = ENDED.get(state, NO_RESULT)
        elif state == "COMPLETED":
            outputs, warnings = await self._outputs(output)
        worker = data.get("workerId") if isinstance(data.get("workerId"), str) else None
        return RunStatus(job_id, state, _ms(data.get("delayTime")), _ms(data.get("executionTime")), error,
                         outputs, warnings, worker, said)

    async def follow(self, job_id: str, *, poll: float = 1.0, deadline: float) -> AsyncIterator[RunStatus]:
        """Each change of state until a final one. `deadline`: seconds from now, after which the job is
        cancelled and TimedOut raised. Up to 3 network failures in a row are waited out."""
        end, last, misses = time.monotonic() + deadline, None, 0
        while True:
            try:
                current, misses = await self.status(job_id), 0
            except Unreachable:
                misses += 1
                if misses > 3 or time.monotonic() >= end:
                    raise
                current = None
            if current is not None and current.state != last:
                last = current.state
                yield current
            if current is not None and current.final:
                return
            if time.monotonic() >= end:
                try:
                    cancelled = await self.cancel(job_id)
                except ComfyError:
                    cancelled = False
                raise TimedOut(f"The RunPod job did not finish within {deadline:g} s"
                               + ("; it was cancelled." if cancelled else "."))
            await asyncio.sleep(min(poll, max(0.0, end - time.monotonic())))

    async def cancel(self, job_id: str) -> bool:
        """POST /cancel; True when RunPod reports the job CANCELLED (False: unknown or already over)."""
        status, raw = await self._call("POST", "cancel", job_id)
        if status not in (200, 404):
            raise BadResponse(f"{self.name} answered {status} to POST /cancel.")
        data = _json(raw, "POST /cancel") if status == 200 else None
        return isinstance(data, dict) and data.get("status") == "CANCELLED"

    async def _outputs(self, output: Any) -> tuple[list[tuple[str, bytes]], list[str]]:
        items = output.get("images") if isinstance(output, dict) else None
        if not isinstance(items, list):
            raise BadResponse(f"{self.name} sent a result without images in an unexpected shape.")
        files = []
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("filename"), str)
                    and isinstance(item.get("data"), str)):
                raise BadResponse(f"{self.name} sent an output image in an unexpected shape.")
            name = server_line(item["filename"].replace("\\", "/").rsplit("/", 1)[-1], 120) or "output.png"
            data = item["data"]
            if item.get("type") == "s3_url":
                if not data.startswith(("http://", "https://")):
                    raise BadResponse("The worker could not upload its output to the bucket (it saved it locally); "
                                      "check the endpoint's BUCKET_* settings.")
                files.append((name, await self._download(data, name)))
            elif len(data) * 3 // 4 > self.max_output_bytes:
                raise BadResponse(f"The output {name!r} is larger than {self.max_output_bytes:,} bytes.")
            else:
                try:
                    files.append((name, await asyncio.to_thread(base64.b64decode, data, validate=True)
                                  if len(data) > BIG else base64.b64decode(data, validate=True)))
                except (binascii.Error, ValueError):
                    raise BadResponse(f"{self.name} sent output {name!r} that is not valid base64.") from None
        errors = output.get("errors")
        return files, [server_line(e) for e in errors if server_line(e)] if isinstance(errors, list) else []

    async def _download(self, url: str, name: str) -> bytes:
        """A presigned bucket URL: redirects followed (S3 may send some), no API key, capped in bytes."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=self._timeout)
        try:
            async with self._http().get(url, timeout=timeout, allow_redirects=True, max_redirects=3) as response:
                if response.status != 200:
                    expired = " (presigned links last 7 days)" if response.status == 403 else ""
                    raise BadResponse(f"The bucket answered {response.status} for the output {name!r}{expired}.")
                return await _read_capped(response, self.max_output_bytes, f"The output {name!r}")
        except TimeoutError:
            raise Unreachable(f"The bucket stopped sending {name!r} for {self._timeout:g} s.") from None
        except aiohttp.ClientError as error:
            raise Unreachable(f"Downloading {name!r} from the bucket failed ({error.__class__.__name__}).") from None

    async def _call(self, method: str, route: str, job_id: str = "", body: bytes | None = None) -> tuple[int, bytes]:
        """One API call within the rate limits; a 429 is retried with bounded exponential backoff."""
        path, delay = f"/{route}/{quote(job_id, safe='')}" if job_id else f"/{route}", self._backoff[0]
        for attempt in range(self._retries + 1):
            status, raw, retry_after = await self._once(method, route, path, body)
            if status != 429:
                break
            if attempt == self._retries:
                raise Unreachable(f"{self.name} kept refusing {method} /{route} as too many requests (HTTP 429).")
            wait = min(retry_after if retry_after is not None else delay * random.uniform(0.75, 1.25), self._backoff[1])
            log.warning("runpod_rate_limited", endpoint=self.name, route=route, wait=round(wait, 2))
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._backoff[1])
        if status == 401:
            raise KeyRefused(f"The RunPod API key was refused by {self.name} (HTTP 401); check the key and its access.")
        if status >= 500:
            detail = server_line(raw.decode("utf-8", "replace")) or "no details"
            raise Unreachable(f"{self.name} answered {status} to {method} /{route}: {detail}.")
        if 300 <= status < 400:
            raise BadResponse(f"{self.name} answered {method} /{route} with a redirect ({status}); not followed.")
        return status, raw

    async def _once(self, method: str, route: str, path: str, body: bytes | None) -> tuple[int, bytes, float | None]:
        per_window, concurrent = self.limits.get(route, (0, 0))
        hits = self._hits.setdefault(route, deque())
        while per_window:  # bounded: each wait ends when the oldest hit leaves the window
            while hits and hits[0] <= time.monotonic() - self.window:
                hits.popleft()
            if len(hits) < per_window:
                break
            await asyncio.sleep(hits[0] + self.window - time.monotonic())
        hits.append(time.monotonic())
        slot = self._slots.setdefault(route, asyncio.Semaphore(concurrent or 1000))
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with slot, self._http().request(method, self._base + path, data=body, headers=headers,
                                                  allow_redirects=False, timeout=timeout) as response:
                raw = await _read_capped(response, MAX_ANSWER, f"{self.name}'s answer to {method} /{route}")
                after = response.headers.get("Retry-After", "").strip()  # undocumented; honoured if sent
                return response.status, raw, float(after) if after.isdigit() else None
        except TimeoutError:
            raise Unreachable(f"{self.name} did not answer {method} /{route} within {self._timeout:g} s.") from None
        except aiohttp.ClientError as error:
            raise Unreachable(f"{self.name} is unreachable ({error.__class__.__name__}).") from None


def _failure_text(error: Any, output: Any) -> str:
    """The worker's error (several lines for a validation failure) and its first details, sanitized."""
    text = error if isinstance(error, str) else "" if error is None else json.dumps(error)
    try:  # an exception the RunPod SDK caught arrives as a JSON string
        captured = json.loads(text)
    except ValueError:
        captured = None
    if isinstance(captured, dict) and "error_message" in captured:
        kind = str(captured.get("error_type", "")).removeprefix("<class '").removesuffix("'>")
        text = f"{kind}: {captured['error_message']}" if kind else str(captured["error_message"])
    lines = [line for line in map(server_line, text.splitlines()) if line][:6]
    details = output.get("details") if isinstance(output, dict) else None
    lines += [f"- {server_line(d)}" for d in details[:3] if server_line(d)] if isinstance(details, list) else []
    return clip("The RunPod worker failed: " + ("\n".join(lines) or "it gave no reason."), 1500)


AGAIN, ASK = "Try again; if it happens again, ask the operator.", "Trying again will not help; ask the operator."


def _said(error: Any, output: Any, detail: str) -> ComfyError:
    """A FAILED job's error as people are told it: the worker's known failures (a missing model, a missing node
    type, out of memory, a refused workflow, a time limit, ComfyUI down) in words, else its reason, quoted."""
    raw = (error if isinstance(error, str) else json.dumps(error))[:50_000]
    details = output.get("details") if isinstance(output, dict) else None
    raw += "".join(f"\n{d}" for d in details[:3] if isinstance(d, str)) if isinstance(details, list) else ""
    if model := re.search(r"\b((?:ckpt|lora|vae|unet|clip|control_net|model)_name): '([^'\n]{1,200})' not in", raw):
        return WorkerFailed(f"The RunPod worker lacks the model {_code(model[2])} ({_code(model[1], False)}). "
                            "Choose another model, or ask the operator to add it to the endpoint.", detail)
    if node := re.search(r"node (\S{1,100}) does not exist", raw):
        return WorkerFailed(f"The RunPod worker lacks the node type {_code(node[1])} (a custom node its image does "
                            f"not have). {ASK}", detail)
    if re.search(r"(?i)out of memory|OutOfMemory", raw):
        return WorkerFailed("The RunPod worker ran out of GPU memory. Try a smaller size or fewer images.", detail)
    if raw.startswith("WebSocket communication error"):
        return WorkerFailed(f"The RunPod worker lost its connection to its ComfyUI. {AGAIN}", detail)
    if re.search(r"(?i)\btimed out\b", raw):
        return TimedOut("RunPod stopped the job at the endpoint's time limit.")
    if re.search(r"ComfyUI server \(\S+\) not reachable", raw):
        return WorkerFailed("The RunPod worker's ComfyUI did not start. Try again in a few minutes; if it keeps "
                            "happening, ask the operator.", detail)
    if refused := re.match(r"(.{1,300}?)\. Raw response: |Workflow validation failed:.*?'message': '([^'\n]{1,300})'",
                           raw, re.S):
        return WorkerFailed(f"The RunPod worker refused the workflow: {_code(refused[1] or refused[2])}. {ASK}", detail)
    if node_error := re.search(r"Node Type: ([^,\n]{1,80}), Node ID: ([^,\n]{1,40}), Message: ([^\n]+)", raw):
        return WorkerFailed(f"The RunPod worker hit an error in node {_code(node_error[2], False)} "
                            f"({_code(node_error[1], False)}): {_code(node_error[3])}. {AGAIN}", detail)
    reason = detail.removeprefix("The RunPod worker failed: ").split("\n", 1)[0]
    return WorkerFailed(f"The RunPod worker failed: {_code(reason)}. {AGAIN}", detail)


def _code(text: str, quoted: bool = True) -> str:
    """A piece of the worker's text, safe to show: one line, no secrets, mentions or markup, at most 120
    characters; quoted as `code`, so Discord shows it as it is."""
    line = server_line(text, 120).replace("`", "'")
    return (f"`{line}`" if quoted else re.sub(r"[^\w .:/+-]", "", line)) if line else "(no reason given)"


async def _read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    body = bytearray()
    if (response.content_length or 0) <= limit:
        async for chunk in response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                break
    if len(body) > limit or (response.content_length or 0) > limit:
        raise BadResponse(f"{what} is larger than {limit:,} bytes.")
    return bytes(body)


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise BadResponse(f"RunPod sent invalid JSON for {what}.") from None


def _ms(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
