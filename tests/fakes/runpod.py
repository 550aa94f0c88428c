"""A wire-level fake RunPod Serverless endpoint running worker-comfyui 5.x, for tests.

What it answers follows the project's notes on RunPod Serverless and worker-comfyui 5.8.5 (the
"document"; section numbers below are its sections). Those notes are not read at run time: every fact
used is written out here.

    fake = FakeRunPod(queue_delay=0.1, execution_time=0.2)   # knobs: see __init__
    await fake.start()          # binds 127.0.0.1 on a free port; fake.base_url == "http://127.0.0.1:<port>/v2"
    ...
    await fake.stop()

Routes (2.1-2.8), all under ``/v2/{endpoint_id}/``: POST ``run``, ``runsync``, ``cancel/{id}``,
``retry/{id}``, ``purge-queue``; GET ``status/{id}``, ``stream/{id}``, ``health``. In bucket mode the
"S3 bucket" is ``GET /bucket/<MM-YY>/<job id>/<8 hex>.png?X-Amz-...`` on the same server (3.3).

Nothing is executed: a job's workflow is checked for shape the way ComfyUI's POST /prompt would, and
each SaveImage node yields small PNGs (Pillow) of the size of the workflow's EmptyLatentImage /
EmptyImage (else 64 x 64), as many as its batch_size. A job's state is computed from the fake's clock
(``fake.clock()``, which ``advance()`` moves forward), so no task runs per job; one ticker sends the
webhooks. Every wait is bounded. Only 127.0.0.1 is bound or contacted.

Where the document says "not documented", the fake makes a choice, marked CHOICE below; a client
must not depend on those (error bodies, /stream of a non-generator job, /status after retention).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import json
import random
import secrets
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from PIL import Image

__all__ = ["FakeRunPod", "RATE_LIMITS", "FINAL", "COMFY_HOST", "sample_workflow"]

MB = 1_000_000  # CHOICE: the document says "10 MB" / "20 MB" without saying which megabyte
COMFY_HOST = "127.0.0.1:8188"
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})  # 2.0
# 4.2: route -> (requests per 10 s, concurrent requests); /health and /retry have no listed limit
RATE_LIMITS: dict[str, tuple[int, int | None]] = {
    "runsync": (2000, 400), "run": (1000, 200), "status": (2000, 400), "stream": (2000, 400),
    "cancel": (100, 20), "purge-queue": (2, None), "requests": (10, 2),
}
RATE_WINDOW = 10.0
PRESIGN_SECONDS = 604800  # 3.3: rp_upload's presigned URLs last 7 days
OUTPUT_CLASSES = {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveWEBM", "SaveVideo",
                  "VHS_VideoCombine", "PreviewAny"}
SDK_VERSION = "1.7.12"  # the runpod SDK version worker-comfyui pins (document, header)


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def _error(status: int, text: str, **headers: str) -> web.Response:
    """CHOICE: RunPod's error bodies are not documented (2.0); this fake answers {"error": text}."""
    return web.json_response({"error": text}, status=status, headers=headers or None)


@dataclass
class _Outcome:
    """What the worker returned for one run of a job (3.4, 3.5)."""

    status: str  # COMPLETED | FAILED
    output: Any = None  # None: no "output" key
    error: str | None = None
    details: list[str] | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)  # the PNGs "saved" (for tests to compare)
    run_for: float = 0.0  # seconds of execution


@dataclass
class _Job:
    id: str
    sync: bool
    input: Any
    policy: dict
    webhook: str | None
    submitted: float
    pick_at: float | None  # None while the queue is paused
    outcome: _Outcome
    worker_id: str
    retention: float
    cancelled_at: float | None = None
    retries: int = 0
    hooked: bool = False
    uploads: dict[str, bytes] = field(default_factory=dict)


