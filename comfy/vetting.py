"""Whether a workflow someone brings may be saved: small enough, allowed, runnable, and confined.

A user's workflow runs on the operator's GPUs with the operator's files, so before it is saved it
is held to four rules, each refusal one sentence naming the node, its class and the input:

- Size: the JSON, the number of nodes, and each value (its text length, list length and nesting)
  have bounds, so a hostile file cannot make the bot or ComfyUI spend memory or time on it.
- Deny list: node classes the operator forbids (WORKFLOW_DENY_NODES: class names or shell patterns,
  matched case-insensitively; "module:<pattern>" matches the python_module a server reports). The
  default (config.DEFAULT_DENY_NODES) names nodes that run code the workflow carries (anything
  called *python*, *exec*, *eval*, *shell*, *command*, efficiency-nodes' "Evaluate Integers"),
  that write files where the workflow says or fill the disk (WAS's "Image Save", "Save Text File",
  "Write to Video", "Export API", "Cache Node"; pysssss's SaveText; core CheckpointSave, ModelSave,
  LoraSave and the like, which write whole models), that read files anywhere (WAS's "Image Load",
  "Load Image Batch", "Load Text File"; VHS_LoadVideoPath and VHS_LoadImagesPath; KJNodes'
  LoadImagesFromFolderKJ; Inspire's LoadImagesFromDir and LoadPromptsFromFile), and that reach the
  network (*url*, *http*, *request*, *webhook*, *download*, and core's paid API nodes, whose
  python_module is comfy_api_nodes.*).
- Servers: every node class must be on some server that also has every model file the workflow
  names. A workflow no server can run is refused naming, per server, the classes it lacks (with
  the custom-node package that provides each, from a server that has it or from the shipped map
  node_packages.json) and the model files it lacks.
- Confinement: no text value may be a URL, an absolute path or climb with "..", except the prompt
  text of text encoders and the multi-line text boxes of ComfyUI's own nodes (a prompt may mention
  a web site); links must point at nodes that exist, at an output they have, and never in a loop.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from comfy.discover import TEXT_INPUTS
from comfy.graph import is_link, links, model_files, run_order
from config import DEFAULT_DENY_NODES

MAX_BYTES = 2 * 1024 * 1024  # the JSON of the whole workflow
MAX_NODES = 1000
MAX_TEXT = 20_000  # characters in one text value
MAX_ITEMS = 1000  # items in one list or object value, and inputs of one node
MAX_DEPTH = 4  # lists and objects within one input value
MAX_NAME = 200  # characters in a node id or class name
SHOWN = 20  # refusals listed before "and N more"
PACKAGES = Path(__file__).resolve().parent / "node_packages.json"
URL = re.compile(r"^\s*([a-z][a-z0-9+.-]*:[\\/]{2}|[\\/]{2})", re.IGNORECASE)
ABSOLUTE = re.compile(r"^\s*([\\/~]|[a-z]:)", re.IGNORECASE)
WRITES = re.compile(r"^(filename_prefix|output_path|output_dir|output_folder|save_path|save_dir)$")


@dataclass(frozen=True)
class Verdict:
    refusals: tuple[str, ...] = ()  # why the workflow may not be saved, one sentence each
    lacks: dict[str, list[str]] = field(default_factory=dict)  # per server: what it lacks to run it
    runnable: tuple[str, ...] = ()  # the servers that can run it

    @property
    def ok(self) -> bool:
        return not self.refusals

    def to_json(self) -> dict[str, Any]:
        return {"refusals": list(self.refusals), "lacks": dict(self.lacks), "runnable": list(self.runnable)}


@cache
def packages() -> dict[str, tuple[str, str]]:
    """Class name -> (package, URL) from the shipped map of popular custom node packs."""
    data = json.loads(PACKAGES.read_text(encoding="utf-8"))["packages"]
    return {name: (package, spec["url"]) for package, spec in data.items() for name in spec["classes"]}


def vet(workflow: Any, servers: list[Mapping[str, Any]], settings: Any = None, *,
        names: list[str] | None = None) -> Verdict:
    """Whether `workflow` (API-format JSON text, bytes or an already parsed dict) may be saved, and
    which of `servers` (each one's /object_info; `names` labels them, "server 1" ... by default) can run it."""
    names = names or [f"server {index + 1}" for index in range(len(servers))]
    graph, refusal = _parsed(workflow)
    if refusal:
        return Verdict((refusal,))
    refusals = _shape(graph)
    if refusals:
        return Verdict(tuple(refusals))
    deny = list(getattr(settings, "workflow_deny_nodes", DEFAULT_DENY_NODES))
    matched: dict[str, str | None] = {}
    for node in sorted(graph, key=_key):
        refusals += _denied(node, graph[node], deny, servers, matched)
        refusals += _values(node, graph[node], graph, servers)
    refusals += _cycle(graph)
    lacks = {name: _lacks(graph, info, servers) for name, info in zip(names, servers, strict=True)}
    runnable = tuple(name for name, missing in lacks.items() if not missing)
    if not runnable:
        if not servers:
            refusals.append("No server is known yet, so nothing can tell whether this workflow can run.")
        else:
            refusals.append("No server can run this workflow. " + " ".join(
                f"{name[:1].upper() + name[1:]} lacks {'; '.join(missing)}." for name, missing in lacks.items()))
    if len(refusals) > SHOWN:
        refusals = refusals[:SHOWN] + [f"... and {len(refusals) - SHOWN} more problems like these."]
    return Verdict(tuple(refusals), lacks, runnable)


def _key(node: str) -> tuple[int, int | str]:
    return (0, int(node)) if node.isdigit() else (1, node)


def _parsed(workflow: Any) -> tuple[Any, str | None]:
    """The graph, or why it cannot be read; the size bound is checked before parsing."""
    if isinstance(workflow, str | bytes | bytearray):
        size = len(workflow.encode("utf-8") if isinstance(workflow, str) else workflow)
        if size > MAX_BYTES:
            return None, f"The workflow is {size} bytes; the most it may be is {MAX_BYTES} bytes."
        try:
            return json.loads(workflow), None
        except RecursionError:
            return None, f"The workflow is nested too deeply (values may hold lists or objects {MAX_DEPTH} deep)."
        except ValueError as error:
            return None, f"The workflow is not valid JSON ({error})."
    try:
        size = len(json.dumps(workflow, separators=(",", ":")).encode("utf-8"))
    except RecursionError:
        return None, f"The workflow is nested too deeply (values may hold lists or objects {MAX_DEPTH} deep)."
    except (TypeError, ValueError) as error:
        return None, f"The workflow cannot be written as JSON ({error})."
    if size > MAX_BYTES:
        return None, f"The workflow is {size} bytes; the most it may be is {MAX_BYTES} bytes."
    return workflow, None


def _shape(graph: Any) -> list[str]:
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        return ["This is ComfyUI's UI format; the bot needs the API format (\"Export (API)\" in ComfyUI)."]
    if not isinstance(graph, dict) or not graph:
        return ["The workflow must be an API-format graph: an object of nodes, each with a class_type and inputs."]
    if len(graph) > MAX_NODES:
        return [f"The workflow has {len(graph)} nodes; the most it may have is {MAX_NODES}."]
    problems = []
    for node, body in graph.items():
        if len(node) > MAX_NAME:
            problems.append(f"Node {node[:40]}... has an id longer than {MAX_NAME} characters.")
        elif not isinstance(body, dict) or not isinstance(body.get("class_type"), str) \
                or not isinstance(body.get("inputs"), dict):
            problems.append(f"Node {node} needs a class_type (text) and an inputs object.")
        elif len(body["class_type"]) > MAX_NAME or not body["class_type"]:
            problems.append(f"Node {node} has a class_type that is empty or longer than {MAX_NAME} characters.")
        elif len(body["inputs"]) > MAX_ITEMS:
            problems.append(f"Node {node} ({body['class_type']}) has {len(body['inputs'])} inputs; the most is {MAX_ITEMS}.")
    return problems


def _module(class_type: str, servers: list[Mapping[str, Any]]) -> str | None:
    """The python_module a server that has this class reports for it."""
    for info in servers:
        spec = info.get(class_type)
        if isinstance(spec, Mapping) and isinstance(spec.get("python_module"), str):
            return spec["python_module"]
    return None


def _denied(node: str, body: Mapping[str, Any], deny: list[str], servers: list[Mapping[str, Any]],
            seen: dict[str, str | None]) -> list[str]:
    """A refusal when the node's class matches the deny list; each class is matched once per vet."""
    class_type = body["class_type"]
    if class_type not in seen:
        module = (_module(class_type, servers) or "").lower()
        seen[class_type] = next((pattern for pattern in deny if (
            fnmatch.fnmatchcase(module, pattern[7:].lower()) if pattern.startswith("module:") and module
            else not pattern.startswith("module:") and fnmatch.fnmatchcase(class_type.lower(), pattern.lower()))), None)
    pattern = seen[class_type]
    if pattern is None:
        return []
    return [f"Node {node} ({class_type}) is a node class the operator does not allow (WORKFLOW_DENY_NODES has {pattern!r})."]


def _safe_inputs(class_type: str, inputs: Mapping[str, Any], servers: list[Mapping[str, Any]]) -> set[str]:
    """Inputs whose text may say anything: prompt boxes, never read as a path or address."""
    safe = set(TEXT_INPUTS.get(class_type, ()))
    if "text" in inputs and is_link(inputs.get("clip")):
        safe.add("text")
    for info in servers:
        spec = info.get(class_type)
        module = spec.get("python_module", "") if isinstance(spec, Mapping) else ""
        if isinstance(module, str) and (module == "nodes" or module.startswith("comfy_extras.")):
            declared = {**(spec.get("input") or {}).get("required", {}), **(spec.get("input") or {}).get("optional", {})}
            safe.update(key for key, value in declared.items() if isinstance(value, list) and len(value) > 1
                        and value[0] == "STRING" and isinstance(value[1], dict) and value[1].get("multiline"))
    return safe


def _values(node: str, body: Mapping[str, Any], graph: Mapping[str, Any], servers: list[Mapping[str, Any]]) -> list[str]:
    class_type = body["class_type"]
    where = f"Node {node} ({class_type}), input '{{}}',"
    problems = []
    safe = None
    for key, value in body["inputs"].items():
        at = where.format(key)
        if is_link(value):
            problems += _link(at, value, graph, servers)
            continue
        problem = _bounded(value, 0)
        if problem:
            problems.append(f"{at} {problem}.")
            continue
        for text in _texts(value):
            if not (URL.search(text) or ABSOLUTE.search(text) or ".." in re.split(r"[\\/]", text)):
                continue
            safe = _safe_inputs(class_type, body["inputs"], servers) if safe is None else safe
            if key in safe:
                continue
            if WRITES.search(key):
                problems.append(f"{at} would write outside ComfyUI's output folder ({text[:80]!r}).")
            elif URL.search(text):
                problems.append(f"{at} is an address outside ComfyUI ({text[:80]!r}); workflows may not reach the network.")
            else:
                problems.append(f"{at} is a path outside ComfyUI's folders ({text[:80]!r}); use a name ComfyUI lists.")
            break
    return problems


def _bounded(value: Any, depth: int) -> str | None:
    """Why a literal value is too large or not a plain JSON value, or None."""
    if isinstance(value, str):
        return f"has {len(value)} characters; the most is {MAX_TEXT}" if len(value) > MAX_TEXT else None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            return f"holds lists or objects more than {MAX_DEPTH} deep"
        if len(value) > MAX_ITEMS:
            return f"holds {len(value)} items; the most is {MAX_ITEMS}"
        for item in (value.values() if isinstance(value, dict) else value):
            problem = _bounded(item, depth + 1)
            if problem:
                return problem
    return None


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | dict):
        return [text for item in (value.values() if isinstance(value, dict) else value) for text in _texts(item)]
    return []


