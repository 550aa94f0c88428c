"""Pipelines: a named list of steps (generate 768x768 -> upscale 2x -> img2img "detail" at 0.3 -> animate), run
as one job. Knows nothing of Discord; the scheduler runs the steps (jobs/stages.py).

A step is an action with its values and, optionally, a condition (`when = "width < 1024"`, jobs/conditions.py)
over the values of the result before it; a step whose condition does not hold is skipped, and the result
says so. The first step makes an image from the prompt (generate); each later one takes the result before
it: upscale, img2img, zoom and animate an image, upscale and interpolate a video (the video steps where this
bot has those kinds of job). Each step runs as a job of its kind: crash recovery, cancel and GPU time and cost
are the scheduler's, per step.

Pipelines come from the operator's TOML file (PIPELINES_FILE, one table per pipeline with a `steps` array of
tables), from a line of text (`parse_steps`: "generate 768x768 -> upscale 2x when width < 1024 -> animate"),
and from the chain of jobs that led to a result (`from_chain`). All three are checked by the same `check`.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs import kinds
from jobs.conditions import Condition, ConditionError
from video_gen import VIDEO_FACTORS

MAX_STEPS = 8
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NAME_RULE = "1 to 32 characters (a to z, 0 to 9, - and _), starting with a letter or digit"
SEPARATOR = re.compile(r"\s*(?:->|→|;)\s*")
VIDEO_KINDS = frozenset({"animate", "interpolate", "video_upscale", "text_to_video"})
DETAIL_STRENGTH = 0.3  # an img2img step without a strength: a detail pass that keeps the picture
# the names a condition may use: the values of the result before the step, and the step's own number (1-based)
VALUES = frozenset({"width", "height", "batch", "frames", "fps", "seed", "steps", "cfg", "strength", "factor",
                    "zoom", "kind", "media", "step"})


class PipelineError(ValueError):
    """A pipeline or step that cannot be used; str() is one sentence saying what and why."""


@dataclass(frozen=True)
class Action:
    """What a step does: the job kind that runs it, per the media it takes."""

    kinds: Mapping[str | None, str]  # media taken (None: the first step) -> job kind
    values: Mapping[str, tuple[type, Any, Any]]  # the values it may set: type, and the least and most (or choices)
    describe: str


ACTIONS = {
    "generate": Action({None: "txt2img"}, {"width": (int, 64, 16384), "height": (int, 64, 16384),
                                           "steps": (int, 1, 500), "cfg": (float, 1.0, 30.0), "batch": (int, 1, 16)},
                       "make images from the prompt (first step only)"),
    "img2img": Action({"image": "img2img"}, {"strength": (float, 0.05, 1.0), "prompt": (str, 0, 500)},
                      "redraw the image; strength 0.05 keeps it, 1 redraws it all; a prompt with {prompt} in it "
                      "rewrites the prompt, other text is added to it"),
    "upscale": Action({"image": "upscale", "video": "video_upscale"}, {"factor": (int, (2, 4, 8), None)},
                      "upscale the image (or every frame of a video) 2x, 4x or 8x"),
    "zoom": Action({"image": "outpaint"}, {"zoom": (float, (1.5, 2.0), None)}, "zoom out 1.5x or 2x"),
    "animate": Action({"image": "animate"}, {"frames": (int, 1, 1024), "fps": (int, 1, 60), "motion": (int, 1, 1023)},
                      "animate the image into a video"),
    "interpolate": Action({"video": "interpolate"}, {}, "double a video's frame rate"),
}
ALIASES = {"txt2img": "generate", "detail": "img2img", "vary": "img2img", "outpaint": "zoom",
           "video_upscale": "upscale", "animation": "animate"}


@dataclass(frozen=True)
class Step:
    action: str  # a key of ACTIONS
    values: dict[str, Any] = field(default_factory=dict)
    when: str | None = None

    def label(self) -> str:
        """The step in a few words: "upscale 2x", "img2img 0.3 'detail'", "generate 768×768"."""
        v = self.values
        parts = [self.action]
        if v.get("width") and v.get("height"):
            parts.append(f"{v['width']}×{v['height']}")
        for key, unit in (("factor", "x"), ("zoom", "x")):
            if key in v:
                parts.append(f"{v[key]:g}{unit}")
        if "strength" in v:
            parts.append(f"{v['strength']:g}")
        if v.get("prompt"):
            parts.append(repr(str(v["prompt"])[:40]))
        if "frames" in v:
            parts.append(f"{v['frames']} frames")
        if "fps" in v:
            parts.append(f"{v['fps']} fps")
        return " ".join(parts) + (f" when {self.when}" if self.when else "")

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, **self.values, **({"when": self.when} if self.when else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "a step") -> Step:
        if not isinstance(data, Mapping):
            raise PipelineError(f"{where} is not a table of values.")
        values = dict(data)
        action, when = values.pop("action", values.pop("kind", None)), values.pop("when", None)
        if not isinstance(action, str) or not action.strip():
            raise PipelineError(f"{where} has no action: write one of {', '.join(ACTIONS)}.")
        action = ALIASES.get(action.strip().lower(), action.strip().lower())
        if action not in ACTIONS:
            raise PipelineError(f"{where} asks for {action!r}, which is not a step: use one of {', '.join(ACTIONS)}.")
        if when is not None and not isinstance(when, str):
            raise PipelineError(f"{where}'s condition must be text, like \"width < 1024\".")
        return cls(action, {key: _checked(action, key, value, where) for key, value in values.items()}, when)


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    description: str = ""
    operator: bool = True  # the operator's (the TOML file); False: a person's own
    kinds: tuple[str, ...] = ()  # the job kind each step runs as, as `check` found them

    def summary(self) -> str:
        return " → ".join(step.label() for step in self.steps)

    def to_json(self) -> list[dict[str, Any]]:
        return [step.to_json() for step in self.steps]


def media_of(kind: str) -> str:
    """What a job of that kind makes: "video" or "image"."""
    return "video" if kind in VIDEO_KINDS else "image"


def article(media: str) -> str:
    return f"an {media}" if media == "image" else f"a {media}"


def check_name(name: str) -> str:
    cleaned = name.strip().lower() if isinstance(name, str) else ""
    if not NAME.fullmatch(cleaned):
        raise PipelineError(f"A pipeline name is {NAME_RULE}.")
    return cleaned


def check(name: str, steps: Sequence[Step], description: str = "", *, operator: bool = True) -> Pipeline:
    """A pipeline whose steps can run in this order on this bot, or PipelineError saying which step cannot."""
    name = check_name(name)
    if not 1 <= len(steps) <= MAX_STEPS:
        raise PipelineError(f"A pipeline has 1 to {MAX_STEPS} steps (this one has {len(steps)}).")
    media: str | None = None
    step_kinds = []
    for number, step in enumerate(steps, start=1):
        where = f"Step {number} ({step.action})"
        action = ACTIONS[step.action]
        if media not in action.kinds:
            takes = [m for m in action.kinds if m]
            raise PipelineError(
                f"{where} must be the first step." if media is not None and None in action.kinds else
                f"A pipeline starts with generate, not {step.action}." if media is None else
                f"{where} takes {' or '.join(map(article, takes))}, but the step before it makes {article(media)}.")
        kind = action.kinds[media]
        if kind not in kinds.KINDS:
            raise PipelineError(f"{where} needs {kind} jobs, which this bot does not run.")
        if kind == "video_upscale" and step.values.get("factor", 2) not in VIDEO_FACTORS:
            raise PipelineError(f"{where}: a video is upscaled {' or '.join(f'{f}x' for f in VIDEO_FACTORS)}.")
        if step.when is not None:
            if number == 1:
                raise PipelineError("The first step runs always: it cannot have a condition.")
            try:
                Condition.parse(step.when, set(VALUES))
            except ConditionError as error:
                raise PipelineError(f"{where}: {error}") from None
        made = media_of(kind)
        if step.when is not None and made != media and number < len(steps):
            raise PipelineError(f"{where} makes {article(made)} only when its condition holds, so the steps after it could "
                                "not know what they take: give it no condition, or make it the last step.")
        media = made
        step_kinds.append(kind)
    if len(description) > 200:
        raise PipelineError("A pipeline's description has at most 200 characters.")
    return Pipeline(name, tuple(steps), description, operator, tuple(step_kinds))


def load(path: Path) -> dict[str, Pipeline]:
    """The operator's pipelines from the TOML file at `path` ({} when there is none), or PipelineError naming
    the file, the pipeline and what is wrong."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PipelineError(f"{path} cannot be read: {error}") from None
    pipelines = {}
    for name, table in data.items():
        where = f"{path}: [{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("steps"), list):
            raise PipelineError(f"{where} needs a steps list: [[{name}.steps]] tables, one per step.")
        try:
            steps = [Step.from_json(step, f"step {number}") for number, step in enumerate(table["steps"], start=1)]
            pipeline = check(name, steps, str(table.get("description") or ""))
        except PipelineError as error:
            raise PipelineError(f"{where}: {error}") from None
        pipelines[pipeline.name] = pipeline
    return pipelines