class FakeRunPod:
    """One RunPod queue endpoint running worker-comfyui 5.x. Knobs are plain attributes."""

    def __init__(self, *, endpoint_id: str = "fake-endpoint", api_key: str = "rpa_TESTKEY",
                 queue_delay: float = 0.0, execution_time: float = 0.0, cold_start: float = 0.0,
                 bucket: bool | str = False, checkpoints: list[str] | None = None,
                 known_classes: set[str] | None = None) -> None:
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        # seconds a job waits IN_QUEUE, and runs IN_PROGRESS (2.0); the first job also waits cold_start (4.5 #1)
        self.queue_delay = queue_delay
        self.execution_time = execution_time
        self.cold_start = cold_start
        self.unheeded_cancels = 0  # the next N cancels answer the job's status but do not stop it (a busy worker)
        self.validation_time = 0.0  # seconds a job that fails validation runs (the worker fails it at once)
        # 3.3: False = base64 outputs; True = "s3_url" presigned URLs served by this fake at /bucket/...;
        # "simulated" = BUCKET_ENDPOINT_URL set but no keys: data is "simulated_uploaded/<8hex>.png"
        self.bucket = bucket
        self.bucket_redirects = 0  # the next N bucket GETs answer 307 to the same URL (S3 may redirect)
        self.checkpoints = checkpoints  # None: any ckpt_name; a list: ComfyUI's value_not_in_list otherwise (3.4)
        self.known_classes = known_classes  # None: any class_type; a set: others are unknown to "ComfyUI"
        self.image_bytes: bytes | None = None  # every output file is these bytes instead of a PNG
        self.noise = False  # PNGs of random pixels (do not compress) instead of one colour
        self.legacy = False  # <= 4.0.1 output: {"status": "success", "message": <last image>} (3.8)
        self.progress_output = False  # PR #221 shape under "output" while IN_PROGRESS (3.7; not merged)
        self.failed_details = False  # FAILED answers also carry output: {"details": [...]} (3.5, undocumented)
        # sizes (4.1); CHOICE: the status code for an oversized request is undocumented, default 400
        self.run_body_limit = 10 * MB
        self.runsync_body_limit = 20 * MB
        self.oversize_status = 400
        self.run_result_limit = 10 * MB  # a larger handler result: COMPLETED with no "output" (3.5, 4.5 #2)
        self.runsync_result_limit = 20 * MB
        # retention and lifetimes (4.3), in seconds of the fake's clock
        self.run_retention = 1800.0
        self.runsync_retention = 60.0
        self.runsync_wait_retention = 300.0  # "up to 5 minutes with ?wait"
        self.default_ttl = 86400.0
        self.execution_timeout = 600.0  # 2.10, per job policy.executionTimeout
        self.timeout_status = "TIMED_OUT"  # CHOICE (2.10): what an execution timeout ends as; or "FAILED"
        self.runsync_default_wait = 90.0
        self.rate_limits: dict[str, tuple[int, int | None]] = dict(RATE_LIMITS)  # 4.2; set {} to switch off
        self.retry_after: str | None = None  # CHOICE: a Retry-After header on 429 (undocumented; none by default)
        self.webhook_retry_delay = 10.0  # 2.9: two more tries, 10 s apart
        self.workers = 1  # /health's worker counts; jobs go to the workers in turn, each numbering its files from 1
        # records
        self.requests: list[dict] = []
        self.jobs: dict[str, _Job] = {}
        self.webhook_calls: list[dict] = []
        self.unhandled: list[str] = []
        self.retried = 0
        self.url = ""
        self.base_url = ""
        self._skew = 0.0
        self._faults: list[list] = []  # [route or None, status, count]
        self._failures: list[tuple[str, str | None]] = []
        self._paused = False
        self._first_job = True
        self._counters: dict[tuple[str, str], int] = {}  # (worker id, file prefix) -> files saved
        self._worker_ids: list[str] = []
        self._turn = 0
        self._hits: dict[str, deque[float]] = {}
        self._inflight: dict[str, int] = {}
        self._bucket_files: dict[str, tuple[bytes, float]] = {}
        self._secret = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._hooks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * MB)
        prefix = "/v2/{endpoint}"
        app.router.add_post(prefix + "/run", self._h_run)
        app.router.add_post(prefix + "/runsync", self._h_runsync)
        app.router.add_get(prefix + "/status/{job}", self._h_status)
        app.router.add_get(prefix + "/stream/{job}", self._h_stream)
        app.router.add_post(prefix + "/cancel/{job}", self._h_cancel)
        app.router.add_post(prefix + "/retry/{job}", self._h_retry)
        app.router.add_post(prefix + "/purge-queue", self._h_purge)
        app.router.add_get(prefix + "/health", self._h_health)
        app.router.add_get("/bucket/{key:.+}", self._h_bucket)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[-1][1]
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v2"
        self._session = aiohttp.ClientSession()
        self._ticker = asyncio.create_task(self._tick(), name="fake-runpod-ticker")

    async def stop(self) -> None:
        for task in [self._ticker, *self._hooks]:
            if task is not None:
                task.cancel()
        pending = [t for t in [self._ticker, *self._hooks] if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 2.0)
        self._runner = self._ticker = self._session = None

    async def __aenter__(self) -> FakeRunPod:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ knobs
    def clock(self) -> float:
        """The fake's clock (seconds): time.monotonic() plus whatever advance() added."""
        return time.monotonic() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the clock forward: queues, runs, retention, TTLs, rate windows and URL expiry all follow."""
        self._skew += seconds

    def force_429(self, route: str | None = None, *, count: int = 1) -> None:
        """The next ``count`` requests to ``route`` ("run", "status", ...; None: any) answer 429 (4.2)."""
        self.fail_http(route, status=429, count=count)

    def fail_http(self, route: str | None = None, *, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests to ``route`` answer ``status`` without being processed."""
        self._faults.append([route, status, count])

    def fail_next(self, kind: str, *, text: str | None = None, count: int = 1) -> None:
        """The next ``count`` jobs (after input validation) end the given way (3.4, 3.5, 3.6):

        ``execution`` (a node raised; FAILED "Job processing failed" + details), ``partial`` (a node
        raised after another saved images: COMPLETED with images and errors), ``validation`` (ComfyUI
        rejected a ckpt_name: "Workflow validation failed:" ...), ``unreachable`` (ComfyUI never came
        up), ``websocket``, ``exception`` (an SDK-captured exception: a JSON string), ``no_images``
        (success_no_images), ``oversize`` (result refused by RunPod: COMPLETED without output),
        ``error`` (FAILED with ``text`` as the error).
        """
        self._failures.extend([(kind, text)] * count)

    def pause(self) -> None:
        """New and retried jobs stay IN_QUEUE until resume() (no worker free)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        now = self.clock()
        for job in self.jobs.values():
            if job.pick_at is None and job.cancelled_at is None:
                job.pick_at = now + self.queue_delay

    def files_of(self, job_id: str) -> list[tuple[str, bytes]]:
        """The files the job's workflow "saved", in output order."""
        return list(self.jobs[job_id].outcome.files)

    # ------------------------------------------------------------------ the job model
    def _end(self, job: _Job) -> float | None:
        """When the job's run ends (clock), or None while it is not picked up."""
        if job.pick_at is None:
            return None
        limit = self._exec_limit(job)
        return job.pick_at + min(job.outcome.run_for, limit)

    def _exec_limit(self, job: _Job) -> float:
        timeout = job.policy.get("executionTimeout")
        return timeout / 1000 if isinstance(timeout, (int, float)) and timeout > 0 else self.execution_timeout

    def state(self, job: _Job, now: float | None = None) -> str | None:
        """The job's status at ``now``, or None once it is gone (TTL or retention over: 404)."""
        now = self.clock() if now is None else now
        ttl = job.policy.get("ttl")
        ttl = ttl / 1000 if isinstance(ttl, (int, float)) and ttl > 0 else self.default_ttl
        if now >= job.submitted + ttl:  # 2.10: deleted even while running
            return None
        if job.cancelled_at is not None:
            return None if now >= job.cancelled_at + job.retention else "CANCELLED"
        end = self._end(job)
        if end is None or now < job.pick_at:
            return "IN_QUEUE"
        if now < end:
            return "IN_PROGRESS"
        if now >= end + job.retention:  # 4.3: results are deleted after the retention
            return None
        if job.outcome.run_for > self._exec_limit(job):
            return self.timeout_status
        return job.outcome.status

    def body(self, job: _Job, now: float | None = None) -> dict | None:
        """The /status body (2.0, 2.3), or None for a job that is gone."""
        now = self.clock() if now is None else now
        status = self.state(job, now)
        if status is None:
            return None
        body: dict[str, Any] = {"id": job.id, "status": status}
        picked = job.pick_at is not None and now >= job.pick_at and (
            job.cancelled_at is None or job.cancelled_at >= job.pick_at)
        if picked:
            body["delayTime"] = _ms(job.pick_at - job.submitted)
            body["workerId"] = job.worker_id
        if status in FINAL and picked:
            end = job.cancelled_at if status == "CANCELLED" else self._end(job)
            body["executionTime"] = _ms(end - job.pick_at)
        outcome = job.outcome
        if status == "COMPLETED" and outcome.output is not None:
            body["output"] = outcome.output
        elif status == "FAILED" and job.outcome.run_for <= self._exec_limit(job):
            body["error"] = outcome.error
            if self.failed_details and outcome.details:
                body["output"] = {"details": outcome.details}
        elif status == "FAILED":
            body["error"] = "Job execution timed out"  # CHOICE (2.10): the wording is undocumented
        elif status == "IN_PROGRESS" and self.progress_output:
            done = (now - job.pick_at) / max(outcome.run_for, 1e-6)
            value = min(25, int(done * 25))
            body["output"] = {"type": "progress", "value": value, "max": 25, "percent": value * 4.0, "node": "3"}
        return body

    def _get(self, job_id: str) -> _Job | None:
        job = self.jobs.get(job_id)
        if job is not None and self.state(job) is None:
            del self.jobs[job_id]
            return None
        return job

    def _new_job(self, payload: dict, *, sync: bool, wait_given: bool) -> _Job:
        now = self.clock()
        suffix = random.choice(["-u1", "-e1", "-u2", "-e2"])  # 2.0: ids carry such a suffix
        job_id = ("sync-" if sync else "") + str(uuid.uuid4()) + suffix
        policy = payload.get("policy") if isinstance(payload.get("policy"), dict) else {}
        webhook = payload.get("webhook") if isinstance(payload.get("webhook"), str) else None
        if sync:
            retention = self.runsync_wait_retention if wait_given else self.runsync_retention
        else:
            retention = self.run_retention
        job = _Job(job_id, sync, payload.get("input"), policy, webhook, now, None, _Outcome("COMPLETED"),
                   self._next_worker(), retention)
        self._start_run(job, now)
        self.jobs[job_id] = job
        return job

    def _next_worker(self) -> str:
        """The worker that takes the next job: each of `workers` in turn (a new worker's disk is empty)."""
        while len(self._worker_ids) < max(1, self.workers):
            self._worker_ids.append("fk" + secrets.token_hex(6))
        self._turn += 1
        return self._worker_ids[(self._turn - 1) % max(1, self.workers)]

    def _start_run(self, job: _Job, now: float) -> None:
        job.outcome = self._execute(job)
        delay = self.queue_delay + (self.cold_start if self._first_job else 0.0)
        self._first_job = False
        job.pick_at = None if self._paused else now + delay

    # ------------------------------------------------------------------ the worker (3.2-3.6)
    def _execute(self, job: _Job) -> _Outcome:
        try:
            return self._handler(job)
        except Exception as error:  # noqa: BLE001 - the SDK catches what the handler raises (3.4)
            info = {"error_type": str(type(error)), "error_message": str(error),
                    "error_traceback": traceback.format_exc(), "hostname": "fake-host",
                    "worker_id": job.worker_id, "runpod_version": SDK_VERSION}
            return _Outcome("FAILED", error=json.dumps(info), run_for=self.validation_time)

    def _fail(self, error: str, details: list[str] | None = None, run_for: float | None = None) -> _Outcome:
        return _Outcome("FAILED", error=error, details=details,
                        run_for=self.validation_time if run_for is None else run_for)

    def _handler(self, job: _Job) -> _Outcome:
        job_input = job.input
        # validate_input (3.4); like the worker, a JSON list or number input raises (-> SDK error)
        if job_input is None:
            return self._fail("Please provide input")
        if isinstance(job_input, str):
            try:
                job_input = json.loads(job_input)
            except ValueError:
                return self._fail("Invalid JSON format in input")
        workflow = job_input.get("workflow")
        if workflow is None:
            return self._fail("Missing 'workflow' parameter")
        images = job_input.get("images")
        if images is not None:
            if not isinstance(images, list) or not all("name" in image and "image" in image for image in images):
                return self._fail("'images' must be a list of objects with 'name' and 'image' keys")
        failure = self._failures.pop(0) if self._failures else None
        if failure and failure[0] == "unreachable":
            return self._fail(f"ComfyUI server ({COMFY_HOST}) not reachable after multiple retries.")
        errors = []
        for image in images or []:  # upload_images (3.2 step 3); a str item raises in the except, as there
            try:
                name, data = image["name"], image["image"]
                job.uploads[name] = base64.b64decode(data.split(",", 1)[1] if "," in data else data)
            except binascii.Error as error:
                errors.append(f"Error decoding base64 for {image.get('name', 'unknown')}: {error}")
            except Exception as error:  # noqa: BLE001 - as the worker
                errors.append(f"Unexpected error uploading {image.get('name', 'unknown')}: {error}")
        if errors:
            return self._fail("Failed to upload one or more input images", errors)
        if failure and failure[0] == "websocket":
            return self._fail(f"WebSocket communication error: {failure[1] or 'Connection to remote host was lost.'}")
        rejected = self._prompt_check(workflow, failure)
        if rejected:
            return self._fail(rejected)
        return self._outputs(job, workflow, failure)

    def _prompt_check(self, workflow: Any, failure: tuple[str, str | None] | None) -> str | None:
        """What ComfyUI's POST /prompt would refuse, as the worker words it (3.4)."""
        url = f"http://{COMFY_HOST}/prompt"
        if not isinstance(workflow, dict):  # ComfyUI raises on it: HTTP 500
            return f"Error queuing workflow: 500 Server Error: Internal Server Error for url: {url}"
        for node_id, node in workflow.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return _raw_400("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                f"Node ID '#{node_id}'")
            if self.known_classes is not None and node["class_type"] not in self.known_classes:
                kind = node["class_type"]
                return _raw_400("invalid_prompt", f"Cannot execute because node {kind} does not exist.",
                                f"Node ID '#{node_id}'")
        if not any(node["class_type"] in OUTPUT_CLASSES for node in workflow.values()):
            return _raw_400("prompt_no_outputs", "Prompt has no outputs", "")
        bad = [(nid, node) for nid, node in workflow.items() if node["class_type"] == "CheckpointLoaderSimple"
               and self.checkpoints is not None
               and (node.get("inputs") or {}).get("ckpt_name") not in self.checkpoints]
        if failure and failure[0] == "validation" and not bad:
            missing = failure[1] or "missing.safetensors"
            bad = [("4", {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": missing}})]
        if bad:
            return self._validation_text(bad, workflow)
        return None

    def _validation_text(self, bad: list[tuple[str, dict]], workflow: dict) -> str:
        available = self.checkpoints or []
        lines = []
        for node_id, node in bad:
            value = (node.get("inputs") or {}).get("ckpt_name")
            errors = [{"type": "value_not_in_list", "message": "Value not in list",
                       "details": f"ckpt_name: '{value}' not in {available!r}",
                       "extra_info": {"input_name": "ckpt_name", "input_config": [available], "received_value": value}}]
            outputs = [nid for nid, n in workflow.items() if n.get("class_type") in OUTPUT_CLASSES]
            entry = {"errors": errors, "dependent_outputs": outputs, "class_type": node["class_type"]}
            lines += [f"• Node {node_id} ({key}): {value}" for key, value in entry.items()]
        text = "Workflow validation failed:\n" + "\n".join(lines)
        if available:
            return text + f"\n\nAvailable checkpoint models: {', '.join(available)}"
        return text + "\n\nNo checkpoint models appear to be available. Please check your model installation."

    def _outputs(self, job: _Job, workflow: dict, failure: tuple[str, str | None] | None) -> _Outcome:
        width, height, batch = _latent_size(workflow)
        kind = failure[0] if failure else None
        files: list[tuple[str, bytes]] = []
        if kind != "no_images":
            for node in workflow.values():
                if node["class_type"] != "SaveImage":  # PreviewImage saves "temp" files: skipped (3.3)
                    continue
                prefix = (node.get("inputs") or {}).get("filename_prefix")
                prefix = prefix if isinstance(prefix, str) and prefix else "ComfyUI"
                for _ in range(batch):
                    files.append((self._next_name(job.worker_id, prefix), self._png(width, height)))
        run_for = self.execution_time
        if kind == "execution":
            text = failure[1] or "CUDA out of memory. Tried to allocate 2.00 GiB"
            details = [f"Workflow execution error: Node Type: KSampler, Node ID: 3, Message: {text}"]
            return self._fail("Job processing failed", details, run_for)
        items = []
        for name, data in files:
            if self.bucket:
                items.append({"filename": name, "type": "s3_url", "data": self._upload(job.id, data)})
            else:
                items.append({"filename": name, "type": "base64", "data": base64.b64encode(data).decode()})
        if kind == "error":
            return self._fail(failure[1] or "An unexpected error occurred: boom", None, run_for)
        if kind == "exception":
            raise RuntimeError(failure[1] or "handler crashed")
        output: dict[str, Any] = {"images": items} if items else {"status": "success_no_images", "images": []}
        if kind == "partial":
            text = failure[1] or "Node failed"
            output["errors"] = [f"Workflow execution error: Node Type: VAEDecode, Node ID: 8, Message: {text}"]
        if self.legacy:
            missing = "the image does not exist in the specified output folder: /comfyui/output"
            output = ({"status": "success", "message": items[-1]["data"]} if items
                      else {"status": "error", "message": missing})
        limit = self.runsync_result_limit if job.sync else self.run_result_limit
        if kind == "oversize" or len(json.dumps(output)) > limit:
            output = None  # 3.5: the platform refused the result; the client sees COMPLETED without output
        return _Outcome("COMPLETED", output=output, files=files, run_for=run_for)

    def _next_name(self, worker: str, prefix: str) -> str:
        """ComfyUI's name for a saved file: the prefix and the worker's own counter (it starts at 1 on each worker)."""
        base = prefix.rsplit("/", 1)[-1] or "ComfyUI"
        self._counters[worker, base] = self._counters.get((worker, base), 0) + 1
        return f"{base}_{self._counters[worker, base]:05}_.png"

    def _png(self, width: int, height: int) -> bytes:
        if self.image_bytes is not None:
            return self.image_bytes
        if self.noise:
            image = Image.frombytes("RGB", (width, height), random.randbytes(width * height * 3))
        else:
            image = Image.new("RGB", (width, height), tuple(random.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    def _upload(self, job_id: str, data: bytes) -> str:
        """rp_upload.upload_image: bucket MM-YY, key <job id>/<8 hex>.png, presigned for 7 days (3.3)."""
        name = secrets.token_hex(4) + ".png"
        if self.bucket == "simulated":
            return f"simulated_uploaded/{name}"
        key = f"{time.strftime('%m-%y', time.gmtime())}/{job_id}/{name}"
        self._bucket_files[key] = (data, self.clock())
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=FAKEACCESSKEY%2F{stamp[:8]}%2Fus-east-1"
                 f"%2Fs3%2Faws4_request&X-Amz-Date={stamp}&X-Amz-Expires={PRESIGN_SECONDS}"
                 f"&X-Amz-SignedHeaders=host&X-Amz-Signature={self._sign(key)}")
        return f"{self.url}/bucket/{key}?{query}"

    def _sign(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        body = b""
        if request.method == "POST":
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _error(self.oversize_status, "request body too large")
        parsed = None
        if body and len(body) <= 2 * MB:
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "headers": headers, "auth": self._auth_kind(request), "json": parsed,
                              "size": len(body)})
        if request.path.startswith("/bucket/"):
            return await handler(request)
        parts = request.path.split("/")  # "", "v2", endpoint, route, ...
        route = parts[3] if len(parts) > 3 else ""
        for fault in self._faults:
            if fault[0] in (None, route) and fault[2] > 0:
                fault[2] -= 1
                if fault[2] <= 0:
                    self._faults.remove(fault)
                if fault[1] == 429:
                    return self._too_many()
                return _error(fault[1], f"forced {fault[1]}")
        if self.requests[-1]["auth"] not in ("bearer", "bare"):
            return _error(401, "Unauthorized")  # 2.0
        if len(parts) > 2 and parts[2] != self.endpoint_id:
            return _error(404, "endpoint not found")  # 2.0
        limit = {"run": self.run_body_limit, "runsync": self.runsync_body_limit}.get(route)
        if limit is not None and len(body) > limit:  # 4.1
            return _error(self.oversize_status, f"request body is larger than {limit // MB} MB")
        if not self._take_slot(route):
            return self._too_many()
        self._inflight[route] = self._inflight.get(route, 0) + 1
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:  # noqa: BLE001 - a bug in the fake: recorded, answered 500
            self.unhandled.append(f"{request.method} {request.path}: {error!r}\n{traceback.format_exc()}")
            return _error(500, "internal error")
        finally:
            self._inflight[route] -= 1

    def _auth_kind(self, request: web.Request) -> str | None:
        """2.0: `authorization: <key>` and `Authorization: Bearer <key>` are both accepted."""
        value = request.headers.get("Authorization")
        if value is None:
            return None
        if value == self.api_key:
            return "bare"
        if value.startswith("Bearer ") and value[7:] == self.api_key:
            return "bearer"
        return "wrong"

    def _too_many(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return _error(429, "rate limit exceeded", **headers)

    def _take_slot(self, route: str) -> bool:
        """4.2: requests per 10 s and concurrent requests per route; a refused request does not count."""
        per_window, concurrent = self.rate_limits.get(route, (None, None))
        if concurrent is not None and self._inflight.get(route, 0) >= concurrent:
            return False
        if per_window is None:
            return True
        now = self.clock()
        hits = self._hits.setdefault(route, deque())
        while hits and hits[0] <= now - RATE_WINDOW:
            hits.popleft()
        if len(hits) >= per_window:
            return False
        hits.append(now)
        return True

    def _payload(self, request_json: Any) -> dict | web.Response:
        if not isinstance(request_json, dict) or "input" not in request_json:
            return _error(400, "the body must be a JSON object with an 'input'")  # 2.0
        return request_json

    async def _h_run(self, request: web.Request) -> web.Response:
        payload = self._payload(await _json_or_none(request))
        if isinstance(payload, web.Response):
            return payload
        job = self._new_job(payload, sync=False, wait_given=False)
        return web.json_response({"id": job.id, "status": "IN_QUEUE"})  # 2.1

    async def _h_runsync(self, request: web.Request) -> web.Response:
        payload = self._payload(await _json_or_none(request))
        if isinstance(payload, web.Response):
            return payload
        wait = self.runsync_default_wait
        given = "wait" in request.query
        if given:
            try:
                wait = min(300000, max(1000, int(request.query["wait"]))) / 1000  # 2.2
            except ValueError:
                return _error(400, "wait must be a number of milliseconds")
        job = self._new_job(payload, sync=True, wait_given=given)
        until = time.monotonic() + wait
        while time.monotonic() < until:  # bounded by ?wait
            if self.state(job) in FINAL or self.state(job) is None:
                break
            await asyncio.sleep(min(0.02, max(0.0, until - time.monotonic())))
        body = self.body(job)
        if body is None or body["status"] not in FINAL:
            return web.json_response({"id": job.id, "status": body["status"] if body else "IN_QUEUE"})
        return web.json_response(body)

    async def _h_status(self, request: web.Request) -> web.Response:
        job = self._get(request.match_info["job"])
        if job is None:
            return _error(404, "request does not exist")  # 2.3, 4.3: expired or unknown
        return web.json_response(self.body(job))

    async def _h_stream(self, request: web.Request) -> web.Response:
        job = self._get(request.match_info["job"])
        if job is None:
            return _error(404, "request does not exist")
        body = self.body(job)
        # CHOICE (2.4): a non-generator job streams nothing until final, then its output as one chunk
        stream = [{"output": body["output"]}] if body["status"] == "COMPLETED" and "output" in body else []
        return web.json_response({"id": job.id, "status": body["status"], "stream": stream})

    async def _h_cancel(self, request: web.Request) -> web.Response:
        job = self._get(request.match_info["job"])
        if job is None:
            return _error(404, "request does not exist")
        if self.unheeded_cancels > 0:
            self.unheeded_cancels -= 1
        elif self.state(job) in ("IN_QUEUE", "IN_PROGRESS"):
            job.cancelled_at = self.clock()  # 2.5
        return web.json_response({"id": job.id, "status": self.state(job)})

    async def _h_retry(self, request: web.Request) -> web.Response:
        job = self._get(request.match_info["job"])
        if job is None:
            return _error(404, "request does not exist")  # 2.6: expired jobs cannot be retried
        if self.state(job) not in ("FAILED", "TIMED_OUT"):
            return _error(400, f"job is {self.state(job)}, only FAILED or TIMED_OUT jobs can be retried")
        job.retries += 1
        self.retried += 1
        job.hooked = False
        self._start_run(job, self.clock())
        return web.json_response({"id": job.id, "status": "IN_QUEUE"})

    async def _h_purge(self, request: web.Request) -> web.Response:
        queued = [job_id for job_id, job in self.jobs.items() if self.state(job) == "IN_QUEUE"]
        for job_id in queued:  # 2.7: running jobs continue
            del self.jobs[job_id]
        return web.json_response({"removed": len(queued), "status": "completed"})

    async def _h_health(self, request: web.Request) -> web.Response:
        states = [self.state(job) for job in self.jobs.values()]
        running = states.count("IN_PROGRESS")
        idle = max(0, self.workers - running)
        return web.json_response({  # 2.8, the superset of worker counters
            "jobs": {"completed": states.count("COMPLETED"), "failed": states.count("FAILED"),
                     "inProgress": running, "inQueue": states.count("IN_QUEUE"), "retried": self.retried},
            "workers": {"idle": idle, "initializing": 0, "ready": idle, "running": running, "throttled": 0}})

    async def _h_bucket(self, request: web.Request) -> web.Response:
        """The presigned GET of an output uploaded by rp_upload (3.3); S3-style errors."""
        key = request.match_info["key"]
        if self.bucket_redirects > 0:
            self.bucket_redirects -= 1
            raise web.HTTPTemporaryRedirect(str(request.rel_url))
        entry = self._bucket_files.get(key)
        if entry is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if not hmac.compare_digest(request.query.get("X-Amz-Signature", ""), self._sign(key)):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
        if self.clock() >= entry[1] + PRESIGN_SECONDS:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return web.Response(body=entry[0], content_type="image/png")

    # ------------------------------------------------------------------ webhooks (2.9)
    async def _tick(self) -> None:
        while True:
            for job in list(self.jobs.values()):
                if job.webhook and not job.hooked and self.state(job) in FINAL:
                    job.hooked = True
                    task = asyncio.create_task(self._send_hook(job.webhook, self.body(job)))
                    self._hooks.add(task)
                    task.add_done_callback(self._hooks.discard)
            await asyncio.sleep(0.02)

    async def _send_hook(self, url: str, body: dict | None) -> None:
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            self.unhandled.append(f"webhook to a host other than 127.0.0.1 refused: {url}")
            return
        for attempt in range(3):
            status: int | str
            try:
                async with self._session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                status = type(error).__name__
            self.webhook_calls.append({"url": url, "body": body, "attempt": attempt + 1, "status": status})
            if status == 200:
                return
            if attempt < 2:
                await asyncio.sleep(self.webhook_retry_delay)


def sample_workflow(width: int | None = 96, height: int | None = 80, batch: int = 1,
                    prefix: str = "ComfyUI") -> dict:
    """A txt2img workflow in API format (its EmptyLatentImage left out when ``width`` is None)."""
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "model": ["4", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }
    if width is not None:
        graph["5"] = {"class_type": "EmptyLatentImage",
                      "inputs": {"width": width, "height": height, "batch_size": batch}}
    return graph


def _raw_400(kind: str, message: str, details: str) -> str:
    """worker-comfyui's text for a ComfyUI 400 without node_errors: "<message>. Raw response: <body>" (3.4)."""
    raw = json.dumps({"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                      "node_errors": {}})
    return f"{message}. Raw response: {raw}"


def _latent_size(workflow: dict) -> tuple[int, int, int]:
    """Width, height and batch of the first Empty*Image node whose values are plain numbers; else 64 x 64 x 1."""
    for node in workflow.values():
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        if node.get("class_type") in ("EmptyLatentImage", "EmptyImage", "EmptySD3LatentImage"):
            width, height, batch = inputs.get("width"), inputs.get("height"), inputs.get("batch_size", 1)
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height, batch)):
                return max(1, min(width, 4096)), max(1, min(height, 4096)), max(1, min(batch, 64))
    return 64, 64, 1


def _s3_error(status: int, code: str, message: str) -> web.Response:
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
           f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>")
    return web.Response(status=status, text=xml, content_type="application/xml")


async def _json_or_none(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        return None