def _link(at: str, value: list[Any], graph: Mapping[str, Any], servers: list[Mapping[str, Any]]) -> list[str]:
    source, index = str(value[0]), value[1]
    if source not in graph:
        return [f"{at} links to node {source}, which is not in the workflow."]
    source_class = graph[source]["class_type"]
    outputs = next((spec.get("output") for info in servers if isinstance(spec := info.get(source_class), Mapping)
                    and isinstance(spec.get("output"), list)), None)
    if index < 0 or (outputs is not None and index >= len(outputs)):
        return [f"{at} takes output {index} of node {source} ({source_class}), which has "
                f"{len(outputs) if outputs is not None else 'no such'} output{'' if outputs and len(outputs) == 1 else 's'}."]
    return []


def _cycle(graph: Mapping[str, Any]) -> list[str]:
    """One sentence for a loop of links, which ComfyUI cannot run."""
    order = run_order(graph)
    placed: set[str] = set()
    for node in order:
        linked = [(key, source) for key, source, _ in links(graph[node]) if source in graph]
        if any(source not in placed for _, source in linked):
            break
        placed.add(node)
    else:
        return []
    start = next(node for node in order if node not in placed)
    trail, node = [start], start
    while True:  # walk back along links that stay among the unplaced nodes until one repeats
        key, node = next((k, s) for k, s, _ in links(graph[node]) if s in graph and s not in placed)
        if node in trail:
            loop = trail[trail.index(node):] + [node]
            first = loop[0]
            key = next(k for k, s, _ in links(graph[first]) if s == loop[1])
            return [f"Node {first} ({graph[first]['class_type']}), input '{key}', is part of a loop of links "
                    f"({' <- '.join(loop)}); ComfyUI cannot run a workflow that feeds itself."]
        trail.append(node)