def parse_steps(text: str) -> list[Step]:
    """Steps from a line of text: "generate 768x768 -> upscale 2x when width < 1024 -> img2img 0.3 'detail'
    -> animate 16 frames 8 fps". Each step: its action, then its values (WxH a size, Nx a factor or a
    zoom, a number from 0 to 1 a strength, "N frames", "N fps", "N steps", quoted text a prompt, key=value),
    then `when` and a condition."""
    if not isinstance(text, str) or not text.strip():
        raise PipelineError("Write the steps, like: generate 768x768 -> upscale 2x -> animate")
    if len(text) > 1000:
        raise PipelineError("The steps may take at most 1000 characters.")
    return [_parse_step(part, number) for number, part in enumerate(_split(text), start=1)]


def from_chain(chain: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Step]:
    """The steps that made a result, from the jobs that led to it, oldest first: (kind, request) each."""
    by_kind = {kind: action for action, spec in ACTIONS.items() for kind in spec.kinds.values()}
    steps = []
    for kind, request in chain:
        action = by_kind.get(kind)
        if action is None:
            raise PipelineError(f"A {kinds.noun(kind)} made from {kind} cannot be a pipeline step.")
        values = {key: request[key] for key in ACTIONS[action].values if request.get(key) is not None}
        if action == "generate" and request.get("width") and request.get("height"):
            values = {"width": request["width"], "height": request["height"], **values}
        if action == "img2img":
            values.pop("prompt", None)  # the person's prompt is the pipeline's
        steps.append(Step(action, {key: _checked(action, key, value, "a step") for key, value in values.items()}))
    return steps


