"""The bot's voice: every sentence a person reads is made here or follows these rules.

- Talk to the person, in sentence case and full sentences that end with a period.
- One emoji per state, always the same one (`EMOJI`); none elsewhere.
- Numbers with their unit and a correct plural ("1 job", "2 jobs", "12 s").
- Names people chose or typed (models, styles) in backticks, never in Python quotes.
- Nothing internal: no user ids (mention people), job or generation numbers, server names or
  URLs, node class names, file names or lists of a server's files. The details go to the log.
- A failure says what went wrong, then what to do next.

Nothing here imports discord: the scheduler uses it for the reasons it records, views for
what it shows.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from comfy.types import (
    BadResponse,
    ComfyError,
    ExecutionFailed,
    Interrupted,
    PromptLost,
    PromptRejected,
    ResultExpired,
    SubmitUnconfirmed,
    TimedOut,
    Unreachable,
)
from jobs import kinds
from jobs.pipelines import PipelineError
from image_gen import RequestError
from results.media import BadResult
from results.folder import OutputError
from backends.runpod_client import WorkerFailed
from safe_text import clip
from comfy.workflows import WorkflowError

EMOJI = {"waiting": "⏳", "running": "🎨", "done": "✅", "failed": "❌", "cancelled": "🚫", "limit": "⏱️"}
FAR = 10  # positions from here on are shown as "more than 10": no edit for every step of a long queue
LOG_HINT = "the operator can see the details in the bot's log"
OOPS = f"{EMOJI['failed']} Something went wrong on the bot's side; nothing was started. {LOG_HINT.capitalize()}."
UNUSABLE = "ComfyUI is not working properly right now: it answers, but not the way ComfyUI does"
RESULT_NOUNS = {"upscale": "upscaled image"}  # a kind's result, where it is not the kind's noun
MODEL_INPUTS = {"ckpt_name", "model_name", "unet_name", "vae_name", "lora_name", "clip_name", "control_net_name"}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def and_list(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def code(name: Any) -> str:
    """A name as people see it: in backticks, without backticks of its own, not too long."""
    return f"`{clip(str(name).replace('`', ''), 80)}`"


def model_name(value: str) -> str:
    """A checkpoint file as people know it: no folder, no extension."""
    return PurePosixPath(value.replace("\\", "/")).stem or value


def noun(kind: str, count: int = 1) -> str:
    word = kinds.noun(kind)
    return plural(count, word).split(" ", 1)[1] if count != 1 else word


def seconds(value: float) -> str:
    value = max(0, round(value))
    if value < 120:
        return f"{value} s"
    if value < 3600:
        return f"{value // 60} min {value % 60} s"
    return f"{value // 3600} h {value % 3600 // 60} min" if value < 2 * 86400 else f"{value // 86400} days"


def about(value: float) -> str:
    """An estimate, rounded so it does not flicker: "10 s", "1 min 30 s", "4 min", "2 h 10 min"."""
    value = max(0.0, value)
    if value < 57.5:
        return f"{max(5, round(value / 5) * 5)} s"
    if value < 300:
        rounded = round(value / 30) * 30
        return f"{rounded // 60} min" + (f" {rounded % 60} s" if rounded % 60 else "")
    if value < 3600:
        return f"{round(value / 60)} min"
    return seconds(round(value / 600) * 600)


# waiting ----------------------------------------------------------------------------------


def ahead(position: int) -> str:
    """How many jobs are ahead of a waiting job (position 0 is next)."""
    if position == 0:
        return "yours is next"
    if position >= FAR:
        return f"more than {FAR} jobs are ahead of yours"
    return f"{plural(position, 'job')} {'is' if position == 1 else 'are'} ahead of yours"


def wait_clause(position: int | None, giving_up_in: float | None = None) -> str:
    """Where a waiting job stands, the same words in its message and in /status."""
    if giving_up_in is not None:
        return f"ComfyUI is not answering; trying again, giving up in {seconds(giving_up_in)}"
    return ahead(position) if position is not None else "it is in the queue"


def waiting(kind: str, position: int | None, giving_up_in: float | None = None, eta: float | None = None) -> str:
    """The waiting message; with `eta`, the seconds the bot expects until the result."""
    expected = f"; about {about(eta)} to your result" if eta is not None and giving_up_in is None else ""
    return f"{EMOJI['waiting']} Waiting for your {noun(kind)}: {wait_clause(position, giving_up_in)}{expected}."


def stage(request: dict) -> str:
    """The first line of a pipeline step's progress message: which pipeline, and the stage it is on."""
    pipeline = request.get("pipeline")
    if not isinstance(pipeline, dict):
        return ""
    steps, index = pipeline.get("steps") or [], int(pipeline.get("step") or 0)
    action = steps[index].get("action", "") if index < len(steps) else ""
    return f"Pipeline **{pipeline.get('name')}**, stage {index + 1} of {len(steps)}: {action}\n"


