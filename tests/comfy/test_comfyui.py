"""The ComfyUI client against the fake server: events, errors, files, cancel and faults."""

from __future__ import annotations

import asyncio
import io
import socket

import pytest
from PIL import Image

from comfy.types import (
    BadResponse,
    Cached,
    ComfyError,
    ExecutionFailed,
    FileRef,
    Finished,
    Interrupted,
    NodeStarted,
    Output,
    Preview,
    Progress,
    PromptLost,
    PromptRejected,
    Queued,
    Started,
    Unreachable,
)
from tests.conftest import make_client


def empty_save(color: int = 0, size: int = 64, prefix: str = "bot/t") -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def blur_chain(length: int, color: int = 1) -> dict:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color}}}
    for index in range(2, length + 2):
        graph[str(index)] = {"class_type": "ImageBlur", "inputs": {"image": [str(index - 1), 0], "blur_radius": 1, "sigma": 1.0}}
    graph[str(length + 2)] = {"class_type": "SaveImage", "inputs": {"images": [str(length + 1), 0], "filename_prefix": "bot/blur"}}
    return graph


async def collect(run) -> list:
    async with asyncio.timeout(10):
        return [event async for event in run.events()]


async def until(condition, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def test_success_events_in_order_with_our_ids(comfy, client):
    run = await client.submit(empty_save(color=0x112233), prompt_id="job-1")
    events = await collect(run)
    body = comfy.prompts["job-1"]
    assert body["client_id"] == client.client_id and body["prompt_id"] == "job-1"
    kinds = [type(event) for event in events if not isinstance(event, Queued)]
    assert kinds == [Started, Cached, NodeStarted, NodeStarted, Output, Finished]
    assert [e.class_type for e in events if isinstance(e, NodeStarted)] == ["EmptyImage", "SaveImage"]
    finished = events[-1]
    assert finished.outcome == "success" and finished.error is None
    (ref,) = finished.outputs["2"].files
    assert ref == FileRef("t_00001_.png", "bot", "output")


async def test_many_instant_prompts_lose_no_event(comfy, client):
    runs = await asyncio.gather(*(client.submit(empty_save(color=i)) for i in range(25)))
    results = await asyncio.gather(*(run.wait() for run in runs))
    assert [result.outcome for result in results] == ["success"] * 25
    assert client.open_prompts() == []


async def test_two_clients_only_see_their_own_prompts(comfy, client):
    async with make_client(comfy.url) as other:
        await other.wait_connected(5)
        mine, theirs = await asyncio.gather(client.submit(empty_save(1)), other.submit(empty_save(2)))
        my_events, their_events = await asyncio.gather(collect(mine), collect(theirs))
    assert my_events[-1].outcome == their_events[-1].outcome == "success"
    assert comfy.prompts[mine.prompt_id]["client_id"] != comfy.prompts[theirs.prompt_id]["client_id"]


async def test_waiting_prompt_reports_its_position(comfy, client):
    comfy.pause()
    first = await client.submit(empty_save(1))
    second = await client.submit(empty_save(2))
    await asyncio.sleep(0.2)
    comfy.resume()
    events = await collect(second)
    await first.wait()
    assert Queued(position=1) in events


async def test_rejected_prompt_names_node_input_and_limit(comfy, client):
    graph = empty_save()
    graph["1"]["inputs"]["width"] = 0
    with pytest.raises(PromptRejected) as error:
        await client.submit(graph)
    assert str(error.value) == (
        "ComfyUI rejected the workflow:\n- node 1 (EmptyImage), input 'width': Value 0 smaller than min of 1")
    assert client.open_prompts() == []


async def test_rejected_combo_lists_the_allowed_values(comfy, client):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    with pytest.raises(PromptRejected) as error:
        await client.submit(graph)
    (problem,) = error.value.problems
    assert (problem.node, problem.input) == ("1", "ckpt_name")
    assert problem.allowed == ("v1-5-pruned-emaonly.safetensors", "sdxl.safetensors")
    assert "'missing.safetensors' is not one of the allowed values (allowed: v1-5-pruned-emaonly.safetensors, sdxl.safetensors)" in str(error.value)
    # a partly valid prompt is accepted with 200 and runs its valid outputs: the client takes it back
    deletes = [r for r in comfy.requests if r["path"].endswith("/queue") and r["method"] == "POST"]
    assert deletes and deletes[-1]["json"] == {"delete": [problem_id := deletes[-1]["json"]["delete"][0]]}
    assert any(r["path"].endswith("/interrupt") and r["json"] == {"prompt_id": problem_id} for r in comfy.requests)


async def test_unknown_node_class_is_named(comfy, client):
    graph = empty_save()
    graph["1"]["class_type"] = "NoSuchNode"
    with pytest.raises(PromptRejected, match=r"Cannot execute because node NoSuchNode does not exist\. \(Node ID '#1'\)"):
        await client.submit(graph)


async def test_execution_error_carries_comfyui_message(comfy, client):
    comfy.fail_node("EmptyImage", exception_message="Allocation on device 0 would exceed allowed memory.",
                    exception_type="torch.OutOfMemoryError")
    finished = await (await client.submit(empty_save(3))).wait()
    assert finished.outcome == "error"
    assert isinstance(finished.error, ExecutionFailed)
    assert str(finished.error) == ("ComfyUI failed in node 1 (EmptyImage): the server ran out of GPU memory "
                                   "(Allocation on device 0 would exceed allowed memory.); try a smaller size or batch")


async def test_cancel_running_prompt_interrupts_only_it(comfy, client):
    comfy.node_delay = 0.05
    run = await client.submit(blur_chain(40))
    await until(lambda: comfy.running_id() == run.prompt_id)
    await client.cancel(run.prompt_id)
    finished = await run.wait()
    assert finished.outcome == "interrupted" and isinstance(finished.error, Interrupted)
    assert any(r["path"].endswith("/interrupt") and r["json"] == {"prompt_id": run.prompt_id} for r in comfy.requests)


async def test_cancel_waiting_prompt_removes_it_from_the_queue(comfy, client):
    comfy.pause()
    run = await client.submit(empty_save(4))
    await client.cancel(run.prompt_id)
    finished = await run.wait()
    comfy.resume()
    assert finished.outcome == "interrupted" and str(finished.error) == "Cancelled before it started."
    assert run.prompt_id not in comfy.queue_pending_ids() and run.prompt_id not in comfy.history_ids()


async def test_binary_previews_arrive_as_images(comfy, client):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 255}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    events = await collect(await client.submit(graph))
    previews = [event for event in events if isinstance(event, Preview)]
    assert len(previews) == 2 and previews[0].mime == "image/png" and previews[0].node == "2"
    assert Image.open(io.BytesIO(previews[0].image)).size == (16, 8)
    assert any(isinstance(event, Progress) for event in events)


