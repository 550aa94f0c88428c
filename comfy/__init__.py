"""The ComfyUI client: one server's HTTP calls and websocket events, its workflows and what it reports.

`ComfyClient` (client.py, with http.py and listener.py) submits, follows and cancels prompts, each a
`PromptRun` (prompt_run.py); types.py names its events and errors, decode.py reads its websocket
frames, workflows.py loads and validates the workflow files. Knows nothing of Discord or of jobs.
"""

from comfy.client import ComfyClient
from comfy.prompt_run import PromptRun
from comfy.types import ComfyError

__all__ = ["ComfyClient", "ComfyError", "PromptRun"]