def cost_line(request: dict) -> str:
    """The line a priced job's message starts with (jobs/credits.py)."""
    charged = request.get("credits")
    if not isinstance(charged, dict):
        return ""
    return f"This costs {plural(int(charged['price']), 'credit')}; you have {int(charged['balance'])} left.\n"


def short_of_credits(cost: int, balance: int) -> str:
    """Why a job is refused for want of credits, and what the person can do."""
    owed = " (you owe the bot credits)" if balance < 0 else ""
    return (f"this costs {plural(cost, 'credit')} and you have {plural(balance, 'credit')}{owed}. /credits buy "
            "adds more where the operator sells them, and someone can give you theirs with /credits gift")


def starting(kind: str) -> str:
    return f"{EMOJI['waiting']} Starting: your {noun(kind)} is next on the GPU."


def cancelled(by_user_id: int, kind: str = "", prompt: str = "") -> str:
    """The job's message once it is cancelled: which job, and who cancelled it."""
    what = f"{noun(kind)} of “{clip(' '.join(prompt.split()), 60)}”" if prompt.strip() else noun(kind)
    return f"{EMOJI['cancelled']} Cancelled by <@{by_user_id}>: the {what}."


def result_noun(kind: str, count: int = 1) -> str:
    """What a finished job made: an upscale makes an "upscaled image"."""
    word = RESULT_NOUNS.get(kind)
    return noun(kind, count) if word is None else plural(count, word).split(" ", 1)[1]


def ready(kind: str, user_id: int, count: int = 1) -> str:
    things = result_noun(kind, count)
    return f"{EMOJI['done']} <@{user_id}>, your {things} {'is' if count == 1 else 'are'} ready."


def ready_elsewhere(kind: str, user_id: int, channel_id: int, url: str) -> str:
    """Where a job marked for age-restricted channels was posted (NSFW_CHANNEL_ID)."""
    return f"{EMOJI['done']} <@{user_id}>, your {result_noun(kind)} is ready in <#{channel_id}>, an age-restricted channel: {url}"


def failed(kind: str, reason: str, user_id: int | None = None) -> str:
    """`reason` is a sentence (from `failure`); the owner is mentioned when the message notifies them."""
    who = f"<@{user_id}>, your" if user_id is not None else "Your"
    return clip(f"{EMOJI['failed']} {who} {noun(kind)} could not be made: {_sentence(_lower_first(reason))}", 1900)


def not_queued(reason: str) -> str:
    """A request refused before anything was queued (a bad flag): only the person who asked sees it."""
    first = reason.split(" ", 1)[0]
    text = reason[:1].lower() + reason[1:] if first in ("At", "No", "There") else _lower_first(reason)
    return clip(f"I didn't queue that: {_sentence(text)}", 1900)


def model_not_available(name: str, offered: list[str]) -> str:
    """A model preset whose checkpoint no server has now (flags.py says the same of a flag)."""
    others = f"Models you can use: {clip(', '.join(map(code, offered)), 1500)}." if offered else \
        "Leave the model out to use the default."
    return f"The model {code(name)} is not available on this server right now. {others}"


