"""Tests proving that tests/fakes/runpod.py answers like RunPod Serverless running worker-comfyui 5.8.5.

Each test cites, in a comment, the section of the project's notes on RunPod ("WORKER-COMFYUI.md",
written from RunPod's docs and SDKs and worker-comfyui's handler.py at tag 5.8.5) that the behaviour
comes from. The expected texts are written out here: nothing is read from outside tests/ at run time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.fakes.runpod import FakeRunPod
from tests.fakes.runpod import sample_workflow as workflow

pytestmark = pytest.mark.timeout(30)

KEY = "rpa_TESTKEY"
UUID_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-[ue]\d)?$")


@pytest.fixture
async def fake():
    server = FakeRunPod(api_key=KEY)
    await server.start()
    yield server
    await server.stop()
    assert server.unhandled == []


async def call(fake: FakeRunPod, method: str, route: str, body=None, *, auth: str | None = "Bearer " + KEY,
               data: bytes | None = None, endpoint: str | None = None, query: str = ""):
    """One request; returns (status, parsed JSON or text)."""
    headers = {"Authorization": auth} if auth is not None else {}
    url = f"{fake.base_url}/{endpoint or fake.endpoint_id}/{route}{query}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=body if data is None else None, data=data, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=20)) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


async def run(fake: FakeRunPod, job_input, **extra) -> str:
    status, body = await call(fake, "POST", "run", {"input": job_input, **extra})
    assert status == 200, body
    return body["id"]


async def status_of(fake: FakeRunPod, job_id: str):
    return await call(fake, "GET", f"status/{job_id}")


async def final(fake: FakeRunPod, job_id: str) -> dict:
    async with asyncio.timeout(10):
        while True:
            code, body = await status_of(fake, job_id)
            assert code == 200, body
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                return body
            await asyncio.sleep(0.01)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


# --- 2.0: auth, endpoint ids, bodies ------------------------------------------------------------


async def test_auth_accepts_bare_key_and_bearer_and_refuses_others(fake):
    # 2.0: `authorization: <key>` and `Authorization: Bearer <key>` both work; a wrong key is 401
    assert (await call(fake, "GET", "health", auth=KEY))[0] == 200
    assert (await call(fake, "GET", "health", auth="Bearer " + KEY))[0] == 200
    assert (await call(fake, "GET", "health", auth=None))[0] == 401
    assert (await call(fake, "GET", "health", auth="Bearer wrong"))[0] == 401
    assert (await call(fake, "POST", "run", {"input": {"workflow": workflow()}}, auth="nope"))[0] == 401
    assert fake.jobs == {}


async def test_unknown_endpoint_is_404(fake):
    # 2.0: 404 for a wrong endpoint id
    assert (await call(fake, "GET", "health", endpoint="other-endpoint"))[0] == 404


async def test_run_without_input_or_json_is_400(fake):
    # 2.0 and section 6: 400 when `input` is missing or the body is not JSON
    assert (await call(fake, "POST", "run", {"webhook": "x"}))[0] == 400
    assert (await call(fake, "POST", "run", data=b"not json{"))[0] == 400
    assert (await call(fake, "POST", "runsync", [1, 2]))[0] == 400


async def test_requests_are_recorded_without_the_key(fake):
    # section 6 asks for nothing here; the brief: tests assert on method, path, headers (no key), JSON
    await run(fake, {"workflow": workflow()})
    record = fake.requests[-1]
    assert record["method"] == "POST" and record["path"] == f"/v2/{fake.endpoint_id}/run"
    assert record["json"] == {"input": {"workflow": workflow()}}
    assert record["auth"] == "bearer"
    assert all(key.lower() != "authorization" for key in record["headers"])
    assert KEY not in json.dumps(fake.requests)


# --- 2.1, 2.3: the job lifecycle and billing fields --------------------------------------------


async def test_run_answers_in_queue_with_a_uuid_like_id(fake):
    # 2.1: {"id", "status": "IN_QUEUE"}; 2.0: a UUID, often with a -u1/-e1 suffix
    fake.pause()
    status, body = await call(fake, "POST", "run", {"input": {"workflow": workflow()}})
    assert status == 200 and set(body) == {"id", "status"} and body["status"] == "IN_QUEUE"
    assert UUID_ID.match(body["id"])


async def test_states_in_order_with_delay_and_execution_times(fake):
    # 2.0: IN_QUEUE -> IN_PROGRESS -> COMPLETED; delayTime and workerId once a worker has the job,
    # executionTime (ms) at the end; 3.7: no output while IN_PROGRESS
    fake.queue_delay, fake.execution_time = 5.0, 7.0
    job = await run(fake, {"workflow": workflow()})
    code, body = await status_of(fake, job)
    assert code == 200 and body == {"id": job, "status": "IN_QUEUE"}
    fake.advance(5.0)
    _, body = await status_of(fake, job)
    assert body["status"] == "IN_PROGRESS" and body["delayTime"] == 5000 and "output" not in body
    assert isinstance(body["workerId"], str) and "executionTime" not in body
    fake.advance(7.0)
    _, body = await status_of(fake, job)
    # 2.0 / [I7]: a 5.8.5 response has exactly these top-level keys
    assert set(body) == {"id", "status", "delayTime", "executionTime", "output", "workerId"}
    assert body["status"] == "COMPLETED" and body["delayTime"] == 5000 and body["executionTime"] == 7000


async def test_outputs_are_base64_pngs_of_the_requested_size_and_batch(fake):
    # 3.3: {"images": [{"filename", "type": "base64", "data"}]}, plain base64 without a data-URI prefix
    job = await run(fake, {"workflow": workflow(96, 80, batch=3, prefix="bot/fox")})
    body = await final(fake, job)
    images = body["output"]["images"]
    assert [set(item) for item in images] == [{"filename", "type", "data"}] * 3
    assert [item["filename"] for item in images] == ["fox_00001_.png", "fox_00002_.png", "fox_00003_.png"]
    assert all(item["type"] == "base64" and not item["data"].startswith("data:") for item in images)
    decoded = [base64.b64decode(item["data"]) for item in images]
    assert [png_size(data) for data in decoded] == [(96, 80)] * 3
    assert [data for _, data in fake.files_of(job)] == decoded


async def test_default_size_and_no_images(fake):
    # the brief: 64 x 64 without an Empty*Image node; 3.3: temp-only outputs give success_no_images
    body = await final(fake, await run(fake, {"workflow": workflow(None)}))
    assert png_size(base64.b64decode(body["output"]["images"][0]["data"])) == (64, 64)
    preview = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
               "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    body = await final(fake, await run(fake, {"workflow": preview}))
    assert body["status"] == "COMPLETED" and body["output"] == {"status": "success_no_images", "images": []}


async def test_cold_start_delays_only_the_first_job(fake):
    # 4.5 item 1: a configurable delay before IN_PROGRESS for a new worker's first job
    fake.cold_start = 3.0
    first, second = await run(fake, {"workflow": workflow()}), await run(fake, {"workflow": workflow()})
    assert (await final(fake, second))["delayTime"] == 0
    assert (await status_of(fake, first))[1]["status"] == "IN_QUEUE"
    fake.advance(3.0)
    assert (await final(fake, first))["delayTime"] == 3000


async def test_progress_mode_shows_pr_221_shape(fake):
    # 3.7: optional mode with PR #221's progress object under output while IN_PROGRESS
    fake.progress_output, fake.execution_time = True, 10.0
    job = await run(fake, {"workflow": workflow()})
    fake.advance(5.0)
    _, body = await status_of(fake, job)
    assert body["status"] == "IN_PROGRESS"
    assert set(body["output"]) == {"type", "value", "max", "percent", "node"} and body["output"]["type"] == "progress"


async def test_legacy_output_format(fake):
    # 3.8: <= 4.0.1 returned {"status": "success", "message": <base64>} with one image
    fake.legacy = True
    body = await final(fake, await run(fake, {"workflow": workflow(batch=2)}))
    assert body["output"]["status"] == "success"
    assert base64.b64decode(body["output"]["message"]) == fake.files_of(body["id"])[-1][1]


# --- 2.2: /runsync ----------------------------------------------------------------------------


async def test_runsync_returns_the_finished_job(fake):
    # 2.2: the completed body, with a sync- id
    status, body = await call(fake, "POST", "runsync", {"input": {"workflow": workflow()}})
    assert status == 200 and body["status"] == "COMPLETED" and body["id"].startswith("sync-")
    assert body["output"]["images"][0]["type"] == "base64"
    assert (await status_of(fake, body["id"]))[1]["status"] == "COMPLETED"  # readable through /status too


async def test_runsync_wait_runs_out_with_a_non_final_status(fake):
    # 2.2: ?wait= in ms (1000-300000); not finished: {"id", "status"} with a non-final status
    fake.execution_time = 60.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body = await call(fake, "POST", "runsync", {"input": {"workflow": workflow()}}, query="?wait=10")
    assert 0.9 <= loop.time() - started < 5  # clamped up to 1000 ms
    assert status == 200 and set(body) == {"id", "status"} and body["status"] == "IN_PROGRESS"
    assert body["id"].startswith("sync-")


async def test_runsync_result_kept_one_minute(fake):
    # 2.2, 4.3: /runsync results are kept 1 minute after completion
    _, body = await call(fake, "POST", "runsync", {"input": {"workflow": workflow()}})
    fake.advance(59)
    assert (await status_of(fake, body["id"]))[0] == 200
    fake.advance(2)
    assert (await status_of(fake, body["id"]))[0] == 404


# --- 3.4: worker-comfyui's validation and error texts ------------------------------------------


BAD_IMAGES = "'images' must be a list of objects with 'name' and 'image' keys"


@pytest.mark.parametrize("job_input, error", [
    (None, "Please provide input"),
    ("{not json", "Invalid JSON format in input"),
    ({"images": []}, "Missing 'workflow' parameter"),
    ({"workflow": None}, "Missing 'workflow' parameter"),
    ({"workflow": {}, "images": "x.png"}, BAD_IMAGES),
    ({"workflow": {}, "images": [{"name": "a.png"}]}, BAD_IMAGES),
])
async def test_input_validation_texts(fake, job_input, error):
    # 3.4: exact texts; the job is FAILED with that `error` (3.5) and no output
    body = await final(fake, await run(fake, job_input))
    assert body["status"] == "FAILED" and body["error"] == error and "output" not in body


async def test_input_as_json_string_is_parsed(fake):
    # 3.1: `input` may be a JSON string
    body = await final(fake, await run(fake, json.dumps({"workflow": workflow()})))
    assert body["status"] == "COMPLETED"


async def test_input_list_gives_the_sdk_error_json(fake):
    # 3.4: an exception the handler does not catch -> the SDK's JSON-encoded error
    body = await final(fake, await run(fake, [1, 2]))
    assert body["status"] == "FAILED"
    captured = json.loads(body["error"])
    assert set(captured) == {"error_type", "error_message", "error_traceback", "hostname", "worker_id",
                             "runpod_version"}
    assert captured["error_type"] == "<class 'AttributeError'>"
    assert captured["error_message"] == "'list' object has no attribute 'get'"


async def test_images_data_uri_stripped_and_bad_base64_refused(fake):
    # 3.1: a data-URI prefix is stripped at the first comma; 3.4: undecodable base64 -> upload failure
    png = b"\x89PNG fake bytes"
    good = {"workflow": workflow(), "images": [{"name": "in.png", "image": "data:image/png;base64,"
                                                + base64.b64encode(png).decode()}]}
    job = await run(fake, good)
    assert (await final(fake, job))["status"] == "COMPLETED" and fake.jobs[job].uploads == {"in.png": png}
    fake.failed_details = True  # 3.5: the switch for output.details on failed jobs
    bad = {"workflow": workflow(), "images": [{"name": "bad.png", "image": "abc"}]}
    body = await final(fake, await run(fake, bad))
    assert body["error"] == "Failed to upload one or more input images"
    (detail,) = body["output"]["details"]
    assert detail.startswith("Error decoding base64 for bad.png: ")


async def test_comfyui_400_texts(fake):
    # 3.4: ComfyUI 400 without node_errors -> "<message>. Raw response: <body>"
    missing = {"1": {"inputs": {}}, "9": {"class_type": "SaveImage", "inputs": {}}}
    body = await final(fake, await run(fake, {"workflow": missing}))
    assert body["error"].startswith(
        "Cannot execute because a node is missing the class_type property.. Raw response: {")
    no_outputs = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    body = await final(fake, await run(fake, {"workflow": no_outputs}))
    assert body["error"].startswith("Prompt has no outputs. Raw response: ")
    raw = json.loads(body["error"].split("Raw response: ", 1)[1])
    assert raw["error"]["type"] == "prompt_no_outputs" and raw["node_errors"] == {}
    fake.known_classes = {"SaveImage", "KSampler", "CheckpointLoaderSimple", "VAEDecode", "EmptyLatentImage"}
    unknown = {**workflow(), "7": {"class_type": "NoSuchNode", "inputs": {}}}
    body = await final(fake, await run(fake, {"workflow": unknown}))
    assert body["error"].startswith("Cannot execute because node NoSuchNode does not exist.. Raw response: ")
    body = await final(fake, await run(fake, {"workflow": [1]}))
    assert body["error"] == ("Error queuing workflow: 500 Server Error: Internal Server Error for url: "
                             "http://127.0.0.1:8188/prompt")


async def test_missing_checkpoint_gives_workflow_validation_failed(fake):
    # 3.4, 4.5 item 3: value_not_in_list on ckpt_name -> node lines and the checkpoint hint
    fake.checkpoints = ["a.safetensors", "b.safetensors"]
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    lines = body["error"].split("\n")
    assert lines[0] == "Workflow validation failed:"
    assert lines[1].startswith("• Node 4 (errors): [{'type': 'value_not_in_list'")
    assert "ckpt_name: 'sd15.safetensors' not in ['a.safetensors', 'b.safetensors']" in lines[1]
    assert lines[2] == "• Node 4 (dependent_outputs): ['9']"
    assert lines[3] == "• Node 4 (class_type): CheckpointLoaderSimple"
    assert lines[4:] == ["", "Available checkpoint models: a.safetensors, b.safetensors"]
    fake.checkpoints = []
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert body["error"].endswith(
        "\n\nNo checkpoint models appear to be available. Please check your model installation.")


async def test_forced_failures(fake):
    # 3.4: execution error without saved images -> "Job processing failed" (+ details only as a switch, 3.5)
    fake.fail_next("execution", text="CUDA out of memory")
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert body["status"] == "FAILED" and body["error"] == "Job processing failed" and "output" not in body
    fake.failed_details = True
    fake.fail_next("execution", text="CUDA out of memory")
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert body["output"] == {"details": [
        "Workflow execution error: Node Type: KSampler, Node ID: 3, Message: CUDA out of memory"]}
    # 3.3: an error after another node saved images -> COMPLETED with images and errors
    fake.fail_next("partial", text="boom")
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert body["status"] == "COMPLETED" and len(body["output"]["images"]) == 1
    assert body["output"]["errors"] == ["Workflow execution error: Node Type: VAEDecode, Node ID: 8, Message: boom"]
    # 4.5 item 1: ComfyUI not up
    fake.fail_next("unreachable")
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert body["error"] == "ComfyUI server (127.0.0.1:8188) not reachable after multiple retries."
    fake.fail_next("exception", text="kaput")
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert json.loads(body["error"])["error_message"] == "kaput"


async def test_oversized_result_completes_without_output(fake):
    # 3.5, 4.5 item 2: a result RunPod refuses -> COMPLETED with no output key at all
    fake.run_result_limit = 1000
    fake.noise = True
    body = await final(fake, await run(fake, {"workflow": workflow(64, 64)}))
    assert body["status"] == "COMPLETED" and "output" not in body and "executionTime" in body
    fake.run_result_limit = 10**9
    fake.fail_next("oversize")
    assert "output" not in await final(fake, await run(fake, {"workflow": workflow()}))


# --- 4.1: sizes -----------------------------------------------------------------------------


async def test_body_limits_10_mb_run_20_mb_runsync(fake):
    # 4.1: /run at most 10 MB, /runsync 20 MB; the status is undocumented: 400 by default, configurable
    big = {"input": {"workflow": workflow(), "images": [{"name": "x.png", "image": "A" * 10_500_000}]}}
    data = json.dumps(big).encode()
    status, _ = await call(fake, "POST", "run", data=data)
    assert status == 400 and fake.jobs == {}
    fake.execution_time = 0.0
    status, body = await call(fake, "POST", "runsync", data=data)
    assert status == 200 and body["status"] == "COMPLETED"
    fake.run_body_limit, fake.oversize_status = 100, 413
    assert (await call(fake, "POST", "run", {"input": {"workflow": workflow()}}))[0] == 413


# --- 4.2: rate limits -----------------------------------------------------------------------


async def test_force_429(fake):
    # 4.2: over the limit -> 429; the knob forces it
    fake.force_429("status", count=2)
    job = await run(fake, {"workflow": workflow()})
    assert [(await status_of(fake, job))[0] for _ in range(3)] == [429, 429, 200]


async def test_rate_limit_per_window(fake):
    # 4.2: /purge-queue 2 requests per 10 s; the window moves with the clock
    assert [(await call(fake, "POST", "purge-queue"))[0] for _ in range(3)] == [200, 200, 429]
    fake.advance(10.1)
    assert (await call(fake, "POST", "purge-queue"))[0] == 200
    fake.rate_limits["status"] = (3, None)
    assert [(await status_of(fake, "x"))[0] for _ in range(4)] == [404, 404, 404, 429]


async def test_concurrency_limit(fake):
    # 4.2: concurrent requests per route (here /runsync set to 1)
    fake.rate_limits["runsync"] = (2000, 1)
    fake.execution_time = 0.5
    first = asyncio.create_task(call(fake, "POST", "runsync", {"input": {"workflow": workflow()}}))
    await asyncio.sleep(0.2)
    second = await call(fake, "POST", "runsync", {"input": {"workflow": workflow()}})
    assert second[0] == 429 and (await first)[0] == 200


# --- 4.3, 2.10: retention, TTL, execution timeout -------------------------------------------


async def test_run_result_kept_30_minutes_then_404(fake):
    # 2.1, 4.3: /run results readable 30 min after completion; then gone (404, 2.3)
    job = await run(fake, {"workflow": workflow()})
    await final(fake, job)
    fake.advance(1799)
    assert (await status_of(fake, job))[0] == 200
    fake.advance(2)
    assert (await status_of(fake, job))[0] == 404
    fake.run_retention = 1.0  # the knob that shortens retention
    job = await run(fake, {"workflow": workflow()})
    await final(fake, job)
    fake.advance(1.1)
    assert (await status_of(fake, job))[0] == 404


async def test_ttl_deletes_even_a_running_job(fake):
    # 2.10: ttl counts from submission; on expiry the job is deleted even if running, /status -> 404
    fake.execution_time = 100.0
    job = await run(fake, {"workflow": workflow()}, policy={"ttl": 10000})
    fake.advance(9.9)
    assert (await status_of(fake, job))[1]["status"] == "IN_PROGRESS"
    fake.advance(0.2)
    assert (await status_of(fake, job))[0] == 404


async def test_execution_timeout(fake):
    # 2.10: policy.executionTimeout ends the job; TIMED_OUT or FAILED (configurable, undocumented)
    fake.execution_time = 30.0
    job = await run(fake, {"workflow": workflow()}, policy={"executionTimeout": 5000})
    fake.advance(5.0)
    body = (await status_of(fake, job))[1]
    assert body["status"] == "TIMED_OUT" and body["executionTime"] == 5000 and "output" not in body
    fake.timeout_status = "FAILED"
    job = await run(fake, {"workflow": workflow()}, policy={"executionTimeout": 5000})
    fake.advance(5.0)
    assert (await status_of(fake, job))[1]["status"] == "FAILED"


# --- 2.4-2.8: stream, cancel, retry, purge-queue, health ------------------------------------


async def test_stream(fake):
    # 2.4: {"status", "stream": [...]}; a non-generator handler streams nothing while running
    fake.execution_time = 5.0
    job = await run(fake, {"workflow": workflow()})
    _, body = await call(fake, "GET", f"stream/{job}")
    assert body["status"] == "IN_PROGRESS" and body["stream"] == []
    fake.advance(5.0)
    _, body = await call(fake, "GET", f"stream/{job}")
    assert body["status"] == "COMPLETED" and body["stream"][0]["output"]["images"]


async def test_cancel_queued_running_finished_unknown(fake):
    # 2.5: {"id", "status": "CANCELLED"}
    fake.pause()
    queued = await run(fake, {"workflow": workflow()})
    status, body = await call(fake, "POST", f"cancel/{queued}")
    assert status == 200 and body == {"id": queued, "status": "CANCELLED"}
    assert (await status_of(fake, queued))[1] == {"id": queued, "status": "CANCELLED"}
    fake.resume()
    fake.execution_time = 10.0
    running = await run(fake, {"workflow": workflow()})
    fake.advance(2.0)
    assert (await call(fake, "POST", f"cancel/{running}"))[1]["status"] == "CANCELLED"
    body = (await status_of(fake, running))[1]
    assert body["status"] == "CANCELLED" and 2000 <= body["executionTime"] < 2500 and "output" not in body
    fake.execution_time = 0.0
    done = await run(fake, {"workflow": workflow()})
    await final(fake, done)
    assert (await call(fake, "POST", f"cancel/{done}"))[1]["status"] == "COMPLETED"  # CHOICE: unchanged
    assert (await call(fake, "POST", "cancel/nope"))[0] == 404


async def test_retry_failed_job(fake):
    # 2.6: only FAILED/TIMED_OUT; same id, IN_QUEUE, previous output removed; expired cannot be retried
    fake.fail_next("execution")
    job = await run(fake, {"workflow": workflow()})
    assert (await final(fake, job))["status"] == "FAILED"
    status, body = await call(fake, "POST", f"retry/{job}")
    assert status == 200 and body == {"id": job, "status": "IN_QUEUE"}
    assert (await final(fake, job))["status"] == "COMPLETED"
    assert (await call(fake, "POST", f"retry/{job}"))[0] == 400
    _, health = await call(fake, "GET", "health")
    assert health["jobs"]["retried"] == 1
    fake.fail_next("execution")
    job = await run(fake, {"workflow": workflow()})
    await final(fake, job)
    fake.advance(1801)
    assert (await call(fake, "POST", f"retry/{job}"))[0] == 404


async def test_purge_queue_leaves_running_jobs(fake):
    # 2.7: removes queued jobs, {"removed": n, "status": "completed"}; in-progress jobs continue
    fake.execution_time = 10.0
    running = await run(fake, {"workflow": workflow()})
    fake.pause()
    queued = [await run(fake, {"workflow": workflow()}) for _ in range(2)]
    status, body = await call(fake, "POST", "purge-queue")
    assert status == 200 and body == {"removed": 2, "status": "completed"}
    assert [(await status_of(fake, job))[0] for job in queued] == [404, 404]
    assert (await status_of(fake, running))[1]["status"] == "IN_PROGRESS"


async def test_health_shape(fake):
    # 2.8: jobs counters and the superset of worker counters
    fake.execution_time = 10.0
    await run(fake, {"workflow": workflow()})
    fake.pause()
    await run(fake, {"workflow": workflow()})
    status, body = await call(fake, "GET", "health")
    assert status == 200
    assert body["jobs"] == {"completed": 0, "failed": 0, "inProgress": 1, "inQueue": 1, "retried": 0}
    assert set(body["workers"]) == {"idle", "initializing", "ready", "running", "throttled"}
    assert body["workers"]["running"] == 1


# --- 3.3: the S3 bucket variant -------------------------------------------------------------


async def test_bucket_outputs_are_presigned_urls_on_the_fake(fake):
    # 3.3: "type": "s3_url", data a presigned URL .../<MM-YY>/<job_id>/<8hex>.png?X-Amz-..., valid 7 days
    fake.bucket = True
    job = await run(fake, {"workflow": workflow(batch=2)})
    body = await final(fake, job)
    items = body["output"]["images"]
    assert [item["type"] for item in items] == ["s3_url", "s3_url"]
    assert [item["filename"] for item in items] == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    for item in items:
        pattern = rf"^{fake.url}/bucket/\d\d-\d\d/{re.escape(job)}/[0-9a-f]{{8}}\.png\?X-Amz-Algorithm="
        assert re.match(pattern, item["data"])
        assert "X-Amz-Expires=604800" in item["data"]
    async with aiohttp.ClientSession() as session:
        got = []
        for item in items:
            async with session.get(item["data"]) as response:  # no Authorization: a presigned URL
                assert response.status == 200 and response.content_type == "image/png"
                got.append(await response.read())
        assert got == [data for _, data in fake.files_of(job)]
        async with session.get(items[0]["data"].replace("X-Amz-Signature=", "X-Amz-Signature=0")) as response:
            assert response.status == 403 and "SignatureDoesNotMatch" in await response.text()
        fake.advance(604800)
        async with session.get(items[0]["data"]) as response:
            assert response.status == 403 and "Request has expired" in await response.text()


async def test_bucket_without_keys_is_simulated(fake):
    # 3.3: BUCKET_ENDPOINT_URL set but keys missing -> "simulated_uploaded/<8hex><ext>"
    fake.bucket = "simulated"
    body = await final(fake, await run(fake, {"workflow": workflow()}))
    assert re.match(r"^simulated_uploaded/[0-9a-f]{8}\.png$", body["output"]["images"][0]["data"])


# --- 2.9: webhook ---------------------------------------------------------------------------


async def test_webhook_posts_status_body_and_retries(fake):
    # 2.9: POST the /status information on completion; retried up to 2 more times when not 200
    answers = [500, 200]
    received = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[-1][1]}/hook"
        fake.webhook_retry_delay = 0.05
        job = await run(fake, {"workflow": workflow()}, webhook=url)
        async with asyncio.timeout(5):
            while len(fake.webhook_calls) < 2:
                await asyncio.sleep(0.01)
        assert [call["status"] for call in fake.webhook_calls] == [500, 200]
        assert received[0]["id"] == job and received[0]["status"] == "COMPLETED" and received[0]["output"]["images"]
    finally:
        await runner.cleanup()
