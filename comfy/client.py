"""One ComfyUI server: HTTP through one aiohttp session, events through one websocket.

The client picks every prompt id itself and registers it before the POST, so no
event can arrive for a prompt nobody listens to. Events are routed by prompt id
from the single long-lived websocket; `executing` with `node: null` ends every
prompt. `/history` is read only to reconcile: after a reconnect, or when a
prompt of ours has heard nothing for `idle_timeout` (even while broadcast
frames keep the socket busy).

Whatever the server sends, the client stays up: a frame that does not decode
is logged and dropped (comfy_frames.py), the reader is supervised and restarted
if it ever ends, and every body read is capped. This module knows nothing of
Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
import websockets
from websockets.asyncio.client import connect as ws_connect

from comfy import decode as frames
import tasks
from comfy.decode import BadFrame
from comfy.http import ComfyHTTP, Uncertain, decode, require, without_credentials
from comfy.types import (
    BadResponse,
    Cached,
    ComfyError,
    Event,
    ExecutionFailed,
    Finished,
    Interrupted,
    NodeStarted,
    Output,
    Progress,
    PromptLost,
    PromptRejected,
    Queued,
    Resubmitted,
    Started,
    SubmitUnconfirmed,
    Unreachable,
)
from safe_text import server_line

log = structlog.get_logger(__name__)

BAD_FRAME_LOGS = 20  # per connection: a server that sends only garbage does not flood the log


class PromptRun:
    """One submitted prompt: its events in order, ending with exactly one `Finished`."""

    def __init__(self, prompt_id: str, graph: dict[str, Any]) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.started = False
        self.confirmed = False  # the server answered the POST: until then its silence means nothing
        self.heard = time.monotonic()  # when this prompt last had news: the watchdog's clock
        self.outputs: dict[str, Output] = {}
        self.ending: Finished | None = None  # the outcome seen before `executing null`
        self.finished: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def push(self, event: Event) -> None:
        self.heard = time.monotonic()
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


class ComfyClient(ComfyHTTP):
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
        server_id = without_credentials(base_url.rstrip("/"))
        # what messages call this server: never the URL itself, which may hold credentials
        super().__init__(base_url, headers=headers, timeout=timeout, name=name or f"ComfyUI at {server_id}")
        self.server_id = server_id  # who this server is in the store and the logs
        # stable across restarts when given: ComfyUI sends a prompt's events to its client_id only
        self.client_id = client_id or uuid.uuid4().hex
        self._idle_timeout = idle_timeout
        self._report_positions = report_positions  # costs a GET /queue per prompt: off where a scheduler knows better
        self._backoff = backoff
        self._runs: dict[str, PromptRun] = {}
        self._running_prompt: str | None = None
        self._connected = asyncio.Event()
        self._poked = asyncio.Event()
        self._ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._bad_frames = 0
        self.reconnects = 0
        self.failed_attempt: float | None = None  # when the latest failed connection attempt began
        self._log = log.bind(server=self.name, url=self.server_id)

    # lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> ComfyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP session and start the websocket loop; does not wait for the server."""
        self.start_http()
        self._tasks = [
            tasks.start(f"comfy-ws {self.name}", self._socket_loop, logger=self._log),
            tasks.start(f"comfy-watchdog {self.name}", self._watchdog, logger=self._log),
        ]

    def _spawn(self, coroutine: Any) -> None:
        """Run a short task in the background, holding a reference until it ends."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self._closing = True
        pending = [*self._tasks, *self._background]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for run in list(self._runs.values()):
            run.finish(Finished("error", run.outputs, ComfyError("The bot is shutting down.")))
        self._runs.clear()
        await self.close_http()

    def poke(self) -> None:
        """Try to reconnect now instead of at the end of the backoff (someone is waiting for this server)."""
        if not self._connected.is_set():
            self._poked.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def failed_since(self, moment: float) -> bool:
        """Whether a connection attempt that began at or after `moment` (monotonic) has failed."""
        return self.failed_attempt is not None and self.failed_attempt >= moment

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                await self._connected.wait()
        except TimeoutError:
            raise Unreachable(f"{self.name} is unreachable (no websocket connection).") from None

    # prompts -----------------------------------------------------------------

    async def submit(self, graph: dict[str, Any], *, prompt_id: str | None = None,
                     extra_data: dict[str, Any] | None = None) -> PromptRun:
        """Queue a workflow (API format). The run is registered before the POST.

        A POST whose answer is lost (timed out, connection dropped) is never repeated
        blindly: the prompt id is ours, so `/queue` and `/history` tell whether it arrived.
        Only if it did not is it posted once more, with the same id; if that answer is
        lost too and the prompt is still not found, SubmitUnconfirmed says so in words.
        """
        await self.wait_connected()
        prompt_id = prompt_id or uuid.uuid4().hex
        run = PromptRun(prompt_id, graph)
        self._runs[prompt_id] = run
        body: dict[str, Any] = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            for post in (1, 2):
                try:
                    await self._post_prompt(body)
                    run.confirmed = True
                    break
                except Uncertain as error:
                    self._log.warning("prompt_post_unanswered", prompt_id=prompt_id, post=post, error=str(error))
                    if await self._arrived(prompt_id):
                        run.confirmed = True
                        break
                    if post == 2:
                        raise SubmitUnconfirmed(
                            f"{self.name} did not confirm that it took this job, twice, so the bot stopped "
                            "rather than risk running it again. Please try again.") from None
                    run.push(Resubmitted())
        except PromptRejected as error:
            self._runs.pop(prompt_id, None)
            if getattr(error, "accepted", False):  # the valid outputs of a partly valid prompt would still run
                await self._quietly_cancel(prompt_id)
            raise
        except BaseException:
            self._runs.pop(prompt_id, None)
            raise
        self._log.info("prompt_submitted", prompt_id=prompt_id, nodes=len(graph))
        if self._report_positions and not run.started:
            self._spawn(self._report_position(run))
        return run

    async def _post_prompt(self, body: dict[str, Any]) -> None:
        status, raw = await self._request("POST", "/prompt", json_body=body)
        if status not in (200, 400):  # e.g. 401 or 413 from a proxy in front of ComfyUI
            raise BadResponse(f"ComfyUI answered {status} to POST /prompt.")
        reply = decode(raw, "POST /prompt")
        if status == 400 or (isinstance(reply, dict) and reply.get("node_errors")):
            rejected = PromptRejected.from_reply(reply)
            rejected.accepted = status == 200
            raise rejected
        require(reply, "prompt_id", "POST /prompt")

    async def _arrived(self, prompt_id: str) -> bool:
        """Whether the server has this prompt (queued, running or done), asking for a while if need be."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                running, pending = await self.queue()
                return prompt_id in running or prompt_id in pending or await self.history(prompt_id) is not None
            except ComfyError as error:
                if time.monotonic() >= deadline:
                    raise SubmitUnconfirmed(
                        f"{self.name} stopped answering while taking this job, so the bot cannot tell whether "
                        "it will run. Please try again in a while.") from error
            await asyncio.sleep(min(1.0, self._timeout / 4))

    async def attach(self, prompt_id: str, graph: dict[str, Any]) -> PromptRun:
        """Follow a prompt submitted earlier (by a previous process with the same client_id).

        If the server has already finished it, the run ends at once from `/history`;
        if the server knows nothing of it, it ends as lost.
        """
        await self.wait_connected()
        run = PromptRun(prompt_id, graph)
        run.confirmed = True
        self._runs[prompt_id] = run
        await self._reconcile([prompt_id])
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

    async def cancel(self, prompt_id: str) -> str:
        """Remove a waiting prompt from the queue, or interrupt it if it is running. Returns what
        happened: "removed" (it had not started), "interrupted" (it was running) or "gone"."""
        await self._request("POST", "/queue", json_body={"delete": [prompt_id]})
        running, pending = await self.queue()
        if prompt_id in running:
            await self._request("POST", "/interrupt", json_body={"prompt_id": prompt_id})
            return "interrupted"
        if prompt_id not in pending:
            finished = prompt_id in self._runs and await self.history(prompt_id) is not None
            await self._reconcile([prompt_id], vanished=Interrupted("Cancelled before it started."))
            return "gone" if finished else "removed"
        return "removed"

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
            began = time.monotonic()
            try:
                async with ws_connect(
                    self._ws_url(), additional_headers=self._headers, proxy=None,
                    open_timeout=self._timeout, ping_interval=10, ping_timeout=10,
                    max_size=64 * 1024 * 1024, max_queue=256,
                ) as socket:
                    await socket.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                    self._ws = socket
                    self._bad_frames = 0
                    self._connected.set()
                    delay = first
                    self._log.info("websocket_connected", reconnects=self.reconnects)
                    if self.reconnects:
                        self._spawn(self._reconcile_all())
                    async for message in socket:
                        self._on_message(message)
            except (OSError, TimeoutError, websockets.WebSocketException) as error:
                self._log.warning("websocket_down", error=f"{error.__class__.__name__}: {server_line(str(error))}",
                                  retry_in=round(delay, 2))
            except Exception:  # a bug on our side: log it, and reconnect as after any drop
                self._log.exception("websocket_reader_failed", retry_in=round(delay, 2))
            finally:
                self._ws = None
                if self._connected.is_set():
                    self._connected.clear()
                else:
                    self.failed_attempt = began
            if self._closing:
                return
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):  # poke() cuts the wait short
                await asyncio.wait_for(self._poked.wait(), random.uniform(delay / 2, delay))
            self._poked.clear()
            delay = min(delay * 2, ceiling)

    def _on_message(self, message: str | bytes) -> None:
        """Route one frame. A frame that does not decode is logged (briefly) and dropped."""
        try:
            if isinstance(message, bytes):
                self._on_binary(message)
            else:
                self._on_text(frames.parse_text(message))
        except BadFrame as error:
            self._bad_frame(message, str(error))
        except Exception as error:  # a shape nobody thought of: the reader must live on
            self._bad_frame(message, f"{error.__class__.__name__}: {error}")

    def _bad_frame(self, message: str | bytes, reason: str) -> None:
        self._bad_frames += 1
        if self._bad_frames <= BAD_FRAME_LOGS:
            self._log.warning("bad_websocket_message", reason=reason[:200], sample=frames.excerpt(message),
                              last_logged=self._bad_frames == BAD_FRAME_LOGS)

    def _on_text(self, frame: frames.Text) -> None:
        kind, data = frame.kind, frame.data
        if kind in ("status", "feature_flags"):  # queue lengths: the scheduler keeps its own
            return
        run = self._runs.get(frame.prompt_id or "")
        if run is None:
            return
        if kind == "execution_start":
            run.started = True
            self._running_prompt = run.prompt_id
            run.push(Started())
        elif kind == "execution_cached":
            run.push(Cached(frames.node_list(data.get("nodes"))))
        elif kind == "executing":
            node = frames.node_id(data.get("node"), nullable=True)
            if node is None:
                self._end(run)
            else:
                class_type = run.graph.get(node, {}).get("class_type", "") if isinstance(run.graph.get(node), dict) else ""
                run.push(NodeStarted(node, class_type if isinstance(class_type, str) else ""))
        elif kind == "progress":
            node = frames.node_id(data.get("node"), nullable=True)
            run.push(Progress(frames.count(data.get("value")), frames.count(data.get("max")), node))
        elif kind == "executed":
            output = frames.output(data)
            run.outputs[output.node] = output
            run.push(output)
        elif kind == "execution_success":
            run.ending = Finished("success", run.outputs)
        elif kind == "execution_error":
            run.ending = Finished("error", run.outputs, ExecutionFailed.from_data(data))
        elif kind == "execution_interrupted":
            run.ending = Finished("interrupted", run.outputs, Interrupted.from_data(data))
        else:  # progress_state and types added after this was written: news of the prompt all the same
            run.heard = time.monotonic()

    def _on_binary(self, message: bytes) -> None:
        kind, meta, payload = frames.parse_binary(message)
        if meta is None:
            return
        prompt_id = meta.get("prompt_id") if kind == 4 else self._running_prompt
        run = self._runs.get(prompt_id if isinstance(prompt_id, str) else "")
        if run is not None:
            run.push(frames.preview(meta, payload))

    def _end(self, run: PromptRun) -> None:
        if run.ending is None:  # the outcome message was missed (reconnect): history knows it
            self._spawn(self._reconcile([run.prompt_id]))
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
        """Reconcile each open prompt that has heard nothing for `idle_timeout`.

        Silence is judged per prompt, not per socket: broadcast `status` frames can keep
        a socket busy while the events of our prompt no longer arrive. One look per
        silent period per prompt; a prompt that finished unheard means the socket is deaf.
        """
        while not self._closing:
            await asyncio.sleep(max(self._idle_timeout / 3, 0.05))
            if not self._connected.is_set():
                continue
            now = time.monotonic()
            silent = [run for run in self._runs.values() if run.confirmed and now - run.heard >= self._idle_timeout]
            if not silent:
                continue
            for run in silent:
                run.heard = now
            self._log.info("prompts_silent", seconds=self._idle_timeout, prompts=len(silent))
            if await self._reconcile([run.prompt_id for run in silent]) and self._ws is not None:
                self._log.warning("websocket_deaf", reason="the server finished prompts whose events never came")
                await self._ws.close()

    async def _reconcile_all(self) -> int:
        """After a reconnect: settle every prompt the server confirmed (the others' POSTs still decide)."""
        return await self._reconcile([prompt_id for prompt_id, run in self._runs.items() if run.confirmed])

    async def _reconcile(self, prompt_ids: list[str], vanished: ComfyError | None = None) -> int:
        """Settle these open prompts from one `/queue` and their `/history`; returns how many ended."""
        open_ids = [prompt_id for prompt_id in prompt_ids if prompt_id in self._runs]
        if not open_ids:
            return 0
        ended = 0
        try:
            running, pending = await self.queue()
            for prompt_id in open_ids:
                if prompt_id in running or prompt_id in pending:
                    continue
                entry = await self.history(prompt_id)
                run = self._runs.get(prompt_id)
                if run is None:  # the socket finished it meanwhile
                    continue
                if entry is None:
                    lost = vanished or PromptLost(
                        "ComfyUI lost this job (the server restarted or the job was removed). Please try again.")
                    outcome = "interrupted" if isinstance(lost, Interrupted) else "error"
                    self._finish(run, Finished(outcome, run.outputs, lost))
                else:
                    self._finish(run, Finished.from_history(entry, run.outputs))
                ended += 1
        except ComfyError as error:
            self._log.warning("reconcile_failed", prompts=len(open_ids), error=str(error))
        return ended
