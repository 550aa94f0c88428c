"""The ComfyUI client against a hostile server: any frame, any answer, lost replies, silence.

Each test uses the fake's hostile switches (`inject`, `override`, `late`, `swallow`,
`mute_all_prompts`) and asserts what the bot's user depends on: the client stays
connected, a following prompt still completes, and every failure is a sentence.
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from structlog.testing import capture_logs

from comfy.types import BadResponse, Finished, Resubmitted, SubmitUnconfirmed
from tests.conftest import make_client
from tests.fakes import hostile
from tests.comfy.test_comfyui import collect, empty_save, until

EXAMPLE_FRAMES = {
    "start-data-string": '{"type": "execution_start", "data": "x"}',
    "executed-output-string": '{"type": "executed", "data": {"prompt_id": "P", "node": "2", "output": "x"}}',
    "executed-output-list": '{"type": "executed", "data": {"prompt_id": "P", "node": "2", "output": [1, 2]}}',
    "executed-images-int": '{"type": "executed", "data": {"prompt_id": "P", "node": "2", "output": {"images": 5}}}',
    "progress-1e400": '{"type": "progress", "data": {"prompt_id": "P", "value": 1e400, "max": 10}}',
    "progress-nan": '{"type": "progress", "data": {"prompt_id": "P", "value": NaN, "max": 10}}',
    "progress-string": '{"type": "progress", "data": {"prompt_id": "P", "value": "3", "max": [10]}}',
    "executing-node-dict": '{"type": "executing", "data": {"prompt_id": "P", "node": {"a": 1}}}',
    "cached-nodes-string": '{"type": "execution_cached", "data": {"prompt_id": "P", "nodes": "123"}}',
    "error-data-list": '{"type": "execution_error", "data": [1]}',
    "error-fields-odd": '{"type": "execution_error", "data": {"prompt_id": "P", "node_id": [], "exception_message": {}}}',
    "type-not-string": '{"type": 7, "data": {}}',
    "top-level-list": "[1, 2, 3]",
    "not-json": "{'type': ",
    "empty": "",
    "huge-string": json.dumps({"type": "status", "data": {"x": "a" * 200_000}}),
}
EXAMPLE_BINARY = {
    "three-bytes": b"\x00\x00\x00",
    "preview-meta-list": struct.pack(">II", 4, 3) + b"[1]" + b"img",
    "preview-meta-too-long": struct.pack(">II", 4, 10**6) + b"{}",
    "preview-meta-not-json": struct.pack(">II", 4, 4) + b"\xff\xfe\x00\x01" + b"img",
    "legacy-preview-short": struct.pack(">I", 1) + b"\x00",
    "unknown-type": struct.pack(">I", 99) + b"whatever",
    "preview-too-big": struct.pack(">II", 4, 17) + b'{"prompt_id":"P"}' + bytes(5 * 1024 * 1024),
}

# Frames that decode, oddly: the odd parts are skipped (a file list that is a number, an error whose
# fields are objects, a frame type nobody listens to) without a complaint in the log.
TOLERATED = {EXAMPLE_FRAMES["huge-string"], EXAMPLE_FRAMES["executed-images-int"], EXAMPLE_FRAMES["error-fields-odd"],
             EXAMPLE_BINARY["unknown-type"]}


async def still_works(comfy, client, color: int = 0x445566) -> None:
    """The client is connected (no reconnect was needed) and a new prompt completes with its file."""
    assert client.connected
    run = await client.submit(empty_save(color=color, prefix="bot/after"))
    events = await collect(run)
    assert isinstance(events[-1], Finished) and events[-1].outcome == "success", events[-1]
    assert any(ref.filename.startswith("after_") for out in events[-1].outputs.values() for ref in out.files)


async def inject_for_open_prompt(comfy, client, frames: list[str | bytes]) -> None:
    """Deliver the frames while a prompt of ours is open (so the frames naming it reach its run)."""
    comfy.pause()
    waiting = await client.submit(empty_save(color=0x010203), prompt_id="P")
    for frame in frames:
        comfy.inject(frame if isinstance(frame, bytes) else frame.replace('"P"', json.dumps(waiting.prompt_id)))
    comfy.inject('{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}')
    await asyncio.sleep(0.1)  # let the frames reach the client (bounded; the assertions follow)
    comfy.resume()
    await asyncio.wait_for(waiting.wait(), 10)


@pytest.mark.parametrize("frame", list(EXAMPLE_FRAMES.values()) + list(EXAMPLE_BINARY.values()),
                         ids=list(EXAMPLE_FRAMES) + list(EXAMPLE_BINARY))
async def test_a_frame_that_does_not_decode_is_logged_and_dropped(comfy, frame):
    with capture_logs() as logs:
        async with make_client(comfy.url) as client:
            await client.wait_connected(5)
            await inject_for_open_prompt(comfy, client, [frame])
            await still_works(comfy, client)
            assert client.reconnects == 0
    if frame in TOLERATED:
        return
    bad = [entry for entry in logs if entry["event"] == "bad_websocket_message"]
    assert len(bad) == 1, bad
    assert len(bad[0]["sample"]) <= 130 and bad[0]["reason"]


async def test_a_flood_of_bad_frames_is_logged_a_bounded_number_of_times(comfy):
    with capture_logs() as logs:
        async with make_client(comfy.url) as client:
            await client.wait_connected(5)
            await inject_for_open_prompt(comfy, client, ['{"type": "progress", "data": "x"}'] * 300)
            await still_works(comfy, client)
    assert len([entry for entry in logs if entry["event"] == "bad_websocket_message"]) == 20


async def test_a_failing_reader_reconnects_and_catches_up(comfy, monkeypatch):
    async with make_client(comfy.url) as client:
        await client.wait_connected(5)
        calls = []

        def exploding(message):
            calls.append(message)
            raise SystemError("a bug in the reader")

        comfy.pause()
        run = await client.submit(empty_save(color=0x0F0E0D))
        monkeypatch.setattr(client, "_on_message", exploding)
        comfy.inject('{"type": "status", "data": {}}')
        await until(lambda: calls and not client.connected, 5)
        monkeypatch.undo()
        comfy.resume()
        finished = await asyncio.wait_for(run.wait(), 10)  # its events came while the reader was down
        assert finished.outcome == "success"
        await still_works(comfy, client)


@pytest.mark.parametrize("body, reason", [
    ({"KSampler": "x"}, "the entry for 'KSampler' is str"),
    ({"KSampler": [1, 2]}, "the entry for 'KSampler' is list"),
    ({"KSampler": {"input": "none"}}, "the entry for 'KSampler' is missing its inputs"),
    ([], "not a list of nodes"),
    ({}, "not a list of nodes"),
    (hostile.HTML_PAGE, r"is not JSON \(it is a web page\)"),
], ids=["string-entry", "list-entry", "inputs-string", "list", "empty", "html"])
async def test_a_malformed_node_list_is_a_readable_error(comfy, client, body, reason):
    comfy.override("/object_info", hostile.answer(body, content_type="text/html" if isinstance(body, bytes) else
                                                    "application/json"))
    with pytest.raises(BadResponse, match=reason) as raised:
        await asyncio.wait_for(client.object_info(refresh=True), 10)
    assert "<" not in str(raised.value)


async def test_an_endless_answer_is_cut_off(comfy, client, monkeypatch):
    monkeypatch.setattr("comfy.http.MAX_BODY", 4 * 1024 * 1024)
    sent: list[int] = []
    comfy.override("/queue", hostile.endless(content_type="application/json", sent=sent))
    with pytest.raises(BadResponse, match="larger than 4 MiB"):
        await asyncio.wait_for(client.queue(), 10)
    await until(lambda: sent, 5)
    assert sent[0] < 64 * 1024 * 1024  # the server was stopped long before it could send its gigabyte


async def test_a_500_page_shows_a_sanitized_first_line(comfy, client):
    page = ("Authorization: Bearer sk-live-123456\nproxy error talking to http://admin:pw@10.0.0.5:8188/prompt\n"
            + "Traceback line\n" * 20_000).encode()
    comfy.override("/queue", hostile.answer(page, status=500, content_type="text/plain"), count=1)
    with pytest.raises(BadResponse) as raised:
        await client.queue()
    text = str(raised.value)
    assert "ComfyUI answered 500 to GET /queue" in text
    assert "sk-live" not in text and "admin:pw" not in text and "10.0.0.5" not in text and len(text) < 400


# lost replies to POST /prompt ---------------------------------------------------------


def posts(comfy) -> list[dict]:
    return [request for request in comfy.requests if request["method"] == "POST" and request["path"] == "/prompt"]


async def test_a_prompt_whose_reply_was_lost_is_found_not_posted_again(comfy):
    async with make_client(comfy.url, timeout=0.5) as client:
        await client.wait_connected(5)
        comfy.late("/prompt", 1.5)
        run = await client.submit(empty_save(color=0x0A0B0C))
        events = await collect(run)
    assert events[-1].outcome == "success"
    assert len(posts(comfy)) == 1 and not any(isinstance(event, Resubmitted) for event in events)
    assert comfy.history_ids().count(run.prompt_id) == 1


async def test_a_prompt_lost_on_the_way_is_posted_once_more_with_the_same_id(comfy):
    async with make_client(comfy.url, timeout=0.5) as client:
        await client.wait_connected(5)
        comfy.swallow("/prompt", seconds=2)
        run = await client.submit(empty_save(color=0x0A0B0D))
        events = await collect(run)
    assert events[-1].outcome == "success"
    assert [request["json"]["prompt_id"] for request in posts(comfy)] == [run.prompt_id] * 2
    assert any(isinstance(event, Resubmitted) for event in events)


async def test_a_prompt_lost_twice_fails_in_words_and_is_not_posted_a_third_time(comfy):
    async with make_client(comfy.url, timeout=0.5) as client:
        await client.wait_connected(5)
        comfy.swallow("/prompt", count=2, seconds=2)
        with pytest.raises(SubmitUnconfirmed, match="did not confirm that it took this job, twice"):
            await client.submit(empty_save(color=0x0A0B0E), prompt_id="twice")
        assert client.open_prompts() == []
        await asyncio.sleep(2.5)  # past the swallowed requests' hold: nothing arrives late
    assert len(posts(comfy)) == 2 and "twice" not in comfy.history_ids()


# silence per prompt ---------------------------------------------------------------------


async def test_a_prompt_silent_amid_busy_broadcasts_is_reconciled(comfy):
    async with make_client(comfy.url, idle_timeout=0.6) as client:
        await client.wait_connected(5)
        comfy.mute_all_prompts = True  # a proxy that drops our prompt's events, but not `status`
        run = await client.submit(empty_save(color=0x0C0D0E))

        async def chatter() -> None:
            for _ in range(100):  # 10 s at most: status frames keep the socket far from idle
                comfy.inject('{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}')
                await asyncio.sleep(0.1)

        talking = asyncio.create_task(chatter())
        try:
            finished = await asyncio.wait_for(run.wait(), 8)
        finally:
            talking.cancel()
    assert finished.outcome == "success" and finished.outputs