def limit(text: str) -> str:
    return f"{EMOJI['limit']} {text}"


def too_many_jobs(active: int, allowed: int) -> str:
    return (f"You already have {plural(active, 'job')} waiting or running, and the limit is {allowed}. "
            "Try again when one has finished.")


def cannot_use(reason: str) -> str:
    """A button's image cannot be used as an input."""
    return clip(f"{EMOJI['failed']} That image cannot be used: {_sentence(_lower_first(reason))}", 1900)


# why a job failed -----------------------------------------------------------------------------


def failure(error: BaseException) -> str:
    """What went wrong, in words a person can act on; the error itself goes to the log."""
    if isinstance(error, PromptRejected):
        if any(problem.input in MODEL_INPUTS for problem in error.problems):
            return "a model it needs is not installed on the server. Choose another model, or ask the operator."
        return f"the server refused these settings. Try other settings; {LOG_HINT}."
    if isinstance(error, ExecutionFailed):
        if "GPU memory" in str(error):
            return "the server ran out of GPU memory. Try a smaller size or fewer images."
        return f"the server hit an error while making it. Try again; if it happens again, {LOG_HINT}."
    if isinstance(error, TimedOut):
        return f"{_lower_first(str(error))} Try a smaller size or fewer steps."
    if isinstance(error, Interrupted):
        return "it was stopped on the server before it finished. Try again."
    if isinstance(error, ResultExpired):
        return f"{_lower_first(str(error))} Start it again if you still want it."
    if isinstance(error, PromptLost):
        return "the server restarted or lost it. Try again."
    if isinstance(error, SubmitUnconfirmed):
        return ("ComfyUI did not confirm that it took the job, so the bot stopped rather than risk "
                "running it twice. Try again.")
    if isinstance(error, Unreachable):
        return "ComfyUI is not answering. Try again in a few minutes."
    if isinstance(error, BadResponse):
        return f"ComfyUI answered in a way the bot does not understand. Try again later; {LOG_HINT}."
    if isinstance(error, WorkerFailed):  # its text is the sentence: the worker's reason, made safe
        return str(error)
    if isinstance(error, ComfyError):
        return f"ComfyUI could not finish it. Try again; {LOG_HINT}."
    if isinstance(error, BadResult):  # its text names the file: not for people
        return f"the server sent a broken file instead of the result. Try again; {LOG_HINT}."
    if isinstance(error, RequestError | OutputError | PipelineError):  # sentences of our own, about the request
        return _sentence(str(error))
    if isinstance(error, WorkflowError):
        return f"this bot's workflow does not fit the server. {LOG_HINT.capitalize()}."
    return f"something went wrong on the bot's side. {LOG_HINT.capitalize()}."


def unservable(models: dict[str, Any], reasons: list[str]) -> str:
    """Why no server can run a job (the reasons, for the log, name nodes and files)."""
    text = " ".join(reasons)
    if "is not available" in text or "none installed" in text:
        named = ", ".join(code(model_name(str(value))) for value in models.values())
        return f"the model {named} is not installed on any server. Choose another model, or ask the operator."
    if "workflow set" in text and "has no" in text:
        return f"this bot is not set up for this kind of job yet (its workflows lack one). Ask the operator; {LOG_HINT}."
    if "cannot be used" in text or "/object_info" in text:
        return f"{UNUSABLE}. Try again later; {LOG_HINT}."
    return f"this job needs something that is not installed on any server. Ask the operator; {LOG_HINT}."


def unreachable() -> str:
    return "ComfyUI is not answering right now. Try again in a few minutes."


def _lower_first(text: str) -> str:
    """A sentence that follows a colon: "The image is ..." becomes "the image is ..."; names stay."""
    first = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if first in ("The", "A", "An", "This", "That", "It", "Your") else text


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


DATABASE_AWAY = "the bot cannot reach its database right now, so it takes no new jobs. Try again in a minute."
