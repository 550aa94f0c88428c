"""ComfyUI's editor ("UI") workflow format, converted to the API format the server runs.

Most people share the file the ComfyUI editor's plain **Save** writes: a list of nodes with positions,
a list of links, and each node's widget values as a bare list (no input names). The server only runs
the API format (`{node id: {"class_type", "inputs"}}`), which the editor derives when it queues a
prompt. `to_api` does the same derivation, from the server's `/object_info`:

* widget values are given names by walking the class's required then optional inputs in order,
  keeping the ones the editor shows as widgets (numbers, strings, booleans, lists of choices), with
  one extra value after a seed-like input (the editor's "control after generate" widget) and one
  after the required inputs of a class that uploads a file (the "upload" button);
* a linked input becomes `[origin node id, output index]`;
* muted nodes (mode 2) are dropped, and inputs fed by them removed, as the editor does;
* bypassed nodes (mode 4) are dropped and each input they fed is fed by the bypassed node's own
  input of the same type (the same slot first), or removed when there is none;
* Reroute nodes are followed to what feeds them; a PrimitiveNode's value is set on each widget it
  feeds; notes are ignored.

Anything the editor itself would need an extension for (group nodes, subgraphs, node classes the
server does not know) is refused with a `ConversionError` that names the node and says why, so a
person can fix the file or use "Save (API)". Hostile files are bounded: node and link counts, value
nesting and key types are checked before any work.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_NODES = 2000
MAX_LINKS = 10000
MAX_DEPTH = 32  # how deeply a widget value (a list or object) may nest
MAX_JSON_BYTES = 16 * 1024 * 1024

MUTED, BYPASSED = 2, 4
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
NOTES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)  # a subgraph's type
UNSET = object()  # an input the editor leaves out of the prompt altogether
SAVE_API = "open the workflow in ComfyUI and use Save (API)"


class ConversionError(ValueError):
    """A workflow cannot be read or converted; str() says which node and why, in words."""


@dataclass(frozen=True, slots=True)
class Link:
    id: int
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: str


def parse_json(data: bytes | str, limit: int = MAX_JSON_BYTES) -> Any:
    """An attachment's JSON, refused in words when too large, nested past Python's limit or not JSON."""
    if len(data) > limit:
        raise ConversionError(f"the file is {len(data):,} bytes; a workflow may be at most {limit:,}")
    try:
        return json.loads(data)
    except RecursionError:
        raise ConversionError("the file is nested too deeply to be a workflow") from None
    except UnicodeDecodeError:
        raise ConversionError("the file is not JSON (it is not UTF-8 text)") from None
    except (ValueError, TypeError) as error:
        raise ConversionError(f"the file is not JSON ({error})") from None


def detect_format(data: Any) -> str:
    """"ui" for the editor's Save, "api" for Save (API); anything else refused, saying what it is."""
    if not isinstance(data, dict):
        raise ConversionError(f"the file is not a ComfyUI workflow: it holds a JSON {_json_kind(data)}, not an object")
    _string_keys(data, "the workflow")
    if isinstance(data.get("nodes"), list):
        return "ui"
    if data and all(isinstance(node, dict) and isinstance(node.get("class_type"), str) for node in data.values()):
        return "api"
    if "nodes" in data:
        raise ConversionError("the file is not a ComfyUI workflow: its \"nodes\" is not a list")
    raise ConversionError("the file is not a ComfyUI workflow: it has neither a \"nodes\" list (the editor's Save) "
                          "nor nodes with a \"class_type\" (Save (API))")


def to_api(workflow: dict, object_info: dict) -> dict[str, dict[str, Any]]:
    """The API-format graph the ComfyUI editor would queue for this UI-format workflow."""
    if detect_format(workflow) != "ui":
        raise ConversionError("the workflow is already in the API format")
    nodes = _nodes(workflow)
    links = _links(workflow, nodes)
    _refuse_groups(workflow, nodes)
    graph: dict[str, dict[str, Any]] = {}
    slots: dict[str, list[tuple[str, int]]] = {}  # per class: read /object_info once, not once per node
    for node_id, node in nodes.items():
        kind = node["type"]
        if node.get("mode") in (MUTED, BYPASSED) or kind in NOTES or kind in (REROUTE, PRIMITIVE):
            continue
        info = object_info.get(kind)
        if not isinstance(info, dict):
            raise ConversionError(f"{_who(node)} is not installed on any server, so its inputs cannot be named")
        if kind not in slots:
            slots[kind] = widget_slots(info)
        graph[node_id] = _convert(node, info, slots[kind], nodes, links)
    for entry in graph.values():  # the editor drops inputs fed by nodes it left out (muted ones)
        for name, value in list(entry["inputs"].items()):
            if _is_ref(value) and value[0] not in graph:
                del entry["inputs"][name]
    if not graph:
        raise ConversionError("the workflow has no node that would run: every node is muted, bypassed or a note")
    _refuse_cycles(graph, nodes)
    return graph


