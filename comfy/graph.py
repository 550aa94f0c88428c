"""Reading API-format graphs: links, the order nodes run in, and which inputs name model files.

Shared by discovery (what a user's workflow lets the bot set) and vetting (whether any server can
run it, safely); kept apart so neither has to import the other.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from typing import Any

# inputs that name model files, and the parameter each is reported as
MODEL_INPUTS = {"ckpt_name": "checkpoint", "unet_name": "checkpoint", "lora_name": "lora", "vae_name": "vae",
                "clip_name": "clip", "clip_name1": "clip", "clip_name2": "clip", "control_net_name": "controlnet",
                "model_name": "model", "upscale_model": "upscale_model", "clip_vision": "clip_vision",
                "style_model_name": "style_model", "gligen_name": "gligen", "hypernetwork_name": "hypernetwork"}
# loaders whose file the operator's workflows already name a parameter for
LOADER_NAMES = {"UpscaleModelLoader": "upscale_model", "ImageOnlyCheckpointLoader": "video_checkpoint",
                "ControlNetLoader": "controlnet"}
MODEL_FILE = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx)$", re.IGNORECASE)
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "mask"}  # their files are the job's, uploaded at run time


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) and isinstance(value[1], int) \
        and not isinstance(value[1], bool)


def links(body: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(input, source node, source output) for each linked input of a node."""
    inputs = body.get("inputs") if isinstance(body, Mapping) else None
    if not isinstance(inputs, Mapping):
        return []
    return [(name, str(value[0]), value[1]) for name, value in inputs.items() if is_link(value)]


def run_order(graph: Mapping[str, Any]) -> list[str]:
    """Node ids in an order that runs each node after its inputs, ties by id; nodes on or behind a
    cycle come last (vetting refuses those)."""
    sources = {node: {s for _, s, _ in links(graph[node]) if s in graph and s != node} for node in graph}
    users: dict[str, list[str]] = {node: [] for node in graph}
    for node, linked in sources.items():
        for source in linked:
            users[source].append(node)
    waiting = {node: len(linked) for node, linked in sources.items()}
    ready = [(_id_key(node), node) for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)[1]
        order.append(node)
        for user in users[node]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (_id_key(user), user))
    placed = set(order)
    return order + sorted((node for node in graph if node not in placed), key=_id_key)


def _id_key(node: str) -> tuple[int, int | str]:
    return (0, int(node)) if node.isdigit() else (1, node)


def model_files(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(node, input, file) for every input that names a model file: a known model input, or a
    choice list input (per /object_info) whose value looks like a model file."""
    found = []
    for node in sorted(graph, key=_id_key):
        body = graph[node]
        if body["class_type"] in IMAGE_LOADERS:
            continue  # input images are the job's, uploaded when it runs
        declared = _declared(object_info.get(body["class_type"]))
        for key, value in body["inputs"].items():
            if not isinstance(value, str) or not value:
                continue
            choice = key in declared and _is_choice(declared[key])
            if (key in MODEL_INPUTS and (choice or key not in declared)) or (choice and MODEL_FILE.search(value)):
                found.append((node, key, value))
    return found


def _declared(info: Any) -> dict[str, Any]:
    if not isinstance(info, Mapping) or not isinstance(info.get("input"), Mapping):
        return {}
    return {**(info["input"].get("required") or {}), **(info["input"].get("optional") or {})}


def _is_choice(spec: Any) -> bool:
    return isinstance(spec, list) and bool(spec) and (isinstance(spec[0], list) or spec[0] == "COMBO")