async def test_upload_uses_the_name_the_server_returns(comfy, client):
    first = await client.upload_image(b"\x89PNG one", "in.png")
    same = await client.upload_image(b"\x89PNG one", "in.png")
    other = await client.upload_image(b"\x89PNG two", "in.png")
    assert (first, same, other) == ("in.png", "in.png", "in (1).png")
    assert comfy.files[("input", "", "in (1).png")] == b"\x89PNG two"


async def test_download_streams_the_exact_bytes(comfy, client):
    finished = await (await client.submit(empty_save(5, size=300))).wait()
    (ref,) = finished.outputs["2"].files
    data = b"".join([chunk async for chunk in client.iter_file(ref)])
    assert data == comfy.files[("output", "bot", ref.filename)]
    assert Image.open(io.BytesIO(data)).size == (300, 300)
    with pytest.raises(ComfyError, match="ComfyUI no longer has the file 'gone.png'"):
        [chunk async for chunk in client.iter_file(FileRef("gone.png"))]


async def test_socket_drop_mid_run_reconnects_and_finishes(comfy, client):
    comfy.node_delay = 0.05
    run = await client.submit(blur_chain(10))
    await until(lambda: comfy.running_id() == run.prompt_id)
    await comfy.drop_sockets()
    finished = await run.wait()
    assert finished.outcome == "success" and "12" in finished.outputs
    assert client.reconnects >= 1


async def test_server_restart_mid_run_ends_the_job_in_seconds(comfy, client):
    comfy.node_delay = 0.2
    run = await client.submit(blur_chain(20))
    await until(lambda: comfy.running_id() == run.prompt_id)
    await comfy.restart()
    async with asyncio.timeout(5):
        finished = await run.wait()
    assert finished.outcome == "error" and isinstance(finished.error, PromptLost)
    assert "ComfyUI lost this job" in str(finished.error)


async def test_silent_socket_is_noticed_and_the_result_still_arrives(comfy, client):
    comfy.silent = True
    run = await client.submit(empty_save(6))
    async with asyncio.timeout(5):
        finished = await run.wait()
    assert finished.outcome == "success" and finished.outputs["2"].files
    assert any(r["path"] == f"/history/{run.prompt_id}" for r in comfy.requests)
    comfy.silent = False
    await until(lambda: client.reconnects >= 1)  # the deaf socket was replaced


async def test_http_500_is_a_clear_error(comfy, client):
    comfy.fail_http("/prompt", status=500)
    with pytest.raises(BadResponse, match="ComfyUI answered 500 to POST /prompt: 500 Internal Server Error"):
        await client.submit(empty_save())
    assert client.open_prompts() == []


async def test_garbage_json_and_missing_fields_are_clear_errors(comfy, client):
    comfy.garbage_json("/system_stats")
    with pytest.raises(BadResponse, match="ComfyUI sent invalid JSON for GET /system_stats"):
        await client.system_stats()
    comfy.garbage_json("/queue")
    with pytest.raises(BadResponse, match="invalid JSON for GET /queue"):
        await client.queue()


async def test_slow_answer_is_bounded(comfy):
    async with make_client(comfy.url, timeout=0.3) as impatient:
        await impatient.wait_connected(5)
        comfy.slow("/queue", 2.0)
        with pytest.raises(Unreachable, match=r"did not answer GET /queue within 0.3 s"):
            await impatient.queue()


async def test_unreachable_server_fails_fast_and_keeps_trying():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}", timeout=0.3) as lonely:
        with pytest.raises(Unreachable, match=f"ComfyUI at http://127.0.0.1:{port} is unreachable"):
            await lonely.submit(empty_save())
        with pytest.raises(Unreachable):
            await lonely.system_stats()
        await until(lambda: lonely.reconnects >= 2)


async def test_object_info_is_cached(comfy, client):
    first = await client.object_info()
    second = await client.object_info()
    assert first is second and "EmptyImage" in first
    assert sum(1 for r in comfy.requests if r["path"] == "/object_info") == 1


async def test_answer_missing_fields_is_a_clear_error(comfy, client):
    comfy.system_stats = {"devices": []}
    with pytest.raises(BadResponse, match="ComfyUI's answer to GET /system_stats has no 'system'"):
        await client.system_stats()