def _convert(node: dict, info: dict, widgets: list[tuple[str, int]], nodes: dict[str, dict],
             links: dict[int, Link]) -> dict[str, Any]:
    slots = _node_inputs(node)
    linked = {slot["name"] for slot in slots if slot.get("link") is not None}
    inputs = _widget_inputs(node, widgets, linked)
    for slot in slots:
        if slot.get("link") is None:
            continue
        link = links.get(slot["link"])
        if link is None:
            raise ConversionError(f"{_who(node)} input '{slot['name']}' refers to link {slot['link']}, "
                                  "which the workflow does not have")
        if link.target != str(node["id"]):
            raise ConversionError(f"{_who(node)} input '{slot['name']}' refers to link {slot['link']}, "
                                  f"which ends at node {link.target}: the links table does not match the nodes")
        source = _source(node, slot, link, nodes, links)
        if source is UNSET:
            inputs.pop(slot["name"], None)
        elif source is not None:  # None: nothing feeds it, so a widget keeps its own value
            inputs[slot["name"]] = source
    title = node.get("title") if isinstance(node.get("title"), str) else None
    display = info.get("display_name") if isinstance(info.get("display_name"), str) else None
    return {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title or display or node["type"]}}


def _source(node: dict, slot: dict, link: Link, nodes: dict[str, dict], links: dict[int, Link]) -> Any:
    """What feeds `slot`: `[node id, output]`, a PrimitiveNode's value, None when a reroute or a
    bypassed node passes on nothing, or UNSET when a bypassed node has no input of the type (the
    editor then drops the input, widget value and all). Reroutes and bypassed nodes are walked."""
    wanted = slot.get("type", link.type)
    seen: set[int] = set()
    while True:
        if link.id in seen:
            raise ConversionError(f"{_who(node)} input '{slot['name']}' is fed by reroutes or bypassed nodes "
                                  "that loop back on themselves")
        seen.add(link.id)
        origin = nodes.get(link.origin)
        if origin is None:
            raise ConversionError(f"{_who(node)} input '{slot['name']}' is linked to node {link.origin}, "
                                  "which is not in the workflow")
        if origin["type"] == PRIMITIVE:
            values = origin.get("widgets_values")
            if not isinstance(values, list) or not values:
                raise ConversionError(f"{_who(origin)} has no value to give {_who(node)} input '{slot['name']}'")
            return _value(values[0], origin, "value")
        if origin["type"] == REROUTE:
            through = _node_inputs(origin)[:1]
        elif origin.get("mode") == BYPASSED:
            through = _bypass_input(origin, link.origin_slot, wanted)
            if not through:
                return UNSET
        else:
            return [link.origin, link.origin_slot]
        if not through or through[0].get("link") is None:
            return None
        following = links.get(through[0]["link"])
        if following is None:
            raise ConversionError(f"{_who(origin)} input '{through[0].get('name')}' refers to link "
                                  f"{through[0]['link']}, which the workflow does not have")
        link = following


def _bypass_input(node: dict, slot: int, wanted: Any) -> list[dict]:
    """The input a bypassed node passes through for a link of type `wanted`: the same slot if its type
    matches, else the first of that type (the editor's rule)."""
    inputs = _node_inputs(node)
    if slot < len(inputs) and inputs[slot].get("type") == wanted:
        return [inputs[slot]]
    return [entry for entry in inputs if entry.get("type") == wanted][:1]


