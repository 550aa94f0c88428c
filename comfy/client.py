"""One ComfyUI server: HTTP through one aiohttp session, events through one websocket.

The client picks every prompt id itself and registers it before the POST, so no
event can arrive for a prompt nobody listens to. Events are routed by prompt id
from the single long-lived websocket; `executing` with `node: null` ends every
prompt. `/history` is read only to reconcile: after a reconnect, or when a
prompt of ours has heard nothing for `idle_timeout` (even while broadcast
frames keep the socket busy).

Whatever the server sends, the client stays up: a frame that does not decode
is logged and dropped, the reader is supervised and restarted if it ever
ends, and every body read is capped. This module knows nothing of Discord.

`ComfyClient` is the one object callers use; this module submits, attaches and
cancels prompts. Its parts: http.py (the HTTP calls), listener.py (the
websocket reader, event routing and reconciliation) and prompt_run.py (one
prompt's events, as the caller follows them).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import structlog

import tasks
from comfy.http import ComfyHTTP, Uncertain, decode, require, without_credentials
from comfy.listener import Listener
from comfy.prompt_run import PromptRun
from comfy.types import (
    BadResponse,
    ComfyError,
    Finished,
    Interrupted,
    PromptRejected,
    Queued,
    Resubmitted,
    SubmitUnconfirmed,
    Unreachable,
)

log = structlog.get_logger(__name__)


class ComfyClient(Listener, ComfyHTTP):
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
