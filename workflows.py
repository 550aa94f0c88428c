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

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A fresh graph with each named value set on its node inputs."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise WorkflowError([f"{self.path}: no binding for parameter(s) {', '.join(unknown)}"])
        graph = copy.deepcopy(dict(self.graph))
        for name, value in values.items():
            if not isinstance(value, str | int | float | bool):
                raise WorkflowError([f"{self.path}: parameter {name} must be text or a number, not {type(value).__name__}"])
            for target in self.params[name]:
                graph[target.node]["inputs"][target.input] = value
        return graph

    def bound_inputs(self, names: set[str]) -> set[tuple[str, str]]:
        return {(t.node, t.input) for name in names for t in self.params.get(name, ())}


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
    for name, spec in bindings.items():
        try:
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
    outputs = tuple(str(node) for node in spec.get("outputs") or ())
    if not outputs:
        problems.append(f"{where}: needs outputs = [\"<node id>\", ...], the nodes whose files are the result")
    problems += [f"{where}: output node {node} is not in {path.name}" for node in outputs if node not in graph]
    if problems:
        raise WorkflowError(problems)
    return Workflow(name, path, graph, params, outputs)


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
    graph = workflow.bind(values)
    unknown = workflow.bound_inputs(set(workflow.params) - set(values))
    problems = []
    for node, body in graph.items():
        problems += _node_problems(workflow.path.as_posix(), node, body, graph, object_info, unknown)
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
