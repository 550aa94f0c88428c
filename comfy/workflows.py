"""Workflows as data: API-format graphs plus a declarative binding of named parameters.

A workflow set is a folder holding graphs exported with ComfyUI's "Save (API)"
and one `workflows.toml` that says, for each workflow, which node inputs each
named parameter sets and which output nodes hold the result:

    [txt2img]
    file = "txt2img.json"
    outputs = ["9"]
    [txt2img.params]
    prompt = "6.text"            # node id, a dot, the input name
    seed = ["3.seed"]            # or a list: one value set in several places

A workflow that loads a checkpoint may say where a LoRA chain attaches: the node outputs that give
MODEL and CLIP. The bot then inserts one LoraLoader per LoRA a job asks for (the `loras` value, a
list of [file, strength]) between them and whatever used them, and none when none is asked for:

    [txt2img]
    lora = { model = "4.0", clip = "4.1" }

A workflow may extend another: the same graph, parameters and outputs, with
whole nodes replaced (a ControlNet type is the canny workflow with another
preprocessor in node 11):

    [controlnet_depth]
    extends = "controlnet_canny"
    nodes."11" = { class_type = "DepthAnythingV2Preprocessor", inputs = { image = ["10", 0] } }

Binding returns a fresh copy of the graph with the values set as JSON values:
nothing is templated as text, so any prompt (quotes, braces, emoji) is safe.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BINDINGS_FILE = "workflows.toml"


class WorkflowError(Exception):
    """A workflow set cannot be used; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Target:
    node: str
    input: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a workflow does not fit a server, named precisely enough to fix."""

    file: str
    node: str
    class_type: str
    input: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.short()}"

    def short(self) -> str:
        """Without the file: what a user may be shown."""
        if not self.node:
            return self.message
        where = f"node {self.node}"
        if self.class_type:
            where += f" ({self.class_type})"
        if self.input:
            where += f", input '{self.input}'"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Workflow:
    name: str
    path: Path
    graph: Mapping[str, Any]  # the template: never mutated, copied by bind()
    params: Mapping[str, tuple[Target, ...]]
    outputs: tuple[str, ...]
    extends: str | None = None  # the workflow this one is, with some nodes replaced
    lora: tuple[Target, Target] | None = None  # the outputs (node, output index) that give MODEL and CLIP

    def takes(self, name: str) -> bool:
        """Whether the value `name` means something to this workflow (a parameter, or `loras`)."""
        return name in self.params or (name == LORAS and self.lora is not None)

    def applied(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values this workflow binds: its parameters' and any LoRAs asked for (which bind and
        validate refuse, in words, when the workflow says nowhere where they attach)."""
        return {name: value for name, value in values.items() if name in self.params or (name == LORAS and value)}

    @property
    def file(self) -> str:
        """Where it comes from, as problems name it."""
        return self.path.as_posix() + (f" as [{self.name}]" if self.extends else "")

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A fresh graph with each named value set on its node inputs."""
        unknown = sorted(name for name in values if not self.takes(name))
        if LORAS in unknown:
            raise WorkflowError([f"{self.file}: {NO_LORA}"])
        if unknown:
            raise WorkflowError([f"{self.path}: no binding for parameter(s) {', '.join(unknown)}"])
        graph = copy.deepcopy(dict(self.graph))
        for name, value in values.items():
            if name == LORAS:
                _with_loras(graph, self.lora, value)
                continue
            if isinstance(value, list) and len(self.params[name]) == 1 and value and all(isinstance(v, str) for v in value):
                _batched(graph, self.params[name][0], value)
                continue
            if not isinstance(value, str | int | float | bool):
                raise WorkflowError([f"{self.path}: parameter {name} must be text or a number, not {type(value).__name__}"])
            for target in self.params[name]:
                graph[target.node]["inputs"][target.input] = value
        return graph

    def bound_inputs(self, names: set[str]) -> set[tuple[str, str]]:
        return {(t.node, t.input) for name in names for t in self.params.get(name, ())}


LORAS = "loras"
LORA_LIMIT = 3
NO_LORA = "the workflow says nowhere where LoRAs attach (lora = { model = ..., clip = ... } in workflows.toml)"


def _with_loras(graph: dict[str, Any], attach: tuple[Target, Target], loras: Any) -> None:
    """One LoraLoader per (file, strength), chained from the MODEL and CLIP outputs `attach` names;
    whatever took those outputs takes the last LoRA's instead."""
    if not isinstance(loras, list | tuple) or len(loras) > LORA_LIMIT or not all(
            isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int | float) and not isinstance(pair[1], bool) for pair in loras):
        raise WorkflowError([f"loras must be at most {LORA_LIMIT} pairs of a file name and a strength"])
    if not loras:
        return
    sources = [[target.node, int(target.input)] for target in attach]
    consumers = [(body["inputs"], key, sources.index(value)) for body in graph.values()
                 for key, value in body["inputs"].items() if value in sources]
    number = max((int(node) for node in graph if node.isdigit()), default=0)
    model, clip = sources
    for name, strength in loras:
        number += 1
        graph[str(number)] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": name, "strength_model": float(strength),
            "strength_clip": float(strength)}}
        model, clip = [str(number), 0], [str(number), 1]
    for inputs, key, which in consumers:
        inputs[key] = (model, clip)[which]


