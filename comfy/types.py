"""What a ComfyUI server reports: typed events of a prompt, and typed errors.

Every error's `str()` is a sentence a person can act on; the fields keep the
details for logs and for code that decides what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from safe_text import clip, server_line, summarize


# errors ----------------------------------------------------------------------


class ComfyError(Exception):
    """Something went wrong with ComfyUI; the message says what, in words."""


class Unreachable(ComfyError):
    """The server did not answer (refused, timed out, no websocket)."""


class BadResponse(ComfyError):
    """The server answered, but not as ComfyUI does (a 500, invalid JSON, missing fields)."""


class SubmitUnconfirmed(ComfyError):
    """POST /prompt may or may not have reached the server, twice; running it again could run it a third time."""


class TimedOut(ComfyError):
    """The job ran past JOB_TIMEOUT and was cancelled on the server."""


class PromptLost(ComfyError):
    """The server no longer knows the prompt: not queued, not running, no history."""


class ResultExpired(ComfyError):
    """A paid remote backend (RunPod) no longer holds a finished job's result; not run again."""


@dataclass(frozen=True)
class InputProblem:
    """One problem ComfyUI found in a node; the fields are whole (for logs), `str()` is short."""

    node: str
    class_type: str
    input: str
    message: str
    allowed: tuple[str, ...] = ()

    def __str__(self) -> str:
        node, class_type = server_line(self.node, 40), server_line(self.class_type, 80)
        name = server_line(self.input, 80)
        where = f"node {node} ({class_type})" if class_type else f"node {node}"
        message = clip(self.message, 300)
        text = f"{where}, input '{name}': {message}" if name else f"{where}: {message}"
        if self.allowed:
            shown = ", ".join(clip(" ".join(name.split()), 60) for name in self.allowed[:10])
            text += f" (allowed: {shown}{' …' if len(self.allowed) > 10 else ''})"
        return text


class PromptRejected(ComfyError):
    """ComfyUI refused the workflow at validation; `problems` names each node and input.

    `str()` shows the first three problems and counts the rest; `problems` keeps them all.
    """

    def __init__(self, summary: str, problems: list[InputProblem]) -> None:
        self.summary = summary
        self.problems = problems
        lines = summarize([f"- {problem}" for problem in problems], sep="\n", limit=350)
        super().__init__(f"{clip(summary, 400)}\n{lines}" if problems else clip(summary, 400))

    @classmethod
    def from_reply(cls, reply: Any) -> PromptRejected:
        """From the body of a refused POST /prompt, whatever its shape."""
        if not isinstance(reply, dict):
            return cls("ComfyUI rejected the workflow without saying why.", [])
        error = reply.get("error")
        error = error if isinstance(error, dict) else {"message": error}
        node_errors = reply.get("node_errors")
        problems = []
        for node, entry in (node_errors.items() if isinstance(node_errors, dict) else ()):
            entry = entry if isinstance(entry, dict) else {"errors": [entry]}
            items = entry.get("errors")
            for item in items if isinstance(items, list) else [items]:
                problems.append(_problem(str(node), _text(entry.get("class_type")), item))
        if problems:
            return cls("ComfyUI rejected the workflow:", problems)
        message = server_line(_text(error.get("message")), 200) or "Prompt outputs failed validation"
        details = server_line(_text(error.get("details")), 200)
        return cls(f"ComfyUI rejected the workflow: {message}" + (f" ({details})" if details else ""), [])


