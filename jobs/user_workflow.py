"""The workflows people bring (/workflow add): reading the file someone sent, and running one (the job
kind "workflow").

A job records the workflow's id and version (so it can be told exactly what it ran, and Reroll runs
that version again), the values the person asked for, and what the version needs of a server
(`needs`: its node classes and model files, as bound), so the pool sends it only to a server that
has them without reading the store while it chooses (backends/pool.py, USER_WORKFLOW). When it runs,
the version's graph and bindings are read from the store (`load`, the kind's hook that
jobs/running.py calls) and bound through comfy.discover's `Bindings.workflow`: the code that binds
the operator's workflows.

A request without a workflow (`bot.py check --smoke`) runs the operator's txt2img graph as if someone
had brought it: its bindings found the way a brought workflow's are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backends.pool import USER_WORKFLOW
from backends.runner import Engine, JobResult, run_workflow
from comfy.discover import Bindings, find_bindings
from comfy.embedded import EmbeddedError, read_embedded
from comfy.graph import model_files
from comfy.ui_format import BYPASSED, MUTED, NOTES, PRIMITIVE, REROUTE, UUID, ConversionError, detect_format, \
    parse_json, to_api
from comfy.vetting import MAX_BYTES as JSON_BYTES, provider, vet
from comfy.workflows import Workflow, WorkflowError
from config import Settings
from image_gen import MIN_SIDE, RequestError, prompt_values, resolve_seed
from safe_text import clip

NAME = "workflow"  # the job kind, and the name its Workflow runs under
# what a person may ask of a workflow, and how to name each one when the workflow has no place for it
ASKED = {"prompt": "a prompt", "negative_prompt": "a negative prompt", "seed": "a seed", "steps": "steps",
         "cfg": "cfg", "sampler": "a sampler", "scheduler": "a scheduler", "width": "a width", "height": "a height",
         "batch": "a batch size", "checkpoint": "a model", "loras": "LoRAs"}
PLAIN = ("seed", "steps", "cfg", "sampler", "scheduler", "width", "height", "batch", "checkpoint")


def workflow_of(graph: Mapping[str, Any], bindings: Mapping[str, Any], label: str) -> Workflow:
    """A stored version (its API graph and its bindings' JSON) as a Workflow that binds like the operator's."""
    return Bindings.from_json(bindings).workflow(NAME, Path(label), graph)


def untaken(workflow: Workflow, asked: Iterable[str]) -> list[str]:
    """What of `asked` (request keys) the workflow has no place for, in words."""
    asked = set(asked)
    return [words for key, words in ASKED.items() if key in asked and not workflow.takes(key)]


def own_value(workflow: Workflow, name: str) -> Any:
    """The value the workflow itself holds for a parameter (its first place), or None."""
    targets = workflow.params.get(name) or ()
    return workflow.graph[targets[0].node]["inputs"].get(targets[0].input) if targets else None


def values(workflow: Workflow, request: Mapping[str, Any]) -> dict[str, Any]:
    """What a job binds: the person's prompt through their style; the negative prompt (theirs, else the
    workflow's own) with the operator's SFW negative; every other value asked for."""
    found: dict[str, Any] = {key: request[key] for key in PLAIN if request.get(key) is not None}
    negative = request.get("negative_prompt") or own_value(workflow, "negative_prompt") or ""
    prompts = prompt_values({**request, "negative_prompt": negative}, required=False)
    if request.get("prompt"):
        found["prompt"] = prompts["prompt"]
    if request.get("negative_prompt") or request.get("sfw_negative"):
        found["negative_prompt"] = prompts["negative_prompt"]
    if request.get("loras"):
        found["loras"] = [[str(name), float(strength)] for name, strength in request["loras"]]
    return workflow.applied(found)


def _within(name: str, value: Any, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high} (got {value})")


def request_for(settings: Settings, workflow_id: int, name: str, version: int, graph: Mapping[str, Any],
                bindings: Mapping[str, Any], request: Mapping[str, Any], asked: Iterable[str],
                servers: list[Mapping[str, Any]], labels: list[str]) -> dict[str, Any]:
    """The request of a job that runs version `version` of a workflow, from a composed request; `asked`
    names the values the person asked for here (a workflow that cannot take one is refused in words),
    `servers` the node lists known now (`labels` names them), against which it is vetted again.
    Raises RequestError with the sentence to show."""
    workflow = workflow_of(graph, bindings, f"{name} v{version}")
    missing = untaken(workflow, asked)
    if missing:
        raise RequestError(f"the workflow `{name}` has no place for {_listed(missing)}; leave "
                           f"{'it' if len(missing) == 1 else 'them'} out, or choose another workflow")
    images = sorted(key for key in workflow.params if key.startswith("image"))
    if images:
        raise RequestError(f"the workflow `{name}` starts from an input image, which /generate cannot give it")
    request = {key: value for key, value in request.items() if value is not None}
    _within("width", request.get("width"), MIN_SIDE, settings.max_width)
    _within("height", request.get("height"), MIN_SIDE, settings.max_height)
    _within("steps", request.get("steps"), 1, settings.max_steps)
    _within("batch", request.get("batch"), 1, settings.max_batch)
    if workflow.takes("seed"):
        request["seed"] = resolve_seed(request.get("seed"))
    try:
        bound = workflow.bind(values(workflow, request))
    except WorkflowError as error:
        raise RequestError(f"the workflow `{name}` cannot take these values ({error})") from None
    if servers:  # the operator's deny list and the servers may have changed since it was saved
        verdict = vet(bound, servers, settings, names=labels)
        if not verdict.ok:
            raise RequestError(" ".join(verdict.refusals))
    known = merged(servers)
    checkpoint = request.get("checkpoint") or own_value(workflow, "checkpoint")
    request.update(workflow_id=workflow_id, workflow_version=version, workflow_name=name, needs={
        "params": sorted([*workflow.params, *(["loras"] if workflow.lora else [])]),
        "nodes": sorted({body["class_type"] for body in bound.values()}),
        "files": [[bound[node]["class_type"], key, file] for node, key, file in model_files(bound, known)],
        **({"checkpoint": checkpoint} if isinstance(checkpoint, str) else {})})
    return request


def merged(infos: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Every node class some server has (the first server's description of each)."""
    found: dict[str, Any] = {}
    for info in reversed(infos):
        found.update(info)
    return found


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def read(data: bytes, infos: list[dict]) -> tuple[dict, str]:
    """(API graph, what was uploaded: api, ui, png or webp) of a file someone brought: a workflow's JSON in
    either format (the editor's converted with the servers' node lists `infos`, as the editor does) or
    an image ComfyUI saved; ValueError with the sentence to show."""
    if data.startswith(b"\x89PNG") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        source = "png" if data.startswith(b"\x89PNG") else "webp"
        try:
            prompt, editor = read_embedded(data)
        except EmbeddedError as error:
            raise ValueError(f"{_capital(str(error))}.") from None
        if prompt is None and editor is None:
            raise ValueError("The image holds no ComfyUI workflow (ComfyUI's Save Image embeds one; "
                             "an image edited or re-saved elsewhere loses it).")
        workflow = prompt if isinstance(prompt, dict) and prompt else editor
    else:
        source = ""
        try:
            workflow = parse_json(data, JSON_BYTES)
        except ConversionError as error:
            raise ValueError(f"{_capital(str(error))}.") from None
    try:
        shape = detect_format(workflow)
        source = source or shape
        if shape == "ui":
            info = merged(infos)
            _refuse_unknown(workflow, info, infos)
            workflow = to_api(workflow, info)
    except ConversionError as error:
        raise ValueError(f"{_capital(str(error))}.") from None
    return workflow, source


def _refuse_unknown(workflow: dict, info: dict, infos: list[dict]) -> None:
    """An editor's workflow using node classes no server has cannot be converted: name them and their package
    (group nodes, "workflow>name", and subgraphs are left to to_api, which says why they cannot be)."""
    missing: dict[str, list[str]] = {}
    for node in workflow.get("nodes") or ():
        kind = node.get("type") if isinstance(node, dict) else None
        if not isinstance(kind, str) or node.get("mode") in (MUTED, BYPASSED) or kind in NOTES \
                or kind in (REROUTE, PRIMITIVE) or UUID.fullmatch(kind) or ">" in kind or kind in info:
            continue
        missing.setdefault(kind, []).append(str(node.get("id")))
    if missing and infos:
        named = "; ".join(f"{kind} for node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)} "
                          f"({provider(kind, infos)})" for kind, nodes in missing.items())
        raise ValueError(f"No server can run this workflow: none has the node class{'es' if len(missing) > 1 else ''} "
                         f"{clip(named, 1500)}.")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# the kind's declaration (jobs/kinds.py) --------------------------------------------------------------


def workflow_name(request: Mapping[str, Any]) -> str:
    """What a server must be able to run: the person's workflow (its needs), or for a smoke test txt2img."""
    return f"{USER_WORKFLOW}{request['workflow_id']}" if request.get("workflow_id") is not None else "txt2img"


def models(settings: Settings, request: Mapping[str, Any]) -> dict[str, Any]:
    """Its checkpoint first (the model a server may still have loaded), then the node classes and model
    files the version needs, for the pool (backends/pool.py)."""
    needs = request.get("needs") or {}
    if not needs:
        return {}
    return {"checkpoint": needs.get("checkpoint"), "nodes": tuple(needs.get("nodes") or ()),
            "files": tuple(tuple(file) for file in needs.get("files") or ())}


def prepare(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """A new seed for a workflow that takes one (a Reroll's request has none), resolved once."""
    if "seed" in (request.get("needs") or {}).get("params", ()):
        request["seed"] = resolve_seed(request.get("seed"))
    return request


async def load(store: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """The run options of a job: the version it runs, read from the store."""
    if request.get("workflow_id") is None:
        return {}
    version = await store.version(int(request["workflow_id"]), int(request["workflow_version"]))
    if version is None:
        raise RequestError("the workflow it runs is no longer in the bot's store")
    return {"workflow": workflow_of(version.graph, version.bindings,
                                    f"{request.get('workflow_name') or 'workflow'} v{version.version}")}


async def run(engine: Engine, request: Mapping[str, Any], source: Path | None, options: dict[str, Any]) -> JobResult:
    options = dict(options)
    workflow = options.pop("workflow", None)
    if workflow is None:  # the smoke test: the operator's txt2img, its bindings found as for a brought one
        graph = engine.workflow("txt2img").graph
        workflow = find_bindings(graph).workflow(NAME, Path("txt2img (found)"), graph)
    engine = dataclasses.replace(engine, workflows={NAME: workflow})
    return await run_workflow(engine, NAME, values(workflow, request), **options)
