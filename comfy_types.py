"""What a ComfyUI server reports: typed events of a prompt, and typed errors.

Every error's `str()` is a sentence a person can act on; the fields keep the
details for logs and for code that decides what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


# errors ----------------------------------------------------------------------


class ComfyError(Exception):
    """Something went wrong with ComfyUI; the message says what, in words."""


class Unreachable(ComfyError):
    """The server did not answer (refused, timed out, no websocket)."""


class BadResponse(ComfyError):
    """The server answered, but not as ComfyUI does (a 500, invalid JSON, missing fields)."""


class PromptLost(ComfyError):
    """The server no longer knows the prompt: not queued, not running, no history."""


@dataclass(frozen=True)
class InputProblem:
    node: str
    class_type: str
    input: str
    message: str
    allowed: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"node {self.node} ({self.class_type})" if self.class_type else f"node {self.node}"
        text = f"{where}, input '{self.input}': {self.message}" if self.input else f"{where}: {self.message}"
        if self.allowed:
            shown = ", ".join(self.allowed[:10]) + (" …" if len(self.allowed) > 10 else "")
            text += f" (allowed: {shown})"
        return text


class PromptRejected(ComfyError):
    """ComfyUI refused the workflow at validation; `problems` names each node and input."""

    def __init__(self, summary: str, problems: list[InputProblem]) -> None:
        self.summary = summary
        self.problems = problems
        lines = [summary] + [f"- {problem}" for problem in problems]
        super().__init__("\n".join(lines))

    @classmethod
    def from_reply(cls, reply: Any) -> PromptRejected:
        if not isinstance(reply, dict):
            return cls("ComfyUI rejected the workflow without saying why.", [])
        error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        problems = []
        for node, entry in (reply.get("node_errors") or {}).items():
            class_type = entry.get("class_type", "")
            for item in entry.get("errors") or []:
                problems.append(_problem(str(node), class_type, item))
        message = error.get("message") or "Prompt outputs failed validation"
        details = error.get("details") or ""
        if problems:
            summary = "ComfyUI rejected the workflow:"
        else:
            summary = f"ComfyUI rejected the workflow: {message}" + (f" ({details})" if details else "")
        return cls(summary, problems)


def _problem(node: str, class_type: str, item: dict[str, Any]) -> InputProblem:
    extra = item.get("extra_info") or {}
    name = extra.get("input_name") or ""
    details = item.get("details") or ""
    kind = item.get("type", "")
    config = extra.get("input_config")
    allowed: tuple[str, ...] = ()
    if kind == "value_not_in_list":
        allowed = tuple(str(option) for option in _combo_options(config))
        message = f"{extra.get('received_value')!r} is not one of the allowed values"
        if not allowed:
            message += " (the server offers none: is the model file installed?)"
    elif kind in ("value_smaller_than_min", "value_bigger_than_max", "required_input_missing"):
        message = item.get("message", kind)
    elif kind == "custom_validation_failed":
        message = details.split(" - ", 1)[-1]
    else:
        message = f"{item.get('message', kind)}: {details}" if details else item.get("message", kind)
    return InputProblem(node, class_type, name, message, allowed)


def _combo_options(config: Any) -> list[Any]:
    """The options of a combo input in either of ComfyUI's two formats."""
    if isinstance(config, list) and config:
        if isinstance(config[0], list):
            return config[0]
        if config[0] == "COMBO" and len(config) > 1 and isinstance(config[1], dict):
            return list(config[1].get("options") or [])
    return []


class ExecutionFailed(ComfyError):
    """A node raised while the prompt ran (out of memory, a bad file, ...)."""

    def __init__(self, node_id: str, node_type: str, exception_type: str, exception_message: str) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        text = exception_message.strip().splitlines()[0] if exception_message.strip() else exception_type
        if "OutOfMemory" in exception_type or "out of memory" in exception_message.lower():
            text = f"the server ran out of GPU memory ({text}); try a smaller size or batch"
        super().__init__(f"ComfyUI failed in node {node_id} ({node_type}): {text}")

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ExecutionFailed:
        return cls(str(data.get("node_id", "?")), str(data.get("node_type", "?")),
                   str(data.get("exception_type", "")), str(data.get("exception_message", "")))


class Interrupted(ComfyError):
    """The prompt was interrupted or cancelled before it finished."""

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Interrupted:
        node = data.get("node_id")
        where = f" at node {node} ({data.get('node_type', '?')})" if node else ""
        return cls(f"The job was interrupted{where}.")


# events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file on the server, as `/view` wants it. The names are the server's: never a local path."""

    filename: str
    subfolder: str = ""
    type: str = "output"


@dataclass(frozen=True, slots=True)
class Queued:
    position: int  # prompts ahead of this one on the server


@dataclass(frozen=True, slots=True)
class Started:
    pass


@dataclass(frozen=True, slots=True)
class Cached:
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: str
    class_type: str


@dataclass(frozen=True, slots=True)
class Progress:
    value: int
    max: int
    node: str | None


@dataclass(frozen=True, slots=True)
class Preview:
    image: bytes
    mime: str
    node: str | None


@dataclass(frozen=True, slots=True)
class Output:
    node: str
    files: tuple[FileRef, ...] = ()
    text: tuple[str, ...] = ()

    @classmethod
    def from_ui(cls, node: str, ui: dict[str, Any]) -> Output:
        files = tuple(
            FileRef(str(item["filename"]), str(item.get("subfolder") or ""), str(item.get("type") or "output"))
            for key in ("images", "gifs", "videos", "audio")
            for item in ui.get(key) or ()
            if isinstance(item, dict) and item.get("filename")
        )
        return cls(node, files, tuple(str(text) for text in ui.get("text") or ()))


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a prompt. `outputs` holds what output nodes produced, even on error."""

    outcome: Literal["success", "error", "interrupted"]
    outputs: dict[str, Output] = field(default_factory=dict)
    error: ComfyError | None = None

    @classmethod
    def from_history(cls, entry: dict[str, Any], seen: dict[str, Output]) -> Finished:
        """The outcome as `/history` records it (used after a reconnect or a silent socket)."""
        outputs = dict(seen)
        for node, ui in (entry.get("outputs") or {}).items():
            outputs[str(node)] = Output.from_ui(str(node), ui or {})
        status = entry.get("status") or {}
        if status.get("status_str") == "success":
            return cls("success", outputs)
        for kind, data in status.get("messages") or ():
            if kind == "execution_error":
                return cls("error", outputs, ExecutionFailed.from_data(data))
            if kind == "execution_interrupted":
                return cls("interrupted", outputs, Interrupted.from_data(data))
        return cls("error", outputs, ComfyError("ComfyUI recorded the job as failed without details."))


Event = Queued | Started | Cached | NodeStarted | Progress | Preview | Output | Finished
