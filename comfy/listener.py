"""The websocket half of a ComfyUI client: one long-lived connection, and its events routed by prompt id.

The connection is kept open forever (exponential backoff with jitter between attempts; `poke()` cuts
a wait short). Each frame is routed to the `PromptRun` of its prompt; `executing` with `node: null`
ends every prompt. A frame that does not decode is logged (briefly) and dropped. `/history` is read
only to reconcile: after a reconnect, or when a prompt of ours has heard nothing for `idle_timeout`
(even while broadcast frames keep the socket busy). A part of client.ComfyClient (it uses the
client's state and its HTTP calls), kept apart so the client itself is about its prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import websockets
from websockets.asyncio.client import connect as ws_connect

from comfy import decode as frames
from comfy.decode import BadFrame
from comfy.prompt_run import PromptRun
from comfy.types import (
    Cached,
    ComfyError,
    ExecutionFailed,
    Finished,
    Interrupted,
    NodeStarted,
    Progress,
    PromptLost,
    Started,
)
from safe_text import server_line

BAD_FRAME_LOGS = 20  # per connection: a server that sends only garbage does not flood the log


class Listener:
    """The methods of client.ComfyClient that read its websocket and settle its prompts."""

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
