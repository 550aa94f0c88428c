"""Property: whatever frames a server sends, the client stays connected and the next prompt completes.

Hypothesis drives a synchronous test; each example runs on one event loop shared by the
module, with one fake ComfyUI and one client, so hundreds of frames cost milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_client
from tests.fakes.comfyui import FakeComfyUI
from tests.comfy.test_comfyui import empty_save

TYPES = ["status", "execution_start", "execution_cached", "executing", "progress", "executed",
         "execution_success", "execution_error", "execution_interrupted", "progress_state", "feature_flags"]
KEYS = ["prompt_id", "node", "value", "max", "output", "nodes", "node_id", "node_type",
        "exception_message", "exception_type", "display_node", "timestamp"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ours = st.just("OURS")  # replaced by the open prompt's id, so the frames reach its run
data_objects = st.dictionaries(st.sampled_from(KEYS), json_values | ours, max_size=6).map(
    lambda data: data if "prompt_id" in data else {**data, "prompt_id": "OURS"})
text_frames = st.one_of(
    json_values.map(json.dumps),
    st.builds(lambda kind, data: json.dumps({"type": kind, "data": data}), st.sampled_from(TYPES), data_objects),
    st.builds(lambda kind, data: json.dumps({"type": kind, "data": data}), st.sampled_from(TYPES), json_values),
    st.text(max_size=40),
)
binary_frames = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda kind, rest: struct.pack(">I", kind) + rest, st.sampled_from([1, 2, 3, 4]), st.binary(max_size=40)),
    st.builds(lambda meta, image: struct.pack(">II", 4, len(meta)) + meta + image,
              json_values.map(lambda value: json.dumps(value).encode()), st.binary(max_size=16)),
)
frame_lists = st.lists(text_frames | binary_frames, min_size=1, max_size=25)


class Rig:
    """One fake server and one client on a loop of their own, for the whole module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeComfyUI()
        self.loop.run_until_complete(self.fake.start())
        self.client = make_client(self.fake.url)
        self.loop.run_until_complete(self.client.start())
        self.loop.run_until_complete(self.client.wait_connected(5))
        self.colors = iter(range(1, 10**6))

    def run(self, coroutine, timeout: float = 20.0):
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    def close(self) -> None:
        self.run(self.client.close())
        self.run(self.fake.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def rig():
    shared = Rig()
    yield shared
    shared.close()
    assert shared.fake.unhandled == []


async def feed_then_prompt(rig: Rig, frames: list[str | bytes]) -> None:
    fake, client = rig.fake, rig.client
    fake.pause()
    target = await client.submit(empty_save(color=next(rig.colors), prefix="bot/target"))
    for frame in frames:
        fake.inject(frame.replace("OURS", target.prompt_id) if isinstance(frame, str) else frame)
    await asyncio.sleep(0.02)
    fake.resume()
    await asyncio.wait_for(target.wait(), 10)  # it ends, one way or another (frames may have ended it)
    assert client.connected
    after = await client.submit(empty_save(color=next(rig.colors), prefix="bot/after"))
    finished = await asyncio.wait_for(after.wait(), 10)
    assert finished.outcome == "success", finished
    assert any(ref.filename.startswith("after_") for output in finished.outputs.values() for ref in output.files)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=frame_lists)
def test_any_frames_leave_the_client_connected_and_working(rig, frames):
    reconnects = rig.client.reconnects
    rig.run(feed_then_prompt(rig, frames))
    assert rig.client.reconnects == reconnects
