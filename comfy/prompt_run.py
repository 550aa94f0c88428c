"""One prompt on a ComfyUI server as its caller sees it: its events in order, then one `Finished`.

The client (client.py) makes a `PromptRun` when it submits or attaches a prompt, and its websocket
reader (listener.py) pushes the prompt's events into it; RunPod's adapter (backends/runpod.py) makes
them too, so the runner follows both alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from comfy.types import Event, Finished, Output


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