def _lacks(graph: Mapping[str, Any], info: Mapping[str, Any], servers: list[Mapping[str, Any]]) -> list[str]:
    """What one server lacks to run the graph: node classes (with their package) and model files."""
    missing: dict[str, list[str]] = {}
    for node in sorted(graph, key=_key):
        if graph[node]["class_type"] not in info:
            missing.setdefault(graph[node]["class_type"], []).append(node)
    lacks = [f"node class {class_type} for node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)} "
             f"({provider(class_type, servers)})" for class_type, nodes in missing.items()]
    for node, key, file in model_files(graph, info):
        class_type = graph[node]["class_type"]
        spec = ((info.get(class_type) or {}).get("input") or {})
        declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}.get(key)
        options = _options(declared)
        if class_type in info and options is not None and file not in options:
            lacks.append(f"model file {file!r} for node {node} ({class_type}), input '{key}'")
    return lacks


def _options(spec: Any) -> list[Any] | None:
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options") or [])
    return None


def provider(class_type: str, servers: list[Mapping[str, Any]]) -> str:
    """Where a node class comes from, in words: the package a server that has it reports, else the
    shipped map's package and URL, else that it is not known."""
    module = _module(class_type, servers) or ""
    known = packages().get(class_type)
    if module.startswith("custom_nodes."):
        package = module.split(".", 1)[1].split("@", 1)[0]
        url = f" ({known[1]})" if known and known[0].lower() == package.lower() else ""
        return f"from the custom node package {package}{url}"
    if known:
        return f"from the custom node package {known[0]} ({known[1]})"
    if module:
        return f"a node of ComfyUI itself, module {module}: a newer ComfyUI has it"
    return "a custom node whose package is not known"
