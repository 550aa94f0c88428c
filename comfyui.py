"""One ComfyUI server: HTTP through one aiohttp session, events through one websocket.

The client picks every prompt id itself and registers it before the POST, so no
event can arrive for a prompt nobody listens to. Events are routed by prompt id
from the single long-lived websocket; `executing` with `node: null` ends every
prompt. `/history` is read only to reconcile: after a reconnect, or when the
socket has been silent while prompts are open. This module knows nothing of
Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
import websockets
from websockets.asyncio.client import connect as ws_connect

from comfy_types import (
    BadResponse,
    Cached,
    ComfyError,
    Event,
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

log = structlog.get_logger(__name__)

CHUNK = 256 * 1024
PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}


class PromptRun:
    """One submitted prompt: its events in order, ending with exactly one `Finished`."""

    def __init__(self, prompt_id: str, graph: dict[str, Any]) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.started = False
        self.outputs: dict[str, Output] = {}
        self.ending: Finished | None = None  # the outcome seen before `executing null`
        self.finished: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def push(self, event: Event) -> None:
        if not self.finished.done():
            self._events.put_nowait(event)

    def finish(self, result: Finished) -> None:
        if not self.finished.done():
            self._events.put_nowait(result)
            self.finished.set_result(result)

    async def events(self) -> AsyncIterator[Event]:
        """Every event of this prompt; the last one is the `Finished`."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished):
                return

    async def wait(self) -> Finished:
        return await asyncio.shield(self.finished)