def _text(value: Any) -> str:
    """Any JSON value as text ("" for null)."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def _problem(node: str, class_type: str, item: Any) -> InputProblem:
    if not isinstance(item, dict):
        return InputProblem(node, class_type, "", server_line(_text(item)) or "invalid (the server gave no reason)")
    extra = item.get("extra_info") if isinstance(item.get("extra_info"), dict) else {}
    name = _text(extra.get("input_name"))
    details = _text(item.get("details"))
    kind = _text(item.get("type"))
    said = server_line(_text(item.get("message")), 200) or server_line(kind, 100) or "invalid"
    allowed: tuple[str, ...] = ()
    if kind == "value_not_in_list":
        allowed = tuple(str(option) for option in _combo_options(extra.get("input_config")))
        message = f"{clip(repr(extra.get('received_value')), 80)} is not one of the allowed values"
        if not allowed:
            message += " (the server offers none: is the model file installed?)"
    elif kind in ("value_smaller_than_min", "value_bigger_than_max", "required_input_missing"):
        message = said
    elif kind == "custom_validation_failed":
        message = server_line(details.split(" - ", 1)[-1]) or said
    else:
        details = server_line(details, 200)
        message = f"{said}: {details}" if details else said
    return InputProblem(node, class_type, name, message, allowed)


def _combo_options(config: Any) -> list[Any]:
    """The options of a combo input in either of ComfyUI's two formats."""
    if isinstance(config, list) and config:
        if isinstance(config[0], list):
            return config[0]
        if config[0] == "COMBO" and len(config) > 1 and isinstance(config[1], dict):
            options = config[1].get("options")
            return options if isinstance(options, list) else []
    return []


class ExecutionFailed(ComfyError):
    """A node raised while the prompt ran (out of memory, a bad file, ...).

    `str()` gives the first line of the server's message, sanitized; the fields keep it whole.
    """

    def __init__(self, node_id: str, node_type: str, exception_type: str, exception_message: str) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        text = server_line(exception_message) or server_line(exception_type, 100) or "an error without a message"
        if "OutOfMemory" in exception_type or "out of memory" in exception_message.lower():
            text = f"the server ran out of GPU memory ({text}); try a smaller size or batch"
        where = f"{server_line(node_id, 40) or '?'} ({server_line(node_type, 80) or '?'})"
        super().__init__(f"ComfyUI failed in node {where}: {text}")

    @classmethod
    def from_data(cls, data: Any) -> ExecutionFailed:
        data = data if isinstance(data, dict) else {}
        return cls(_text(data.get("node_id")) or "?", _text(data.get("node_type")) or "?",
                   _text(data.get("exception_type")), _text(data.get("exception_message")))


class Interrupted(ComfyError):
    """The prompt was interrupted or cancelled before it finished."""

    @classmethod
    def from_data(cls, data: Any) -> Interrupted:
        data = data if isinstance(data, dict) else {}
        node = server_line(_text(data.get("node_id")), 40)
        where = f" at node {node} ({server_line(_text(data.get('node_type')), 80) or '?'})" if node else ""
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
class Resubmitted:
    """The first POST of this prompt went unanswered and was not found on the server, so it was
    posted once more with the same id: if the first one arrives late after all, it runs twice."""


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
        """Files and texts from a node's `ui` dict; entries of any other shape are skipped."""
        files = tuple(
            FileRef(item["filename"], _string(item.get("subfolder")), _string(item.get("type")) or "output")
            for key in ("images", "gifs", "videos", "audio")
            for item in _items(ui.get(key))
            if isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]
        )
        return cls(node, files, tuple(text for text in _items(ui.get("text")) if isinstance(text, str)))


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
        entry = entry if isinstance(entry, dict) else {}
        recorded = entry.get("outputs")
        for node, ui in (recorded.items() if isinstance(recorded, dict) else ()):
            if isinstance(ui, dict):
                outputs[str(node)] = Output.from_ui(str(node), ui)
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        if status.get("status_str") == "success":
            return cls("success", outputs)
        for message in _items(status.get("messages")):
            if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
                continue
            kind, data = message
            if kind == "execution_error":
                return cls("error", outputs, ExecutionFailed.from_data(data))
            if kind == "execution_interrupted":
                return cls("interrupted", outputs, Interrupted.from_data(data))
        return cls("error", outputs, ComfyError("ComfyUI recorded the job as failed without details."))


def _items(value: Any) -> list[Any]:
    """A JSON list, or nothing: a server's odd shapes are skipped, never iterated as strings."""
    return value if isinstance(value, list) else []


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


Event = Queued | Resubmitted | Started | Cached | NodeStarted | Progress | Preview | Output | Finished
