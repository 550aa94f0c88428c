"""A wire-level fake ComfyUI server for tests.

It reproduces what was recorded against ComfyUI 0.3.64 (see tests/test_fake_comfyui.py): the HTTP
routes (also under ``/api``), the websocket protocol with its exact message order, validation errors,
the classic output cache, the queue, history, interrupts, uploads and ``/view``. Nodes are simulated by
a small interpreter in ``comfy_nodes.py`` (IMAGE values are PIL images).

    fake = FakeComfyUI(models={"checkpoints": ["sd15.safetensors"], "controlnet": ["control_v11p_sd15_canny.pth"]},
                       custom_nodes=AUX_PREPROCESSORS)  # optional: installed custom node classes (comfy_nodes.py)
    await fake.start()          # binds 127.0.0.1 on a free port; fake.url == "http://127.0.0.1:<port>"
    ...
    await fake.stop()

Only 127.0.0.1 is ever bound. Nothing outside ``tests/`` is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import io
import itertools
import json
import math
import mimetypes
import posixpath
import struct
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image

from .comfy_nodes import (
    DIRS,
    IMAGE_EXTENSIONS,
    NODES,
    PREPROCESSOR_SPEC,
    SENSITIVE_EXTRA_DATA_KEYS,
    SERVER_FEATURES,
    TB_EXECUTOR,
    THREAD_PIXELS,
    Interrupted,
    NodeError,
    Validator,
    annotated_filepath,
    counter_of,
    encode_preview,
    format_value,
    full_type_name,
    inside,
    is_link,
    load_object_info,
    load_system_stats,
    norm_subfolder,
)

__all__ = ["FakeComfyUI"]

COMFY_500_BODY = "500 Internal Server Error\n\nServer got itself in trouble"
MAX_HISTORY = 10000
MODEL_COMBOS = {  # class -> (input name, models key), injected from FakeComfyUI.models
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "ImageOnlyCheckpointLoader": ("ckpt_name", "checkpoints"),
    "UpscaleModelLoader": ("model_name", "upscale_models"),
    "ControlNetLoader": ("control_net_name", "controlnet"),
    "LoraLoader": ("lora_name", "loras"),
    "ADE_AnimateDiffLoaderGen1": ("model_name", "animatediff_models"),  # a custom node, where installed
}
CONTENT_TYPES = {
    ".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm", ".json": "application/json",
}
BIN_PREVIEW, BIN_TEXT, BIN_PREVIEW_META = 1, 3, 4


def comfy_500() -> web.Response:
    """What aiohttp answers when a ComfyUI handler raises."""
    return web.Response(status=500, text=COMFY_500_BODY)


def now_ms() -> int:
    return int(time.time() * 1000)


def _api_less(path: str) -> str:
    return path[4:] if path == "/api" or path.startswith("/api/") else path


@dataclass
class _QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict
    extra_data: Any
    outputs: list[str]
    sensitive: dict
    seq: int

    def public(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    def key(self) -> tuple:
        return (self.number, self.prompt_id, self.seq)


@dataclass(eq=False)
class _Socket:
    ws: web.WebSocketResponse
    sid: str
    transport: Any
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    flags: dict = field(default_factory=dict)
    task: asyncio.Task | None = None
    server_closed: bool = False


@dataclass
class _Fault:
    kind: str  # "fail" | "garbage" | "slow" | "late" | "swallow" | "override"
    prefix: str
    count: int
    status: int = 500
    seconds: float = 0.0
    handler: Any = None  # "override": an aiohttp handler that answers instead of ComfyUI


class _Abort(Exception):
    """Stop executing the prompt (after an execution_error or execution_interrupted)."""


class NodeContext:
    """What a simulated node sees (see comfy_nodes.py)."""

    def __init__(self, fake: FakeComfyUI, run: _Run, node_id: str, class_type: str):
        self.fake = fake
        self.run = run
        self.node_id = node_id
        self.class_type = class_type
        self.delay = fake._delay_for(class_type)
        self.output_bytes = fake.output_bytes
        self.sampler_previews = fake.sampler_previews
        self.extra_pnginfo = run.extra_data.get("extra_pnginfo") if isinstance(run.extra_data, dict) else None
        self.node_object = fake._objects.setdefault((node_id, class_type), {})

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def compute(self, fn, *args, pixels: float = 0):
        if pixels > THREAD_PIXELS:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def progress(self, value: int | float, total: int | float, preview: tuple | None = None) -> None:
        """ComfyUI's progress hook: checks the interrupt flag, then progress_state, previews, progress."""
        fake, run = self.fake, self.run
        if fake._interrupt:
            raise Interrupted()
        run.update_progress(self.node_id, value, total)
        encoded = None
        if preview is not None:
            encoded = encode_preview(*preview)
            if run.client_id is not None and fake._supports_metadata(run.client_id):
                meta = {"node_id": self.node_id, "prompt_id": run.prompt_id, "display_node_id": self.node_id,
                        "parent_node_id": None, "real_node_id": self.node_id,
                        "image_type": "image/png" if preview[0] == "PNG" else "image/jpeg"}
                meta_bytes = json.dumps(meta).encode()
                fake._send_binary(BIN_PREVIEW_META, struct.pack(">I", len(meta_bytes)) + meta_bytes + encoded,
                                  run.client_id)
        fake._send("progress", {"value": value, "max": total, "prompt_id": run.prompt_id, "node": self.node_id},
                   run.client_id)
        if encoded is not None and not (run.client_id is not None and fake._supports_metadata(run.client_id)):
            fmt = 2 if preview[0] == "PNG" else 1
            fake._send_binary(BIN_PREVIEW, struct.pack(">I", fmt) + encoded, run.client_id)
        await asyncio.sleep(0)

    def send_text(self, text: str) -> None:
        node = self.node_id.encode()
        self.fake._send_binary(BIN_TEXT, struct.pack(">I", len(node)) + node + text.encode(), None)

    def read_file(self, type_: str, subfolder: str, filename: str) -> bytes | None:
        return self.fake.files.get((type_, subfolder, filename))

    def save_file(self, type_: str, subfolder: str, filename: str, data: bytes) -> None:
        self.fake._put_file(type_, subfolder, filename, data)

    def next_counter(self, type_: str, subfolder: str, prefix: str) -> int:
        return self.fake._next_counter(type_, subfolder, prefix)

    def png_prompt_json(self) -> str:
        return self.run.png_prompt_json()