def _widget_inputs(node: dict, slots: list[tuple[str, int]], linked: set[str]) -> dict[str, Any]:
    """The node's widget values by input name. The editor keeps a value for a widget turned into a
    socket; files written without one (some tools and hand edits do) are accepted too. Any other
    count means the class changed since the file was saved, so nothing can be matched safely."""
    values = node.get("widgets_values", [])
    if isinstance(values, dict):  # some nodes save their widgets by name
        _string_keys(values, f"{_who(node)} widgets_values")
        names = {name for name, _ in slots}
        return {name: _value(value, node, name) for name, value in values.items() if name in names}
    if not isinstance(values, list):
        raise ConversionError(f"{_who(node)} has widgets_values that is neither a list nor an object")
    full = [entry for slot in slots for entry in _expand(slot)]
    short = [entry for slot in slots if slot[0] not in linked for entry in _expand(slot)]
    layout = full if len(values) == len(full) else short if len(values) == len(short) else None
    if layout is None:
        expected = ", ".join(name for name, _ in full) or "none"
        raise ConversionError(f"{_who(node)} has {len(values)} widget values but {node['type']} on this server takes "
                              f"{len(full)} ({expected}); the node may come from another version of ComfyUI")
    return {name: _value(value, node, name) for (name, real), value in zip(layout, values) if real}


def _expand(slot: tuple[str, int]) -> list[tuple[str, bool]]:
    name, extra = slot
    if name == "upload":
        return [(name, False)]
    return [(name, True)] + [("control_after_generate", False)] * extra


def widget_slots(info: dict) -> list[tuple[str, int]]:
    """The widgets the editor shows for a class, in order: (input name, extra values after it), with
    ("upload", 0) standing for an upload button."""
    spec = info.get("input") if isinstance(info.get("input"), dict) else {}
    order = info.get("input_order") if isinstance(info.get("input_order"), dict) else {}
    slots: list[tuple[str, int]] = []
    for section in ("required", "optional"):
        inputs = spec.get(section) if isinstance(spec.get(section), dict) else {}
        names = order.get(section) if isinstance(order.get(section), list) else list(inputs)
        upload = False
        for name in names:
            entry = inputs.get(name)
            if not isinstance(entry, (list, tuple)) or not entry:
                continue
            kind, options = entry[0], entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if options.get("forceInput") or not (isinstance(kind, list) or kind in WIDGET_TYPES):
                continue
            control = bool(options.get("control_after_generate")) or (kind == "INT" and name in SEED_NAMES)
            slots.append((name, int(control)))
            upload = upload or any(options.get(flag) for flag in UPLOAD_FLAGS)
        if upload:
            slots.append(("upload", 0))
    return slots


def _nodes(workflow: dict) -> dict[str, dict]:
    raw = workflow["nodes"]
    if len(raw) > MAX_NODES:
        raise ConversionError(f"the workflow has {len(raw):,} nodes; at most {MAX_NODES:,} are converted")
    nodes: dict[str, dict] = {}
    for index, node in enumerate(raw):
        if not isinstance(node, dict):
            raise ConversionError(f"entry {index} of the workflow's nodes is not a node (an object)")
        _string_keys(node, f"entry {index} of the workflow's nodes")
        node_id = node.get("id")
        if isinstance(node_id, bool) or not isinstance(node_id, (int, str)) or str(node_id) == "":
            raise ConversionError(f"entry {index} of the workflow's nodes has no id")
        if not isinstance(node.get("type"), str) or not node["type"]:
            raise ConversionError(f"node {node_id} has no type")
        if str(node_id) in nodes:
            raise ConversionError(f"two nodes have the id {node_id}")
        if not isinstance(node.get("inputs", []), list) or not all(
                isinstance(slot, dict) and isinstance(slot.get("name"), str) for slot in node.get("inputs", [])):
            raise ConversionError(f"{_who(node)} has inputs that are not named slots")
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and (isinstance(slot["link"], bool) or not isinstance(slot["link"], int)):
                raise ConversionError(f"{_who(node)} input '{slot['name']}' has a link id that is not a number")
        nodes[str(node_id)] = node
    return nodes