def values_of(kind: str, params: Mapping[str, Any], files: int, step: int) -> dict[str, Any]:
    """What a condition sees: the result's values (None where it has none), its kind and media, and the step."""
    values: dict[str, Any] = dict.fromkeys(VALUES)
    values.update({key: params.get(key) for key in VALUES if key in params})
    values.update(batch=files, kind=kind, media=media_of(kind), step=step)
    return values


def next_request(step: Step, made: Mapping[str, Any], kind: str, params: Mapping[str, Any],
                 file: str) -> tuple[str, dict[str, Any]]:
    """The job kind and request of a step after the first: it takes `file`, the result of a job of `kind`
    whose request was `made` and whose shown values are `params`, and keeps the person's choices."""
    media = media_of(kind)
    action = ACTIONS[step.action]
    if media not in action.kinds:
        raise PipelineError(f"the {step.action} step takes {' or '.join(article(m) for m in action.kinds if m)}, "
                            f"but the step before it made {article(media)}")
    job_kind = action.kinds[media]
    request = kinds.derived(made, params)
    request.update(input=file, upload_limit=made.get("upload_limit"))
    if media == "video":  # a video's own frame count and rate (interpolate doubles them)
        request.update({key: params[key] for key in ("frames", "fps") if params.get(key)})
    values = dict(step.values)
    if step.action == "img2img":
        prompt = str(values.pop("prompt", "") or "")
        person = str(request.get("prompt") or "")
        request["prompt"] = prompt.replace("{prompt}", person) if "{prompt}" in prompt else \
            ", ".join(part for part in (person, prompt) if part)
        request["strength"] = values.pop("strength", DETAIL_STRENGTH)
    elif step.action == "upscale":
        request["factor"] = values.pop("factor", 2)
    elif step.action == "zoom":
        request["zoom"] = values.pop("zoom", 2.0)
    request.update(values)
    return job_kind, {key: value for key, value in request.items() if value is not None}