class _Run:
    """State of one executing prompt (ComfyUI's PromptExecutor + progress registry)."""

    def __init__(self, fake: FakeComfyUI, item: _QueueItem):
        self.fake = fake
        self.item = item
        self.prompt_id = item.prompt_id
        self.prompt = item.prompt
        self.extra_data = item.extra_data
        self.client_id = item.extra_data.get("client_id") if isinstance(item.extra_data, dict) else None
        self.messages: list[tuple[str, dict]] = []
        self.progress: dict[str, dict] = {}
        self.is_changed: dict[str, Any] = {}
        self.sigs: dict[str, str] = {}
        self._png_prompt: str | None = None

    # -- messages -----------------------------------------------------------------------------
    def add_message(self, event: str, data: dict, broadcast: bool = False) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append((event, data))
        if broadcast:
            self.fake._send(event, data, None)
        elif self.client_id is not None:
            self.fake._send(event, data, self.client_id)

    def _send_progress_state(self) -> None:
        nodes = {
            nid: {"value": st["value"], "max": st["max"], "state": st["state"], "node_id": nid,
                  "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
            for nid, st in self.progress.items()
            if st["state"] != "pending"
        }
        self.fake._send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, None)

    def _entry(self, nid: str) -> dict:
        return self.progress.setdefault(nid, {"state": "pending", "value": 0, "max": 1})

    def start_progress(self, nid: str) -> None:
        self._entry(nid).update(state="running", value=0.0, max=1.0)
        self._send_progress_state()

    def update_progress(self, nid: str, value: Any, total: Any) -> None:
        self._entry(nid).update(state="running", value=value, max=total)
        self._send_progress_state()

    def finish_progress(self, nid: str) -> None:
        e = self._entry(nid)
        e.update(state="finished", value=e["max"])
        self._send_progress_state()

    # -- cache keys (ComfyUI's CacheKeySetInputSignature, content-addressed) ---------------------
    def compute_signatures(self) -> None:
        for nid in self.prompt:
            self._signature(nid, set())

    def _signature(self, nid: str, visiting: set) -> str:
        if nid in self.sigs:
            return self.sigs[nid]
        if nid in visiting or nid not in self.prompt:
            return uuid.uuid4().hex  # cycles and dangling links are never cached
        visiting.add(nid)
        node = self.prompt[nid]
        class_type = node.get("class_type")
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        changed = self._is_changed(nid, class_type, inputs)
        parts: list[Any] = [class_type, changed]
        info = self.fake._class_info(class_type)
        hidden = (info.get("input") or {}).get("hidden") or {}
        if any(v == "UNIQUE_ID" or v == ["UNIQUE_ID"] for v in hidden.values()):
            parts.append(nid)
        for k in sorted(inputs):
            v = inputs[k]
            if is_link(v):
                parts.append([k, "ANCESTOR", self._signature(v[0], visiting), v[1]])
            else:
                parts.append([k, v])
        visiting.discard(nid)
        sig = hashlib.sha1(json.dumps(parts, default=repr, sort_keys=True).encode()).hexdigest()
        self.sigs[nid] = sig
        return sig

    def _is_changed(self, nid: str, class_type: Any, inputs: dict) -> Any:
        spec = NODES.get(class_type) if isinstance(class_type, str) else None
        if spec is None or spec.is_changed is None:
            return False
        literal = {k: v for k, v in inputs.items() if not isinstance(v, list)}
        try:
            value = spec.is_changed(self.fake, **literal)
        except Exception:  # noqa: BLE001 - ComfyUI logs and uses NaN
            value = float("nan")
        self.is_changed[nid] = value
        if isinstance(value, float) and math.isnan(value):
            return uuid.uuid4().hex  # NaN != NaN: never a cache hit
        return value

    def png_prompt_json(self) -> str:
        """The prompt as SaveImage writes it: with ``is_changed`` on nodes that have IS_CHANGED."""
        if self._png_prompt is None:
            prompt = copy.deepcopy(self.prompt)
            for nid, value in self.is_changed.items():
                if isinstance(prompt.get(nid), dict):
                    prompt[nid]["is_changed"] = [value]
            self._png_prompt = json.dumps(prompt)
        return self._png_prompt