def _batched(graph: dict[str, Any], target: Target, names: list[str]) -> None:
    """Several files where the graph loads one (an upscale of a whole batch): the loading node is
    copied once per further file, the images are joined with core ImageBatch nodes, and whatever
    took the first node's image takes the batch."""
    graph[target.node]["inputs"][target.input] = names[0]
    if len(names) == 1:
        return
    first, consumers = [target.node, 0], []
    for body in graph.values():
        consumers += [(body["inputs"], key) for key, value in body["inputs"].items() if value == first]
    number = max((int(node) for node in graph if node.isdigit()), default=0)
    joined = first
    for name in names[1:]:
        loader, batch = str(number + 1), str(number + 2)
        number += 2
        graph[loader] = copy.deepcopy(graph[target.node])
        graph[loader]["inputs"][target.input] = name
        graph[batch] = {"class_type": "ImageBatch", "inputs": {"image1": joined, "image2": [loader, 0]}}
        joined = [batch, 0]
    for inputs, key in consumers:
        inputs[key] = joined


def load_set(directory: Path) -> dict[str, Workflow]:
    """Every workflow of a set, checked for shape; raises WorkflowError listing all problems."""
    bindings_path = directory / BINDINGS_FILE
    try:
        bindings = tomllib.loads(bindings_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError([f"{bindings_path}: missing (a workflow set needs one, see README)"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise WorkflowError([f"{bindings_path}: not valid TOML ({error})"]) from None
    workflows, problems = {}, []
    for name, spec in sorted(bindings.items(), key=lambda item: isinstance(item[1], dict) and "extends" in item[1]):
        try:
            if isinstance(spec, dict) and "extends" in spec:
                workflows[name] = _extend(directory, name, spec, workflows)
            else:
                workflows[name] = _load_one(directory, name, spec)
        except WorkflowError as error:
            problems.extend(error.problems)
    if problems:
        raise WorkflowError(problems)
    return workflows


def _load_one(directory: Path, name: str, spec: Any) -> Workflow:
    where = f"{directory / BINDINGS_FILE} [{name}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
        raise WorkflowError([f"{where}: needs file = \"<graph>.json\""])
    path = directory / spec["file"]
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError([f"{path}: file not found (named by {where})"]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise WorkflowError([f"{path}: not valid JSON ({error})"]) from None
    problems = _shape_problems(path, graph)
    if problems:
        raise WorkflowError(problems)
    params: dict[str, tuple[Target, ...]] = {}
    for param, targets in (spec.get("params") or {}).items():
        listed = [targets] if isinstance(targets, str) else targets
        if not isinstance(listed, list) or not all(isinstance(t, str) and "." in t for t in listed):
            problems.append(f"{where}: parameter {param} must be \"node.input\" or a list of them")
            continue
        params[param] = tuple(Target(*t.rsplit(".", 1)) for t in listed)
        for target in params[param]:
            if target.node not in graph:
                problems.append(f"{where}: parameter {param} points at node {target.node}, which {path.name} does not have")
    lora = _lora_attachment(spec.get("lora"), graph, where, problems)
    outputs = tuple(str(node) for node in spec.get("outputs") or ())
    if not outputs:
        problems.append(f"{where}: needs outputs = [\"<node id>\", ...], the nodes whose files are the result")
    problems += [f"{where}: output node {node} is not in {path.name}" for node in outputs if node not in graph]
    if problems:
        raise WorkflowError(problems)
    return Workflow(name, path, graph, params, outputs, lora=lora)


def _lora_attachment(spec: Any, graph: Mapping[str, Any], where: str, problems: list[str]) -> tuple[Target, Target] | None:
    """`lora = { model = "4.0", clip = "4.1" }`: the node outputs a LoRA chain starts from."""
    if spec is None:
        return None
    outputs = [spec.get(key) for key in ("model", "clip")] if isinstance(spec, dict) else []
    if len(outputs) != 2 or not all(isinstance(o, str) and o.count(".") == 1 and o.rsplit(".", 1)[1].isdigit()
                                    for o in outputs):
        problems.append(f"{where}: lora must be {{ model = \"<node>.<output>\", clip = \"<node>.<output>\" }}")
        return None
    targets = tuple(Target(*o.rsplit(".", 1)) for o in outputs)
    problems += [f"{where}: lora points at node {t.node}, which is not in the graph" for t in targets if t.node not in graph]
    return targets  # type: ignore[return-value]


def _extend(directory: Path, name: str, spec: dict[str, Any], loaded: Mapping[str, Workflow]) -> Workflow:
    """A workflow that is another one with whole nodes replaced (`nodes`), or added."""
    where = f"{directory / BINDINGS_FILE} [{name}]"
    base = loaded.get(spec["extends"]) if isinstance(spec["extends"], str) else None
    if base is None:
        raise WorkflowError([f"{where}: extends {spec['extends']!r}, which is not a workflow of this set "
                             "(a workflow can only extend one that does not extend another)"])
    unknown = sorted(set(spec) - {"extends", "nodes"})
    if unknown:
        raise WorkflowError([f"{where}: a workflow that extends another takes only extends and nodes, "
                             f"not {', '.join(unknown)}"])
    nodes = spec.get("nodes") or {}
    graph = {**copy.deepcopy(dict(base.graph)), **({str(k): v for k, v in nodes.items()} if isinstance(nodes, dict) else {})}
    problems = _shape_problems(base.path, graph) if isinstance(nodes, dict) else [f"{where}: nodes must be a table"]
    if problems:
        raise WorkflowError([f"{where}: {problem}" for problem in problems])
    return Workflow(name, base.path, graph, base.params, base.outputs, extends=base.name, lora=base.lora)


def _shape_problems(path: Path, graph: Any) -> list[str]:
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        return [f"{path}: this is ComfyUI's UI format; export it with \"Save (API)\" instead"]
    if not isinstance(graph, dict) or not graph:
        return [f"{path}: expected an API-format workflow (an object of nodes)"]
    problems = []
    for node, body in graph.items():
        if not isinstance(body, dict) or not isinstance(body.get("class_type"), str) or not isinstance(body.get("inputs"), dict):
            problems.append(f"{path}: node {node} needs a class_type and an inputs object")
    return problems


# validation against a server's /object_info -----------------------------------


def validate(workflow: Workflow, object_info: Mapping[str, Any], values: Mapping[str, Any]) -> list[Problem]:
    """What in this workflow, bound with `values`, the server would refuse.

    Inputs bound to parameters missing from `values` (the user's prompt, an
    uploaded image) are only known at run time and are not checked here.
    """
    if values.get(LORAS) and workflow.lora is None:
        return [Problem(workflow.file, "", "", "", NO_LORA)]
    graph = workflow.bind(values)
    unknown = workflow.bound_inputs(set(workflow.params) - set(values))
    problems = []
    for node, body in graph.items():
        problems += _node_problems(workflow.file, node, body, graph, object_info, unknown)
    return problems


def _node_problems(file: str, node: str, body: dict[str, Any], graph: Mapping[str, Any],
                   object_info: Mapping[str, Any], unknown: set[tuple[str, str]]) -> list[Problem]:
    class_type = body["class_type"]
    info = object_info.get(class_type)
    if info is None:
        return [Problem(file, node, class_type, "", "this node class is not installed on the server (a custom node?)")]
    declared = {**(info.get("input") or {}).get("required", {}), **(info.get("input") or {}).get("optional", {})}
    required = (info.get("input") or {}).get("required", {})
    problems = [Problem(file, node, class_type, name, "required input is missing")
                for name in required if name not in body["inputs"]]
    for name, value in body["inputs"].items():
        if name not in declared:
            problems.append(Problem(file, node, class_type, name, f"the server's {class_type} has no such input"))
        elif isinstance(value, list):
            if len(value) != 2 or str(value[0]) not in graph:
                problems.append(Problem(file, node, class_type, name, f"links to node {value[0] if value else '?'}, which is not in the workflow"))
        elif (node, name) not in unknown:
            message = value_problem(declared[name], value)
            if message:
                problems.append(Problem(file, node, class_type, name, message))
    return problems


def value_problem(spec: Any, value: Any) -> str | None:
    """Why `value` does not fit an input spec of /object_info, or None when it fits."""
    if not isinstance(spec, list) or not spec:
        return None
    kind, options = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    if choices is not None:
        if value in choices:
            return None
        if not choices:
            return f"{value!r} is not available: the server has none installed"
        shown = ", ".join(map(str, choices[:15])) + (" …" if len(choices) > 15 else "")
        return f"{value!r} is not available (the server has: {shown})"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "INT" and not isinstance(value, int)):
            return f"{value!r} is not {'an integer' if kind == 'INT' else 'a number'}"
        if "min" in options and value < options["min"]:
            return f"{value} is below the minimum {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{value} is above the maximum {options['max']}"
    elif kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not text"
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not true or false"
    return None