class ComfyClient:
    """A client for one ComfyUI server. Use as `async with ComfyClient(url) as client:`."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        idle_timeout: float = 15.0,
        backoff: tuple[float, float] = (0.25, 30.0),
        name: str | None = None,
        client_id: str | None = None,
        report_positions: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # what messages and logs call this server: never the URL itself, which may hold credentials
        self.name = name or f"ComfyUI at {_without_credentials(self.base_url)}"
        # stable across restarts when given: ComfyUI sends a prompt's events to its client_id only
        self.client_id = client_id or uuid.uuid4().hex
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._report_positions = report_positions  # costs a GET /queue per prompt: off where a scheduler knows better
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self._runs: dict[str, PromptRun] = {}
        self._running_prompt: str | None = None
        self._object_info: dict[str, Any] | None = None
        self._connected = asyncio.Event()
        self._poked = asyncio.Event()
        self._ws: Any = None
        self._last_message = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.reconnects = 0
        self._log = log.bind(server=self.name, url=_without_credentials(self.base_url))

    # lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> ComfyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP session and start the websocket loop; does not wait for the server."""
        self._session = aiohttp.ClientSession(headers=self._headers, raise_for_status=False)
        self._tasks = [
            asyncio.create_task(self._socket_loop(), name=f"comfy-ws {self.name}"),
            asyncio.create_task(self._watchdog(), name=f"comfy-watchdog {self.name}"),
        ]

    def _spawn(self, coroutine: Any) -> None:
        """Run a short task in the background, holding a reference until it ends."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self._closing = True
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for run in list(self._runs.values()):
            run.finish(Finished("error", run.outputs, ComfyError("The bot is shutting down.")))
        self._runs.clear()
        if self._session is not None:
            await self._session.close()

    def poke(self) -> None:
        """Try to reconnect now instead of at the end of the backoff (someone is waiting for this server)."""
        if not self._connected.is_set():
            self._poked.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                await self._connected.wait()
        except TimeoutError:
            raise Unreachable(f"{self.name} is unreachable (no websocket connection).") from None

    # HTTP --------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                       timeout: float | None = None) -> tuple[int, bytes]:
        assert self._session is not None, "ComfyClient.start() was not called"
        limit = self._timeout if timeout is None else timeout
        try:
            async with self._session.request(
                method, self.base_url + path, json=json_body, data=data,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as response:
                body = await response.read()
        except TimeoutError:
            raise Unreachable(f"{self.name} did not answer {method} {path} within {limit:g} s.") from None
        except aiohttp.ClientError as error:
            raise Unreachable(f"{self.name} is unreachable ({error.__class__.__name__}).") from None
        if response.status >= 500:
            first_line = body.decode("utf-8", "replace").strip().splitlines()[:1]
            raise BadResponse(f"ComfyUI answered {response.status} to {method} {path}: {' '.join(first_line) or 'no details'}.")
        return response.status, body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = await self._request(method, path, **kwargs)
        if status != 200:
            raise BadResponse(f"ComfyUI answered {status} to {method} {path}.")
        return _decode(body, f"{method} {path}")

    async def system_stats(self) -> dict[str, Any]:
        stats = await self._json("GET", "/system_stats")
        _require(stats, "system", "GET /system_stats")
        return stats

    async def object_info(self, *, refresh: bool = False) -> dict[str, Any]:
        """Every node class the server has, with its inputs (cached; about 500 KB)."""
        if self._object_info is None or refresh:
            info = await self._json("GET", "/object_info", timeout=max(self._timeout, 60.0))
            if not isinstance(info, dict):
                raise BadResponse("ComfyUI sent an /object_info that is not an object.")
            self._object_info = info
        return self._object_info

    async def queue(self) -> tuple[list[str], list[str]]:
        """Prompt ids running and pending, pending in the order they will run."""
        data = await self._json("GET", "/queue")
        running = _require(data, "queue_running", "GET /queue")
        pending = _require(data, "queue_pending", "GET /queue")
        try:
            ordered = sorted(pending, key=lambda item: item[0])
            return [item[1] for item in running], [item[1] for item in ordered]
        except (TypeError, IndexError):
            raise BadResponse("ComfyUI sent a /queue in an unexpected shape.") from None

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while unknown, queued or running."""
        data = await self._json("GET", f"/history/{prompt_id}")
        if not isinstance(data, dict):
            raise BadResponse("ComfyUI sent a /history that is not an object.")
        return data.get(prompt_id)

    async def upload_image(self, data: bytes, filename: str, *, overwrite: bool = False) -> str:
        """Upload an input image; returns the name LoadImage must use (the server may rename it)."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="application/octet-stream")
        form.add_field("overwrite", "true" if overwrite else "false")
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200:
            raise BadResponse(f"ComfyUI refused the upload of {filename!r} (HTTP {status}).")
        reply = _decode(body, "POST /upload/image")
        name = _require(reply, "name", "POST /upload/image")
        subfolder = reply.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else name

    async def iter_file(self, ref: FileRef) -> AsyncIterator[bytes]:
        """Stream one output file from `/view`, chunk by chunk."""
        assert self._session is not None, "ComfyClient.start() was not called"
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout, sock_read=self._timeout)
        try:
            async with self._session.get(self.base_url + "/view", params=params, timeout=timeout) as response:
                if response.status == 404:
                    raise ComfyError(f"ComfyUI no longer has the file {ref.filename!r}.")
                if response.status != 200:
                    raise BadResponse(f"ComfyUI answered {response.status} when asked for {ref.filename!r}.")
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except TimeoutError:
            raise Unreachable(f"ComfyUI stopped sending {ref.filename!r} for {self._timeout:g} s.") from None
        except aiohttp.ClientError as error:
            raise Unreachable(f"Downloading {ref.filename!r} from ComfyUI failed ({error}).") from None

    # prompts -----------------------------------------------------------------

    async def submit(self, graph: dict[str, Any], *, prompt_id: str | None = None,
                     extra_data: dict[str, Any] | None = None) -> PromptRun:
        """Queue a workflow (API format). The run is registered before the POST."""
        await self.wait_connected()
        prompt_id = prompt_id or uuid.uuid4().hex
        run = PromptRun(prompt_id, graph)
        self._runs[prompt_id] = run
        body: dict[str, Any] = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            status, raw = await self._request("POST", "/prompt", json_body=body)
            reply = _decode(raw, "POST /prompt")
            if status == 400 or (status == 200 and isinstance(reply, dict) and reply.get("node_errors")):
                raise PromptRejected.from_reply(reply)
            if status != 200:
                raise BadResponse(f"ComfyUI answered {status} to POST /prompt.")
            _require(reply, "prompt_id", "POST /prompt")
        except PromptRejected:
            self._runs.pop(prompt_id, None)
            if status == 200:  # the valid outputs of a partly valid prompt would still run
                await self._quietly_cancel(prompt_id)
            raise
        except BaseException:
            self._runs.pop(prompt_id, None)
            raise
        self._log.info("prompt_submitted", prompt_id=prompt_id, nodes=len(graph))
        if self._report_positions and not run.started:
            self._spawn(self._report_position(run))
        return run

    async def attach(self, prompt_id: str, graph: dict[str, Any]) -> PromptRun:
        """Follow a prompt submitted earlier (by a previous process with the same client_id).

        If the server has already finished it, the run ends at once from `/history`;
        if the server knows nothing of it, it ends as lost.
        """
        await self.wait_connected()
        run = PromptRun(prompt_id, graph)
        self._runs[prompt_id] = run
        await self._reconcile(prompt_id)
        if prompt_id in self._runs:
            self._log.info("prompt_attached", prompt_id=prompt_id)
        return run

    async def _report_position(self, run: PromptRun) -> None:
        """Tell a freshly queued prompt how many prompts are ahead of it (best effort)."""
        try:
            running, pending = await self.queue()
        except ComfyError as error:
            self._log.debug("queue_position_unknown", prompt_id=run.prompt_id, error=str(error))
            return
        if not run.started and run.prompt_id in pending:
            run.push(Queued(position=pending.index(run.prompt_id) + len(running)))

    async def cancel(self, prompt_id: str) -> None:
        """Remove a waiting prompt from the queue, or interrupt it if it is running."""
        await self._request("POST", "/queue", json_body={"delete": [prompt_id]})
        running, pending = await self.queue()
        if prompt_id in running:
            await self._request("POST", "/interrupt", json_body={"prompt_id": prompt_id})
        elif prompt_id not in pending:
            await self._reconcile(prompt_id, vanished=Interrupted("Cancelled before it started."))

    async def _quietly_cancel(self, prompt_id: str) -> None:
        try:
            await self._request("POST", "/queue", json_body={"delete": [prompt_id]})
            await self._request("POST", "/interrupt", json_body={"prompt_id": prompt_id})
        except ComfyError as error:
            self._log.warning("cancel_failed", prompt_id=prompt_id, error=str(error))

    def open_prompts(self) -> list[str]:
        return list(self._runs)

    def fail_open(self, error: ComfyError) -> int:
        """End every open prompt with `error`: the server is gone and its jobs must move."""
        runs = list(self._runs.values())
        for run in runs:
            self._finish(run, Finished("error", run.outputs, error))
        return len(runs)

    # websocket ---------------------------------------------------------------

    def _ws_url(self) -> str:
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        return f"{scheme}{self.base_url[self.base_url.index(':'):]}/ws?clientId={self.client_id}"

    async def _socket_loop(self) -> None:
        """Keep one websocket open forever: exponential backoff with jitter between attempts."""
        first, ceiling = self._backoff
        delay = first
        while not self._closing:
            try:
                async with ws_connect(
                    self._ws_url(), additional_headers=self._headers, proxy=None,
                    open_timeout=self._timeout, ping_interval=10, ping_timeout=10,
                    max_size=64 * 1024 * 1024, max_queue=256,
                ) as socket:
                    await socket.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                    self._ws = socket
                    self._last_message = time.monotonic()
                    self._connected.set()
                    delay = first
                    self._log.info("websocket_connected", reconnects=self.reconnects)
                    if self.reconnects:
                        self._spawn(self._reconcile_all())
                    async for message in socket:
                        self._last_message = time.monotonic()
                        self._on_message(message)
            except (OSError, TimeoutError, websockets.WebSocketException) as error:
                self._log.warning("websocket_down", error=f"{error.__class__.__name__}: {error}", retry_in=round(delay, 2))
            finally:
                self._ws = None
                self._connected.clear()
            if self._closing:
                return
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):  # poke() cuts the wait short
                await asyncio.wait_for(self._poked.wait(), random.uniform(delay / 2, delay))
            self._poked.clear()
            delay = min(delay * 2, ceiling)

    def _on_message(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                self._on_binary(message)
            else:
                self._on_text(json.loads(message))
        except (ValueError, KeyError, TypeError, struct.error) as error:
            self._log.warning("bad_websocket_message", error=str(error), sample=str(message[:200]))

    def _on_text(self, message: dict[str, Any]) -> None:
        kind, data = message["type"], message.get("data") or {}
        if kind == "status":  # queue lengths: the scheduler keeps its own
            return
        run = self._runs.get(data.get("prompt_id") or "")
        if run is None:
            return
        if kind == "execution_start":
            run.started = True
            self._running_prompt = run.prompt_id
            run.push(Started())
        elif kind == "execution_cached":
            run.push(Cached(tuple(data.get("nodes") or ())))
        elif kind == "executing":
            if data["node"] is None:
                self._end(run)
            else:
                node = str(data["node"])
                run.push(NodeStarted(node, run.graph.get(node, {}).get("class_type", "")))
        elif kind == "progress":
            run.push(Progress(int(data["value"]), int(data["max"]), data.get("node")))
        elif kind == "executed":
            output = Output.from_ui(str(data["node"]), data.get("output") or {})
            run.outputs[output.node] = output
            run.push(output)
        elif kind == "execution_success":
            run.ending = Finished("success", run.outputs)
        elif kind == "execution_error":
            run.ending = Finished("error", run.outputs, ExecutionFailed.from_data(data))
        elif kind == "execution_interrupted":
            run.ending = Finished("interrupted", run.outputs, Interrupted.from_data(data))

    def _on_binary(self, frame: bytes) -> None:
        (kind,) = struct.unpack_from(">I", frame)
        if kind == 4:
            (meta_len,) = struct.unpack_from(">I", frame, 4)
            meta = json.loads(frame[8:8 + meta_len])
            run = self._runs.get(meta.get("prompt_id") or "")
            if run is not None:
                run.push(Preview(frame[8 + meta_len:], meta.get("image_type", "image/png"), meta.get("node_id")))
        elif kind == 1:
            (fmt,) = struct.unpack_from(">I", frame, 4)
            run = self._runs.get(self._running_prompt or "")
            if run is not None:
                run.push(Preview(frame[8:], PREVIEW_FORMATS.get(fmt, "image/png"), None))

    def _end(self, run: PromptRun) -> None:
        if run.ending is None:  # the outcome message was missed (reconnect): history knows it
            self._spawn(self._reconcile(run.prompt_id))
            return
        self._finish(run, run.ending)

    def _finish(self, run: PromptRun, result: Finished) -> None:
        self._runs.pop(run.prompt_id, None)
        if self._running_prompt == run.prompt_id:
            self._running_prompt = None
        self._log.info("prompt_finished", prompt_id=run.prompt_id, outcome=result.outcome,
                       error=str(result.error) if result.error else None)
        run.finish(result)

    # reconciliation ----------------------------------------------------------

    async def _watchdog(self) -> None:
        """Reconcile open prompts when the socket has said nothing for `idle_timeout`."""
        while not self._closing:
            await asyncio.sleep(max(self._idle_timeout / 3, 0.05))
            idle = time.monotonic() - self._last_message
            if self._runs and self._connected.is_set() and idle >= self._idle_timeout:
                self._log.info("websocket_idle", seconds=round(idle, 1), open_prompts=len(self._runs))
                self._last_message = time.monotonic()
                if await self._reconcile_all() and self._ws is not None:
                    # the server finished prompts we never heard of: this socket is deaf
                    await self._ws.close()

    async def _reconcile_all(self) -> int:
        """Settle every open prompt from `/queue` and `/history`; returns how many ended."""
        ended = 0
        for prompt_id in list(self._runs):
            ended += await self._reconcile(prompt_id)
        return ended

    async def _reconcile(self, prompt_id: str, vanished: ComfyError | None = None) -> bool:
        run = self._runs.get(prompt_id)
        if run is None:
            return False
        try:
            running, pending = await self.queue()
            if prompt_id in running or prompt_id in pending:
                return False
            entry = await self.history(prompt_id)
        except ComfyError as error:
            self._log.warning("reconcile_failed", prompt_id=prompt_id, error=str(error))
            return False
        if prompt_id not in self._runs:  # the socket finished it meanwhile
            return False
        if entry is None:
            lost = vanished or PromptLost(
                "ComfyUI lost this job (the server restarted or the job was removed). Please try again.")
            self._finish(run, Finished("interrupted" if isinstance(lost, Interrupted) else "error", run.outputs, lost))
        else:
            self._finish(run, Finished.from_history(entry, run.outputs))
        return True


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _decode(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BadResponse(f"ComfyUI sent invalid JSON for {what}.") from None


def _require(data: Any, key: str, what: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise BadResponse(f"ComfyUI's answer to {what} has no {key!r}.")
    return data[key]