class FakeComfyUI:
    def __init__(self, *, models: dict[str, list[str]] | None = None, node_delay: float = 0.0,
                 name: str = "fake", node_delays: dict[str, float] | None = None,
                 custom_nodes: dict[str, dict] | None = None):
        self.name = name
        self.models: dict[str, list[str]] = {k: list(v) for k, v in (models or {}).items()}
        # installed custom node classes: class name -> its /object_info entry (advertised after the
        # built-in classes, which they cannot replace); those without a simulation of their own run as
        # image preprocessors (comfy_nodes.PREPROCESSOR_SPEC). Off by default, like a bare ComfyUI.
        self.custom_nodes: dict[str, dict] = {k: copy.deepcopy(v) for k, v in (custom_nodes or {}).items()}
        self.node_delay = node_delay
        self.node_delays: dict[str, float] = dict(node_delays or {})
        self.output_bytes: bytes | None = None
        self.sampler_previews = True  # KSampler sends a small JPEG preview frame per step
        self.silent = False
        self.requests: list[dict] = []
        self.prompts: dict[str, dict] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.unhandled: list[str] = []
        self.end_sent: dict[str, float] = {}  # prompt id -> perf_counter() when `executing null` was sent (benchmarks)
        self.start_sent: dict[str, float] = {}  # prompt id -> perf_counter() when `execution_start` was sent
        self.prompt_received: dict[str, float] = {}  # prompt id -> perf_counter() when POST /prompt was handled (benchmarks)
        self.object_info: dict[str, Any] = load_object_info()
        self.system_stats: dict[str, Any] = load_system_stats()
        self.url = ""
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._worker_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._faults: list[_Fault] = []
        self.muted_prompts: set[str] = set()  # their websocket events are not sent (status still is)
        self.dropped_events: set[str] = set()  # websocket events of these types go nowhere (nobody was listening)
        self.mute_all_prompts = False
        self._node_faults: list[dict] = []
        self._paused = False
        self._stopped = False
        self._sockets: dict[str, _Socket] = {}  # clientId -> the socket that receives its messages
        self._all_sockets: set[_Socket] = set()
        self._counters: dict[tuple[str, str, str], int] = {}
        self._reset_state()

    def __repr__(self) -> str:
        return f"<FakeComfyUI {self.name} {self.url or 'not started'}>"

    def _reset_state(self) -> None:
        self._queue: list[tuple[tuple, _QueueItem]] = []
        self._running: _QueueItem | None = None
        self._history: dict[str, dict] = {}
        self._number = 0
        self._seq = itertools.count()
        self._cache: dict[str, tuple[tuple, dict | None]] = {}
        self._objects: dict[tuple[str, str], dict] = {}
        self._client_id: str | None = None
        self._last_node_id: str | None = None
        self._interrupt = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._runner is not None:
            return
        self._stopped = False
        self._wake = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=SERVER_FEATURES["max_upload_size"])
        get, post = [
            ("/ws", self._h_ws), ("/system_stats", self._h_system_stats), ("/object_info", self._h_object_info),
            ("/object_info/{node_class}", self._h_object_info_class), ("/queue", self._h_get_queue),
            ("/prompt", self._h_get_prompt), ("/history", self._h_get_history),
            ("/history/{prompt_id}", self._h_get_history_item), ("/view", self._h_view),
            ("/features", self._h_features), ("/embeddings", self._h_empty_list), ("/extensions", self._h_empty_list),
            ("/models", self._h_models), ("/models/{folder}", self._h_models_folder),
        ], [
            ("/prompt", self._h_post_prompt), ("/queue", self._h_post_queue), ("/history", self._h_post_history),
            ("/interrupt", self._h_interrupt), ("/upload/image", self._h_upload_image), ("/free", self._h_free),
        ]
        for prefix in ("", "/api"):
            for path, handler in get:
                app.router.add_get(prefix + path, handler)
            for path, handler in post:
                app.router.add_post(prefix + path, handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._start_site(self.port or 0)
        self._worker_task = asyncio.create_task(self._worker(), name=f"fake-comfyui-worker-{self.name}")

    async def _start_site(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()
        self.port = self._runner.addresses[-1][1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._stopped or self._runner is None:
            self._stopped = True
            return
        self._stopped = True
        await self._stop_worker()
        await self._close_sockets(wait=0.1)
        runner, self._runner, self._site = self._runner, None, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 2.0)

    async def restart(self, *, downtime: float = 0.0) -> None:
        """Like a ComfyUI process restart: sockets closed; queue, running prompt, history, cache and the
        prompt counter forgotten; ``files`` (the disk) kept; same port. With ``downtime`` the listener is
        closed (connections refused, open HTTP connections dropped) for that many seconds."""
        await self._stop_worker()
        await self._close_sockets()
        self._reset_state()
        if downtime > 0 and self._runner is not None and self._site is not None:
            await self._site.stop()
            server = self._runner.server
            for conn in list(getattr(server, "connections", []) if server else []):
                with contextlib.suppress(Exception):
                    conn.force_close()
            await asyncio.sleep(downtime)
            await self._start_site(self.port or 0)
        self._wake = asyncio.Event()
        self._worker_task = asyncio.create_task(self._worker(), name=f"fake-comfyui-worker-{self.name}")

    async def _stop_worker(self) -> None:
        task, self._worker_task = self._worker_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def drop_sockets(self, *, abrupt: bool = False) -> None:
        """Close every websocket (server state kept). ``abrupt`` drops the TCP connection without a close frame."""
        await self._close_sockets(abrupt=abrupt)

    async def _close_sockets(self, *, abrupt: bool = False, wait: float = 0.3) -> None:
        socks = list(self._all_sockets)
        self._sockets.clear()

        async def close(s: _Socket) -> None:
            s.server_closed = True
            if not abrupt:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.ws.close(code=WSCloseCode.GOING_AWAY), wait)
            if abrupt or not s.ws.closed:
                with contextlib.suppress(Exception):
                    s.transport.abort()
            if s.task is not None:
                s.task.cancel()

        await asyncio.gather(*(close(s) for s in socks))

    # ------------------------------------------------------------------ knobs and fault switches
    def fail_http(self, path_prefix: str, *, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests whose path (without /api) starts with the prefix get ``status``
        with ComfyUI's text/plain error body, without being processed."""
        self._faults.append(_Fault("fail", _api_less(path_prefix), count, status=status))

    def garbage_json(self, path_prefix: str, *, count: int = 1) -> None:
        """The next ``count`` requests on the prefix get 200 application/json with an invalid JSON body,
        without being processed."""
        self._faults.append(_Fault("garbage", _api_less(path_prefix), count))

    def slow(self, path_prefix: str, seconds: float, *, count: int = 1) -> None:
        """Delay the next ``count`` answers on the prefix by ``seconds`` (then handled normally)."""
        self._faults.append(_Fault("slow", _api_less(path_prefix), count, seconds=seconds))

    def late(self, path_prefix: str, seconds: float, *, count: int = 1) -> None:
        """Handle the next ``count`` requests on the prefix at once, but hold the answer ``seconds``:
        what a client sees when the server took the request and the reply got lost."""
        self._faults.append(_Fault("late", _api_less(path_prefix), count, seconds=seconds))

    def swallow(self, path_prefix: str, *, count: int = 1, seconds: float = 30.0) -> None:
        """The next ``count`` requests on the prefix are never processed and never answered (held up to
        ``seconds``, then the connection is dropped): a request lost on the way in."""
        self._faults.append(_Fault("swallow", _api_less(path_prefix), count, seconds=seconds))

    def override(self, path_prefix: str, handler, *, count: int = 1_000_000) -> None:
        """Answer the next ``count`` requests on the prefix with ``handler(request)`` instead of ComfyUI:
        a hostile server or proxy (see tests/fakes/hostile.py for ready-made answers)."""
        self._faults.append(_Fault("override", _api_less(path_prefix), count, handler=handler))

    def inject(self, frame: str | bytes, sid: str | None = None) -> None:
        """Send a raw websocket frame, as is, to one client (or all): any text or bytes at all."""
        for s in self._targets(sid):
            s.queue.put_nowait(frame)

    def fail_node(self, node_id_or_class: str, *, exception_message: str, exception_type: str = "RuntimeError",
                  count: int = 1) -> None:
        """The next ``count`` executions of that node id or class raise -> execution_error
        (``exception_message`` is sent with ComfyUI's trailing newline)."""
        self._node_faults.append({"match": node_id_or_class, "message": exception_message,
                                  "type": exception_type, "count": count})

    def pause(self) -> None:
        """The worker stops dequeuing (a running prompt still finishes)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    def queue_pending_ids(self) -> list[str]:
        return [item.prompt_id for _, item in sorted(self._queue, key=lambda e: e[0])]

    def running_id(self) -> str | None:
        return self._running.prompt_id if self._running else None

    def history_ids(self) -> list[str]:
        return list(self._history)

    def connected_client_ids(self) -> list[str]:
        """The clientIds that currently have a socket receiving their messages."""
        return list(self._sockets)

    def _delay_for(self, class_type: str) -> float:
        return self.node_delays.get(class_type, self.node_delay)

    # ------------------------------------------------------------------ files
    def read_file(self, type_: str, subfolder: str, filename: str) -> bytes | None:
        return self.files.get((type_, subfolder, filename))

    def _put_file(self, type_: str, subfolder: str, filename: str, data: bytes) -> None:
        self.files[(type_, subfolder, filename)] = data
        for (t, s, prefix), current in self._counters.items():
            if t == type_ and s == subfolder:
                self._counters[(t, s, prefix)] = max(current, counter_of(prefix, filename))

    def _next_counter(self, type_: str, subfolder: str, prefix: str) -> int:
        key = (type_, subfolder, prefix)
        if key not in self._counters:
            self._counters[key] = max(
                (counter_of(prefix, n) for (t, s, n) in self.files if t == type_ and s == subfolder), default=0)
        return self._counters[key] + 1

    def _input_images(self) -> list[str]:
        return sorted(n for (t, s, n) in self.files
                      if t == "input" and s == "" and n.lower().endswith(IMAGE_EXTENSIONS))

    def _input_videos(self) -> list[str]:
        """What LoadVideo lists: the input folder's files whose type is video/*."""
        return sorted(n for (t, s, n) in self.files if t == "input" and s == "" and
                      CONTENT_TYPES.get(posixpath.splitext(n.lower())[1], "").startswith("video/"))

    def _class_info(self, class_type: Any) -> dict[str, Any]:
        """The object_info entry of a class (built-in or custom), {} when there is none."""
        if not isinstance(class_type, str):
            return {}
        return self.object_info.get(class_type) or self.custom_nodes.get(class_type) or {}

    def _effective_object_info(self) -> dict[str, Any]:
        """object_info with the custom nodes added and the uploaded inputs and the ``models`` knob
        injected into the combos."""
        oi = dict(self.object_info)
        for cls, entry in self.custom_nodes.items():
            oi.setdefault(cls, entry)
        patches = {"LoadImage": ("image", self._input_images()), "LoadImageMask": ("image", self._input_images()),
                   "LoadVideo": ("file", self._input_videos())}
        for cls, (inp, key) in MODEL_COMBOS.items():
            patches[cls] = (inp, list(self.models.get(key, [])))
        for cls, (inp, options) in patches.items():
            if cls not in oi:
                continue
            entry = copy.deepcopy(oi[cls])
            spec = entry.get("input", {}).get("required", {}).get(inp)
            if isinstance(spec, list) and spec:
                if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                    spec[1]["options"] = options
                elif isinstance(spec[0], list):
                    spec[0] = options
            oi[cls] = entry
        return oi

    # ------------------------------------------------------------------ websocket sending
    def _targets(self, sid: str | None) -> list[_Socket]:
        if sid is None:
            return list(self._sockets.values())
        s = self._sockets.get(sid)
        return [s] if s is not None else []

    def _send(self, event: str, data: Any, sid: str | None = None) -> None:
        if self.silent or event in self.dropped_events:
            return
        if isinstance(data, dict) and data.get("prompt_id") is not None and (
                self.mute_all_prompts or data["prompt_id"] in self.muted_prompts):
            return
        targets = self._targets(sid)
        if targets:
            text = json.dumps({"type": event, "data": data})
            for s in targets:
                s.queue.put_nowait(text)

    def _send_binary(self, event: int, payload: bytes, sid: str | None = None) -> None:
        if self.silent:
            return
        frame = struct.pack(">I", event) + payload
        for s in self._targets(sid):
            s.queue.put_nowait(frame)

    def _supports_metadata(self, sid: str) -> bool:
        s = self._sockets.get(sid)
        return bool(s is not None and isinstance(s.flags, dict) and s.flags.get("supports_preview_metadata"))

    async def _sender(self, s: _Socket) -> None:
        while True:
            msg = await s.queue.get()
            if msg is None or s.ws.closed:
                return
            try:
                if isinstance(msg, str):
                    await s.ws.send_str(msg)
                else:
                    await s.ws.send_bytes(msg)
            except Exception:  # noqa: BLE001 - the peer went away
                return

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self._queue) + (1 if self._running else 0)}}

    def _queue_updated(self) -> None:
        self._send("status", {"status": self._queue_info()}, None)

    # ------------------------------------------------------------------ HTTP plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        arrived = time.perf_counter()
        body: bytes = b""
        parsed: Any = None
        try:
            if request.method not in ("GET", "HEAD") and not request.content_type.startswith("multipart/"):
                body = await request.read()
                if body:
                    with contextlib.suppress(ValueError):
                        parsed = json.loads(body)
        except Exception:  # noqa: BLE001 - e.g. body too large; the handler answers
            pass
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "json": parsed, "headers": dict(request.headers), "body": body,
                              "time": arrived})  # perf_counter() when the request arrived (benchmarks)
        path = _api_less(request.path)
        override = self._take_fault("override", path)
        if override is not None:
            return await override.handler(request)
        swallow = self._take_fault("swallow", path)
        if swallow is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(swallow.seconds)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=400)
        late = self._take_fault("late", path)
        if late is not None:
            answer = await handler(request)
            await asyncio.sleep(late.seconds)
            return answer
        slow = self._take_fault("slow", path)
        if slow is not None:
            await asyncio.sleep(slow.seconds)
        fail = self._take_fault("fail", path)
        if fail is not None:
            if fail.status == 500:
                return comfy_500()
            return web.Response(status=fail.status, text=f"{fail.status}: {web.Response(status=fail.status).reason}")
        if self._take_fault("garbage", path) is not None:
            return web.Response(status=200, body=b'{"prompt_id": "tru', content_type="application/json",
                                charset="utf-8")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as ex:  # noqa: BLE001
            self.unhandled.append(f"{request.method} {request.path}: {full_type_name(ex)}: {ex}\n"
                                  + "".join(traceback.format_tb(ex.__traceback__)))
            return web.Response(status=400)

    def _take_fault(self, kind: str, path: str) -> _Fault | None:
        for f in self._faults:
            if f.kind == kind and f.count > 0 and path.startswith(f.prefix):
                f.count -= 1
                if f.count <= 0:
                    self._faults.remove(f)
                return f
        return None

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        """request.json(); raises like it does (-> ComfyUI 500)."""
        return json.loads(await request.text())

    # ------------------------------------------------------------------ GET handlers
    async def _h_system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.system_stats)

    async def _h_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self._effective_object_info())

    async def _h_object_info_class(self, request: web.Request) -> web.Response:
        cls = request.match_info["node_class"]
        oi = self._effective_object_info()
        return web.json_response({cls: oi[cls]} if cls in oi else {})

    async def _h_get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({
            "queue_running": [self._running.public()] if self._running else [],
            "queue_pending": [item.public() for _, item in sorted(self._queue, key=lambda e: e[0])],
        })

    async def _h_get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _h_get_history(self, request: web.Request) -> web.Response:
        try:
            max_items = request.query.get("max_items")
            max_items = int(max_items) if max_items is not None else None
            offset = request.query.get("offset")
            offset = int(offset) if offset is not None else -1
        except ValueError:
            return comfy_500()
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        out: dict[str, Any] = {}
        for i, k in enumerate(self._history):
            if i >= offset:
                out[k] = self._history[k]
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def _h_get_history_item(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        return web.json_response({pid: self._history[pid]} if pid in self._history else {})

    async def _h_features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    async def _h_empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _h_models(self, request: web.Request) -> web.Response:
        folders = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                   "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                   "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
        return web.json_response(folders + [k for k in self.models if k not in folders])

    async def _h_models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder in self.models:
            return web.json_response(sorted(self.models[folder]))
        if folder in ("checkpoints", "loras", "vae", "upscale_models", "embeddings", "controlnet", "clip_vision"):
            return web.json_response([])
        return web.Response(status=404)

    async def _h_view(self, request: web.Request) -> web.Response:
        q = request.query
        if "filename" not in q:
            return web.Response(status=404)
        filename, type_ = annotated_filepath(q["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if type_ is None:
            type_ = q.get("type", "output")
        if type_ not in DIRS:
            return web.Response(status=400)
        subfolder = ""
        if "subfolder" in q:
            base = DIRS[type_]
            full = posixpath.join(base, q["subfolder"])
            if not inside(base, full):
                return web.Response(status=403)
            subfolder = norm_subfolder(posixpath.relpath(posixpath.normpath(full), base))
        filename = posixpath.basename(filename)
        data = self.files.get((type_, subfolder, filename))
        if data is None:
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = q.get("channel")
        if "preview" in q or channel in ("rgb", "a"):
            try:
                return self._view_converted(data, q, disposition)
            except Exception:  # noqa: BLE001 - Pillow cannot open it: ComfyUI raises
                return comfy_500()
        ext = posixpath.splitext(filename)[1].lower()
        ctype = CONTENT_TYPES.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if ctype in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}:
            ctype = "application/octet-stream"
        return web.Response(body=data, headers={**disposition, "Content-Type": ctype})

    @staticmethod
    def _view_converted(data: bytes, q, disposition: dict) -> web.Response:
        channel = q.get("channel", "rgba")
        with Image.open(io.BytesIO(data)) as img:
            buf = io.BytesIO()
            if "preview" in q:
                info = q["preview"].split(";")
                fmt = info[0]
                if fmt not in ("webp", "jpeg") or "a" in q.get("channel", ""):
                    fmt = "webp"
                quality = int(info[-1]) if info[-1].isdigit() else 90
                if fmt == "jpeg" or q.get("channel", "") == "rgb":
                    img = img.convert("RGB")
                img.save(buf, format=fmt, quality=quality)
                return web.Response(body=buf.getvalue(), content_type=f"image/{fmt}", headers=disposition)
            if channel == "rgb":
                img.convert("RGB").save(buf, format="PNG")
            else:
                a = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
                alpha = Image.new("RGBA", a.size)
                alpha.putalpha(a)
                alpha.save(buf, format="PNG")
            return web.Response(body=buf.getvalue(), content_type="image/png", headers=disposition)

    # ------------------------------------------------------------------ POST handlers
    async def _h_post_prompt(self, request: web.Request) -> web.Response:
        received_at = time.perf_counter()
        try:
            json_data = await self._json_body(request)
            received = copy.deepcopy(json_data)
            if "number" in json_data:
                number: int | float = float(json_data["number"])
            else:
                number = self._number
                if "front" in json_data and json_data["front"]:
                    number = -number
                self._number += 1
            if "prompt" not in json_data:
                error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                         "extra_info": {}}
                return web.json_response({"error": error, "node_errors": {}}, status=400)
            prompt = json_data["prompt"]
            prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
            partial = json_data["partial_execution_targets"] if "partial_execution_targets" in json_data else None
            ok, error, outputs, node_errors = self._validator().validate_prompt(prompt, partial)
            extra_data: Any = {}
            if "extra_data" in json_data:
                extra_data = json_data["extra_data"]
            if "client_id" in json_data:
                extra_data["client_id"] = json_data["client_id"]
            sensitive = {}
            if ok:
                for k in SENSITIVE_EXTRA_DATA_KEYS:
                    if k in extra_data:
                        sensitive[k] = extra_data.pop(k)
        except Exception:  # noqa: BLE001 - everything ComfyUI itself would raise on (malformed JSON, list prompt...)
            return comfy_500()
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        item = _QueueItem(number, prompt_id, prompt, extra_data, outputs, sensitive, next(self._seq))
        heapq.heappush(self._queue, (item.key(), item))
        self.prompts[prompt_id] = received
        self.prompt_received[prompt_id] = received_at
        self._queue_updated()
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _validator(self) -> Validator:
        oi = self._effective_object_info()
        return Validator(oi, lambda t, s, n: (t, s, n) in self.files)

    async def _h_post_queue(self, request: web.Request) -> web.Response:
        try:
            json_data = await self._json_body(request)
            if "clear" in json_data and json_data["clear"]:
                self._queue = []
                self._queue_updated()
            if "delete" in json_data:
                for pid in json_data["delete"]:
                    for i, (_, item) in enumerate(self._queue):
                        if item.prompt_id == pid:
                            self._queue.pop(i)
                            heapq.heapify(self._queue)
                            self._queue_updated()
                            break
        except Exception:  # noqa: BLE001 - ComfyUI raises
            return comfy_500()
        return web.Response(status=200)

    async def _h_post_history(self, request: web.Request) -> web.Response:
        try:
            json_data = await self._json_body(request)
            if "clear" in json_data and json_data["clear"]:
                self._history.clear()
            if "delete" in json_data:
                for pid in json_data["delete"]:
                    self._history.pop(pid, None)
        except Exception:  # noqa: BLE001 - ComfyUI raises
            return comfy_500()
        return web.Response(status=200)

    async def _h_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await self._json_body(request)
        except ValueError:
            json_data = {}
        try:
            prompt_id = json_data.get("prompt_id")
        except AttributeError:
            return comfy_500()
        if prompt_id:
            if self._running is not None and self._running.prompt_id == prompt_id:
                self._interrupt = True
        else:
            self._interrupt = True
        return web.Response(status=200)

    async def _h_free(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _h_upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        type_ = post.get("type") or "input"
        if type_ not in DIRS:
            return comfy_500()  # ComfyUI: UnboundLocalError
        if not image:
            return web.Response(status=400)
        if not hasattr(image, "file"):
            return comfy_500()  # a plain form field named "image": AttributeError in ComfyUI
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        base = DIRS[type_]
        folder = posixpath.join(base, posixpath.normpath(subfolder) if subfolder else "")
        if not inside(base, posixpath.join(folder, filename)):
            return web.Response(status=400)
        if "/" in filename:
            return comfy_500()  # the directory would not exist
        sub = norm_subfolder(posixpath.relpath(posixpath.normpath(folder), base))
        data = image.file.read()
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = posixpath.splitext(filename)
            i = 1
            while (type_, sub, filename) in self.files:
                if hashlib.sha256(self.files[(type_, sub, filename)]).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                i += 1
        if not duplicate:
            self._put_file(type_, sub, filename, data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": type_})

    # ------------------------------------------------------------------ websocket
    async def _h_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=0.25, max_msg_size=SERVER_FEATURES["max_upload_size"])
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self._sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        sock = _Socket(ws, sid, request.transport)
        sock.task = asyncio.create_task(self._sender(sock))
        self._sockets[sid] = sock
        self._all_sockets.add(sock)
        try:
            self._send("status", {"status": self._queue_info(), "sid": sid}, sid)
            if self._client_id == sid and self._last_node_id is not None:
                self._send("executing", {"node": self._last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        if sid in self._sockets:
                            self._sockets[sid].flags = data.get("data", {})
                        self._send("feature_flags", SERVER_FEATURES, sid)
                    first = False
                except Exception:  # noqa: BLE001 - ComfyUI logs and ignores
                    pass
        finally:
            if sock.server_closed:
                if self._sockets.get(sid) is sock:
                    del self._sockets[sid]
            else:
                # ComfyUI pops the clientId even when this socket had been replaced by a newer one.
                self._sockets.pop(sid, None)
            self._all_sockets.discard(sock)
            sock.queue.put_nowait(None)
        return ws

    # ------------------------------------------------------------------ worker / executor
    async def _worker(self) -> None:
        while True:
            while self._paused or not self._queue:
                self._wake.clear()
                await self._wake.wait()
            _, item = heapq.heappop(self._queue)
            self._running = item
            self._queue_updated()
            try:
                await self._execute(item)
            except asyncio.CancelledError:
                raise
            except Exception as ex:  # noqa: BLE001 - a bug in the fake: keep serving
                self.unhandled.append(f"worker ({item.prompt_id}): {full_type_name(ex)}: {ex}\n"
                                      + "".join(traceback.format_tb(ex.__traceback__)))
                if self._running is item:
                    self._running = None
                    self._last_node_id = None
                    self._queue_updated()
            await asyncio.sleep(0)

    async def _execute(self, item: _QueueItem) -> None:
        run = _Run(self, item)
        self._client_id = run.client_id
        self._interrupt = False
        prompt, pid = run.prompt, run.prompt_id
        self.start_sent[pid] = time.perf_counter()
        run.add_message("execution_start", {"prompt_id": pid})
        run.compute_signatures()
        live = set(run.sigs.values())
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        live_objects = {(nid, node.get("class_type")) for nid, node in prompt.items() if isinstance(node, dict)}
        self._objects = {k: v for k, v in self._objects.items() if k in live_objects}
        run.add_message("execution_cached", {"nodes": [nid for nid in prompt if run.sigs[nid] in self._cache],
                                             "prompt_id": pid})
        executed: list[str] = []
        ui_outputs: dict[str, Any] = {}
        success = True
        try:
            await self._run_graph(run, item.outputs, executed, ui_outputs)
            run.add_message("execution_success", {"prompt_id": pid})
        except _Abort:
            success = False
        self._last_node_id = None
        meta = {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in ui_outputs}
        self._running = None
        if len(self._history) > MAX_HISTORY:
            self._history.pop(next(iter(self._history)))
        self._history[pid] = {
            "prompt": copy.deepcopy(item.public()),
            "outputs": ui_outputs,
            "status": {"status_str": "success" if success else "error", "completed": success,
                       "messages": copy.deepcopy(run.messages)},
            "meta": meta,
        }
        self._queue_updated()
        if run.client_id is not None:
            self._send("executing", {"node": None, "prompt_id": pid}, run.client_id)
            self.end_sent[pid] = time.perf_counter()

    async def _run_graph(self, run: _Run, outputs: list[str], executed: list[str], ui_outputs: dict) -> None:
        """ComfyUI's ExecutionList: stack-based add_node and ux_friendly_pick_node."""
        prompt = run.prompt
        pending: dict[str, bool] = {}
        block_count: dict[str, int] = {}
        blocking: dict[str, dict[str, bool]] = {}

        def cached(nid: str) -> bool:
            return run.sigs.get(nid) in self._cache

        def add_node(root: str) -> None:
            stack, links = [root], []
            while stack:
                uid = stack.pop()
                if uid in pending:
                    continue
                pending[uid], block_count[uid], blocking[uid] = True, 0, {}
                for value in prompt[uid]["inputs"].values():
                    if is_link(value):
                        if not cached(value[0]):
                            stack.append(value[0])
                        links.append((value[0], uid))
            for src, dst in links:
                if not cached(src):
                    add_node(src)
                    if dst not in blocking[src]:
                        blocking[src][dst] = True
                        block_count[dst] += 1

        def is_output(nid: str) -> bool:
            return self._class_info(prompt[nid]["class_type"]).get("output_node") is True

        def pick(avail: list[str]) -> str:
            for nid in avail:
                if is_output(nid):
                    return nid
            for nid in avail:
                if any(is_output(b) for b in blocking[nid]):
                    return nid
            for nid in avail:
                if any(is_output(b1) for b in blocking[nid] for b1 in blocking.get(b, {})):
                    return nid
            return avail[0]

        for o in outputs:
            add_node(o)
        for _ in range(len(pending) + 1):
            if not pending:
                return
            avail = [nid for nid in pending if block_count[nid] == 0]
            if not avail:
                nid = next(iter(pending))
                self._fail(run, nid, executed, NodeError("graph.DependencyCycleError", "Dependency cycle detected", []))
            nid = pick(avail)
            await self._execute_node(run, nid, executed, ui_outputs)
            del pending[nid]
            for blocked in blocking.pop(nid):
                block_count[blocked] -= 1

    async def _execute_node(self, run: _Run, nid: str, executed: list[str], ui_outputs: dict) -> None:
        node = run.prompt[nid]
        class_type = node["class_type"]
        sig = run.sigs[nid]
        hit = self._cache.get(sig)
        if hit is not None:
            outputs, ui = hit
            if run.client_id is not None:
                self._send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": run.prompt_id},
                           run.client_id)
            if ui is not None:
                ui_outputs[nid] = ui
            run.finish_progress(nid)
            return
        run.start_progress(nid)
        if run.client_id is not None:
            self._last_node_id = nid
            self._send("executing", {"node": nid, "display_node": nid, "prompt_id": run.prompt_id}, run.client_id)
        await asyncio.sleep(0)
        spec = NODES.get(class_type)
        if spec is None and class_type in self.custom_nodes:
            spec = PREPROCESSOR_SPEC
        ctx = NodeContext(self, run, nid, class_type)
        kwargs: dict[str, Any] = {}
        try:
            declared = self._class_info(class_type).get("input", {})
            for name, value in node["inputs"].items():
                if name not in declared.get("required", {}) and name not in declared.get("optional", {}):
                    continue
                if is_link(value):
                    kwargs[name] = self._cache[run.sigs[value[0]]][0][int(value[1])]
                else:
                    kwargs[name] = value
            if self._interrupt:
                raise Interrupted()
            fault = self._take_node_fault(nid, class_type)
            if fault is not None:
                raise NodeError(fault["type"], fault["message"], TB_EXECUTOR + [
                    f'  File "/srv/ComfyUI/nodes.py", line 1, in {class_type}\n'
                    f'    raise {fault["type"]}({fault["message"]!r})\n'])
            if spec is None:
                raise NodeError("NotImplementedError", f"fake ComfyUI cannot run {class_type}")
            outputs, ui = await spec.fn(ctx, **kwargs)
            if not spec.progress:
                await ctx.sleep(ctx.delay)
        except Interrupted:
            run.add_message("execution_interrupted", {"prompt_id": run.prompt_id, "node_id": nid,
                                                      "node_type": class_type, "executed": list(executed)},
                            broadcast=True)
            raise _Abort() from None
        except NodeError as ex:
            self._fail(run, nid, executed, ex, kwargs)
        except Exception as ex:  # noqa: BLE001 - a bug in a node simulation: report it like ComfyUI would
            self.unhandled.append(f"node {nid} ({class_type}): {full_type_name(ex)}: {ex}\n"
                                  + "".join(traceback.format_tb(ex.__traceback__)))
            self._fail(run, nid, executed, NodeError(full_type_name(ex), str(ex),
                                                     traceback.format_tb(ex.__traceback__)), kwargs)
        self._cache[sig] = (outputs, ui)
        if ui:
            if run.client_id is not None:
                self._send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": run.prompt_id},
                           run.client_id)
            ui_outputs[nid] = ui
        run.finish_progress(nid)
        executed.append(nid)

    def _fail(self, run: _Run, nid: str, executed: list[str], ex: NodeError, kwargs: dict | None = None) -> None:
        run.add_message("execution_error", {
            "prompt_id": run.prompt_id, "node_id": nid, "node_type": run.prompt[nid]["class_type"],
            "executed": list(executed), "exception_message": f"{ex.message}\n", "exception_type": ex.exception_type,
            "traceback": ex.traceback,
            "current_inputs": {k: [format_value(v)] for k, v in (kwargs or {}).items()},
            "current_outputs": list(run.prompt),
        })
        raise _Abort()

    def _take_node_fault(self, nid: str, class_type: str) -> dict | None:
        for f in self._node_faults:
            if f["count"] > 0 and f["match"] in (nid, class_type):
                f["count"] -= 1
                if f["count"] <= 0:
                    self._node_faults.remove(f)
                return f
        return None