def _links(workflow: dict, nodes: dict[str, dict]) -> dict[int, Link]:
    """The links by id, from either the list form ([id, origin, slot, target, slot, type]) or the
    object form of the newer schema."""
    raw = workflow.get("links") or []
    if not isinstance(raw, list):
        raise ConversionError("the workflow's links are not a list")
    if len(raw) > MAX_LINKS:
        raise ConversionError(f"the workflow has {len(raw):,} links; at most {MAX_LINKS:,} are converted")
    links: dict[int, Link] = {}
    for index, entry in enumerate(raw):
        if isinstance(entry, dict):
            _string_keys(entry, f"link {index}")
            entry = [entry.get(key) for key in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")]
        if not isinstance(entry, list) or len(entry) < 5:
            raise ConversionError(f"entry {index} of the workflow's links is not a link")
        link_id, origin, origin_slot, target, target_slot = entry[:5]
        numbers = (link_id, origin_slot, target_slot)
        if any(isinstance(value, bool) or not isinstance(value, int) for value in numbers) or not all(
                isinstance(value, (int, str)) and not isinstance(value, bool) for value in (origin, target)):
            raise ConversionError(f"entry {index} of the workflow's links is not a link (ids must be numbers)")
        links[link_id] = Link(link_id, str(origin), origin_slot, str(target), target_slot,
                              entry[5] if len(entry) > 5 and isinstance(entry[5], str) else "*")
    return links


def _refuse_groups(workflow: dict, nodes: dict[str, dict]) -> None:
    extra = workflow.get("extra") if isinstance(workflow.get("extra"), dict) else {}
    groups = extra.get("groupNodes") if isinstance(extra.get("groupNodes"), dict) else {}
    definitions = workflow.get("definitions") if isinstance(workflow.get("definitions"), dict) else {}
    subgraphs = definitions.get("subgraphs") if isinstance(definitions.get("subgraphs"), list) else []
    subgraph_ids = {entry.get("id") for entry in subgraphs if isinstance(entry, dict)}
    for node in nodes.values():
        kind = node["type"]
        if kind.startswith(("workflow>", "workflow/")) or kind in groups:
            raise ConversionError(f"{_who(node)} is a group node; group nodes cannot be converted; {SAVE_API}")
        if kind in subgraph_ids or UUID.fullmatch(kind):
            raise ConversionError(f"{_who(node)} is a subgraph; subgraphs cannot be converted; {SAVE_API}")


def _refuse_cycles(graph: dict[str, dict[str, Any]], nodes: dict[str, dict]) -> None:
    """ComfyUI cannot run a graph whose output feeds back into itself; name the loop."""
    state: dict[str, int] = {}
    for start in graph:
        if start in state:
            continue
        stack = [(start, iter(_feeders(graph[start])))]
        trail = [start]
        state[start] = 1
        while stack:
            current, feeders = stack[-1]
            following = next(feeders, None)
            if following is None:
                state[current] = 2
                stack.pop()
                trail.pop()
            elif state.get(following) == 1:
                loop = trail[trail.index(following):] + [following]
                raise ConversionError("the workflow's links form a loop (" + " <- ".join(
                    _who(nodes[node_id]) for node_id in loop) + "); ComfyUI cannot run a graph that feeds itself")
            elif following not in state and following in graph:
                state[following] = 1
                stack.append((following, iter(_feeders(graph[following]))))
                trail.append(following)


def _feeders(entry: dict[str, Any]) -> list[str]:
    return [value[0] for value in entry["inputs"].values() if _is_ref(value)]


def _is_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _node_inputs(node: dict) -> list[dict]:
    return node.get("inputs") or []


def _value(value: Any, node: dict, name: str) -> Any:
    """A copy of a widget value, refused when it nests past MAX_DEPTH or has non-string keys."""
    if not isinstance(value, (list, dict)):
        return value  # strings and numbers are immutable: nothing to check or copy
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise ConversionError(f"{_who(node)} widget '{name}' is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                _string_keys(item, f"{_who(node)} widget '{name}'")
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return copy.deepcopy(value)


def _string_keys(data: dict, where: str) -> None:
    bad = next((key for key in data if not isinstance(key, str)), None)
    if bad is not None:
        raise ConversionError(f"{where} has a key that is not a string ({bad!r}), so it is not JSON")


def _who(node: dict) -> str:
    """How errors name a node: its id, its type, and its title when the person gave one."""
    title = node.get("title")
    named = f" titled '{title}'" if isinstance(title, str) and title and title != node.get("type") else ""
    return f"node {node.get('id')} '{node.get('type')}'{named}"


def _json_kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(data), type(data).__name__)
