"""runpod.RunPodClient against the fake RunPod endpoint (tests/fakes/runpod.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket

import pytest
from PIL import Image

from comfy.types import BadResponse, ComfyError, Interrupted, PromptLost, TimedOut, Unreachable
from backends.runpod_client import KeyRefused, ResultGone, RunPodClient, RunStatus, WorkerFailed
from tests.fakes.runpod import FakeRunPod
from tests.fakes.runpod import sample_workflow as workflow

pytestmark = pytest.mark.timeout(30)

KEY = "rpa_SECRETKEY123"


@pytest.fixture
async def fake():
    server = FakeRunPod(api_key=KEY, endpoint_id="ep123")
    await server.start()
    yield server
    await server.stop()
    assert server.unhandled == []


def make_client(fake: FakeRunPod, **overrides) -> RunPodClient:
    key = overrides.pop("api_key", KEY)
    options = {"base_url": fake.base_url, "timeout": 5.0, "backoff": (0.01, 0.05), **overrides}
    return RunPodClient(fake.endpoint_id, key, **options)


@pytest.fixture
async def client(fake):
    runpod = make_client(fake)
    yield runpod
    await runpod.close()


async def follow_all(client: RunPodClient, job_id: str, deadline: float = 10.0) -> list[RunStatus]:
    return [status async for status in client.follow(job_id, poll=0.02, deadline=deadline)]


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_job_end_to_end(fake, client):
    fake.queue_delay, fake.execution_time = 0.15, 0.15
    source = png(12, 10)
    job = await client.submit(workflow(96, 80, batch=2), [("in.png", source)])
    statuses = await follow_all(client, job)
    assert [status.state for status in statuses] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    done = statuses[-1]
    assert done.final and done.error is None and done.failure() is None and done.warnings == []
    assert done.outputs == fake.files_of(job)
    assert [name for name, _ in done.outputs] == ["ComfyUI_00001_.png", "ComfyUI_00002_.png"]
    assert [size_of(data) for _, data in done.outputs] == [(96, 80), (96, 80)]
    assert done.delay_ms == 150 and done.execution_ms == 150 and done.worker_id
    assert statuses[1].delay_ms == 150 and statuses[1].outputs == []
    # the documented input (3.1): workflow and images as base64 with their names; Bearer key (2.0)
    (submitted,) = [r for r in fake.requests if r["path"] == "/v2/ep123/run"]
    assert submitted["json"]["input"]["workflow"] == workflow(96, 80, batch=2)
    assert submitted["json"]["input"]["images"] == [{"name": "in.png", "image": base64.b64encode(source).decode()}]
    assert submitted["auth"] == "bearer" and fake.jobs[job].uploads == {"in.png": source}
    assert {r["auth"] for r in fake.requests} == {"bearer"}


async def test_bucket_variant_downloads_without_the_key(fake, client):
    fake.bucket, fake.bucket_redirects = True, 1
    job = await client.submit(workflow(40, 30), [])
    done = (await follow_all(client, job))[-1]
    assert done.state == "COMPLETED" and done.outputs == fake.files_of(job)
    downloads = [r for r in fake.requests if r["path"].startswith("/bucket/")]
    assert len(downloads) == 2  # the 307, then the file
    assert {r["auth"] for r in downloads} == {None}


async def test_bucket_simulated_upload_is_an_error(fake, client):
    fake.bucket = "simulated"
    job = await client.submit(workflow(), [])
    with pytest.raises(BadResponse, match="could not upload its output to the bucket"):
        await follow_all(client, job)


async def test_429_backoff_then_success(fake, client):
    job = await client.submit(workflow(), [])
    fake.force_429("status", count=3)
    done = (await follow_all(client, job))[-1]
    assert done.state == "COMPLETED" and done.outputs
    assert len([r for r in fake.requests if r["path"].startswith("/v2/ep123/status/")]) == 4
    fake.force_429("run", count=10)
    impatient = make_client(fake, retries=2)
    try:
        with pytest.raises(Unreachable, match="429"):
            await impatient.submit(workflow(), [])
    finally:
        await impatient.close()


async def test_retry_after_is_honoured_within_the_cap(fake, client):
    fake.retry_after = "1"
    fake.force_429("status", count=1)
    job = await client.submit(workflow(), [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await client.status(job)).state == "COMPLETED"
    assert loop.time() - started < 0.5  # capped by backoff[1] (0.05 s here)


async def test_client_side_rate_limit(fake, client):
    client.limits = {"status": (2, 400)}
    client.window = 0.3
    job = await client.submit(workflow(), [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await client.status(job)
    assert loop.time() - started >= 0.25


async def test_401_refused_key_is_not_shown_or_logged(fake, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = make_client(fake, api_key="rpa_WRONGKEY999")
    try:
        with pytest.raises(KeyRefused, match="The RunPod API key was refused") as refused:
            await wrong.submit(workflow(), [])
        assert "WRONGKEY" not in str(refused.value) and "WRONGKEY" not in repr(wrong)
        with pytest.raises(KeyRefused):
            await wrong.status("some-job")
    finally:
        await wrong.close()
    fake.force_429("status", count=1)  # a logged backoff, too
    async with asyncio.timeout(5):
        ok = make_client(fake)
        try:
            await ok.status(await ok.submit(workflow(), []))
        finally:
            await ok.close()
    printed = capsys.readouterr()  # structlog prints to stdout
    assert "runpod_rate_limited" in printed.out
    for text in (caplog.text, printed.out, printed.err):
        assert "WRONGKEY" not in text and KEY not in text


async def test_failed_job_text(fake, client):
    fake.fail_next("execution", text="CUDA out of memory")
    job = await client.submit(workflow(), [])
    done = (await follow_all(client, job))[-1]
    assert done.state == "FAILED" and done.outputs == []
    assert done.error == "The RunPod worker failed: Job processing failed"
    assert isinstance(done.failure(), WorkerFailed) and done.failure().detail == done.error
    assert str(done.failure()) == ("The RunPod worker failed: `Job processing failed`. Try again; if it happens "
                                   "again, ask the operator.")  # without details, nothing more is known
    fake.failed_details = True  # 3.5: details read only if present
    fake.fail_next("execution", text="CUDA out of memory")
    done = (await follow_all(client, await client.submit(workflow(), [])))[-1]
    assert done.error == ("The RunPod worker failed: Job processing failed\n- Workflow execution error: "
                          "Node Type: KSampler, Node ID: 3, Message: CUDA out of memory")
    assert str(done.failure()) == "The RunPod worker ran out of GPU memory. Try a smaller size or fewer images."


async def test_failed_validation_and_sdk_texts(fake, client):
    fake.checkpoints = ["a.safetensors"]
    done = (await follow_all(client, await client.submit(workflow(), [])))[-1]
    lines = done.error.split("\n")
    assert lines[0] == "The RunPod worker failed: Workflow validation failed:"
    assert lines[-1] == "Available checkpoint models: a.safetensors"
    fake.checkpoints = None
    fake.fail_next("exception", text="handler crashed")
    done = (await follow_all(client, await client.submit(workflow(), [])))[-1]
    assert done.error == "The RunPod worker failed: RuntimeError: handler crashed"


async def test_failure_text_is_sanitized(fake, client):
    fake.fail_next("error", text="boom <@&123> @everyone token=abcdef0123456789 see https://x.test/y?sig=1\nline two")
    done = (await follow_all(client, await client.submit(workflow(), [])))[-1]
    assert "abcdef0123456789" not in done.error and "https://" not in done.error
    assert "@everyone" not in done.error and "<@&" not in done.error
    assert done.error.endswith("\nline two")


async def test_policy_is_sent_and_honoured(fake, client):
    fake.execution_time = 60.0
    job = await client.submit(workflow(), [], policy={"executionTimeout": 5000})
    assert fake.requests[-1]["json"]["policy"] == {"executionTimeout": 5000}
    fake.advance(5.0)
    status = await client.status(job)
    assert status.state == "TIMED_OUT" and status.execution_ms == 5000


async def test_timed_out_and_result_dropped(fake, client):
    fake.execution_time = 3600.0
    job = await client.submit(workflow(), [])
    fake.advance(600.0)  # 2.10: the default execution timeout
    status = await client.status(job)
    assert status.state == "TIMED_OUT" and isinstance(status.failure(), TimedOut)
    fake.execution_time = 0.0
    fake.fail_next("oversize")
    done = (await follow_all(client, await client.submit(workflow(), [])))[-1]
    assert done.state == "COMPLETED" and done.outputs == [] and "no result" in done.error
    assert isinstance(done.failure(), BadResponse)


async def test_expired_result(fake, client):
    job = await client.submit(workflow(), [])
    await follow_all(client, job)
    fake.advance(30 * 60 + 1)
    with pytest.raises(ResultGone) as gone:
        await client.status(job)
    assert isinstance(gone.value, PromptLost)
    assert str(gone.value) == "RunPod no longer holds this job's result (results are kept for 30 minutes)."


async def test_cancel(fake, client):
    fake.pause()
    job = await client.submit(workflow(), [])
    assert await client.cancel(job) is True
    status = await client.status(job)
    assert status.state == "CANCELLED" and isinstance(status.failure(), Interrupted)
    assert await client.cancel("unknown-job") is False
    fake.resume()
    done_job = await client.submit(workflow(), [])
    await follow_all(client, done_job)
    assert await client.cancel(done_job) is False


async def test_follow_deadline_cancels_the_job(fake, client):
    fake.execution_time = 100.0
    job = await client.submit(workflow(), [])
    seen = []
    with pytest.raises(TimedOut, match="within 0.3 s; it was cancelled"):
        async for status in client.follow(job, poll=0.05, deadline=0.3):
            seen.append(status.state)
    assert seen == ["IN_PROGRESS"]
    assert fake.state(fake.jobs[job]) == "CANCELLED"


async def test_output_over_the_byte_cap_is_refused(fake):
    fake.noise = True
    capped = make_client(fake, max_output_bytes=2000)
    try:
        job = await capped.submit(workflow(64, 64), [])
        with pytest.raises(BadResponse, match="larger than 2,000 bytes"):
            await follow_all(capped, job)
        fake.bucket = True
        job = await capped.submit(workflow(64, 64), [])
        with pytest.raises(BadResponse, match="larger than 2,000 bytes"):
            await follow_all(capped, job)
    finally:
        await capped.close()


async def test_body_over_the_limit_refused_before_sending(fake, client):
    with pytest.raises(ComfyError, match="over the 10 MB"):
        await client.submit(workflow(), [("big.png", b"\0" * 7_600_000)])
    assert not any(r["path"].endswith("/run") for r in fake.requests)


async def test_body_over_the_limit_refused_by_runpod(fake, client):
    fake.run_body_limit = 2000
    with pytest.raises(ComfyError, match=r"refused the job \(HTTP 400\)"):
        await client.submit(workflow(), [("a.png", b"\0" * 3000)])
    assert fake.jobs == {}


async def test_duplicate_image_names_refused(client):
    with pytest.raises(ComfyError, match="same name"):
        await client.submit(workflow(), [("a.png", b"1"), ("a.png", b"2")])


async def test_server_errors_and_unreachable(fake, client):
    fake.fail_http("status", status=503)
    with pytest.raises(Unreachable, match="503"):
        await client.status("x")
    fake.fail_http("status", status=307)
    with pytest.raises(BadResponse, match="redirect"):
        await client.status("x")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = RunPodClient("ep", KEY, base_url=f"http://127.0.0.1:{port}/v2", timeout=2.0)
    try:
        with pytest.raises(Unreachable, match="unreachable"):
            await closed.submit(workflow(), [])
    finally:
        await closed.close()


async def test_unknown_endpoint(fake):
    other = RunPodClient("nope", KEY, base_url=fake.base_url, timeout=2.0)
    try:
        with pytest.raises(ComfyError, match="knows no endpoint"):
            await other.submit(workflow(), [])
    finally:
        await other.close()


def test_a_value_not_in_list_is_a_missing_model_only_for_a_model_input():
    from backends.runpod_client import _said

    text = ("Workflow validation failed:\n• Node 3 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in "
            "list', 'details': \"sampler_name: 'warp' not in ['euler']\", 'extra_info': {}}]")
    assert str(_said(text, None, "detail")) == ("The RunPod worker refused the workflow: `Value not in list`. Trying "
                                                "again will not help; ask the operator.")
    said = _said(text.replace("sampler_name", "lora_name"), None, "detail")
    assert str(said).startswith("The RunPod worker lacks the model `warp` (lora_name).") and said.detail == "detail"