def _checked(action: str, key: str, value: Any, where: str) -> Any:
    spec = ACTIONS[action].values.get(key)
    if spec is None:
        allowed = ", ".join(ACTIONS[action].values) or "no values"
        raise PipelineError(f"{where}: {action} takes {allowed}, not {key!r}.")
    kind, low, high = spec
    if kind is str:
        if not isinstance(value, str) or len(value) > high:
            raise PipelineError(f"{where}: {key} is text of at most {high} characters.")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise PipelineError(f"{where}: {key} must be {'a whole number' if kind is int else 'a number'}, not {value!r}.")
    value = kind(value)
    if isinstance(low, tuple):
        if value not in low:
            raise PipelineError(f"{where}: {key} is one of {', '.join(f'{c:g}' for c in low)}, not {value:g}.")
    elif not low <= value <= high:
        raise PipelineError(f"{where}: {key} must be between {low:g} and {high:g}, not {value:g}.")
    return value


def _split(text: str) -> list[str]:
    """The steps of a line, split at -> → and ; outside quotes."""
    parts, current, quote = [], "", None
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif (match := SEPARATOR.match(text, index)) and match.end() > index and match.group().strip():
            parts.append(current)
            current, index = "", match.end()
            continue
        current += char
        index += 1
    parts.append(current)
    return [part.strip() for part in parts if part.strip()] or [""]


TOKENS = (
    (re.compile(r"(\d+)x(\d+)$", re.I), lambda m, action: {"width": int(m[1]), "height": int(m[2])}),
    (re.compile(r"(\d+(?:\.\d+)?)x$", re.I), lambda m, action: {"zoom" if action == "zoom" else "factor": float(m[1])}),
    (re.compile(r"(0?\.\d+|1(?:\.0+)?|0)$"), lambda m, action: {"strength": float(m[1])}),
)


def _parse_step(part: str, number: int) -> Step:
    where = f"Step {number}"
    found = re.search(r"\s+when\s+", part)
    head, when = (part[:found.start()], part[found.end():]) if found else (part, "")
    try:
        tokens = shlex.split(head)
    except ValueError:
        raise PipelineError(f"{where} has a quote that is not closed: {part!r}.") from None
    if not tokens:
        raise PipelineError(f"{where} is empty: write an action such as upscale 2x.")
    values: dict[str, Any] = {"action": tokens[0]}
    action = ALIASES.get(tokens[0].lower(), tokens[0].lower())
    rest = tokens[1:]
    index = 0
    while index < len(rest):
        token = rest[index]
        following = rest[index + 1].lower() if index + 1 < len(rest) else ""
        if token.isdigit() and following in ("frames", "fps", "steps"):
            values[following] = int(token)
            index += 2
            continue
        if "=" in token:
            key, _, raw = token.partition("=")
            values[key.strip().lower()] = _number(raw)
        elif (found := next(((pattern.match(token), make) for pattern, make in TOKENS if pattern.match(token)), None)):
            values.update(found[1](found[0], action))
        elif any(quote + token + quote in head for quote in "'\""):
            values["prompt"] = token
        else:
            raise PipelineError(f"{where} ({tokens[0]}): the bot cannot read {token!r}; write values like 768x768, "
                                "2x, 0.3, \"more detail\", 16 frames, 8 fps or key=value.")
        index += 1
    if "factor" in values and float(values["factor"]).is_integer():
        values["factor"] = int(values["factor"])
    return Step.from_json({**values, **({"when": when.strip()} if when.strip() else {})}, where)


def _number(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw
