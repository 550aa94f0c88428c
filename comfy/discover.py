"""What in someone's own API-format workflow the bot can set: found by following its links.

An operator's workflow says in workflows.toml which input each parameter sets; a workflow a user
brings has no such file, so it is read from the graph itself. Every sampler is followed back along
its links: its positive and negative conditioning to the text encoders' text, its model to the
checkpoint and the LoRAs on the way, its latent to the node that makes the size and batch, and its
own (or its helper nodes') seed, steps, cfg, sampler, scheduler and denoise.

Several samplers (a base and a refiner, a hires pass): the primary one is the first sampler, in
the order the graph runs, whose latent comes from a latent source (an empty latent, or an encoded
image) without passing another sampler; ties go to the lowest node id. The others are secondary.
Parameters bind the primary's inputs, except that the prompt, the negative prompt and the seed bind
every sampler's (one prompt and one seed make one picture), and steps bind a secondary sampler's
too when it has the same steps (a base and refiner splitting one schedule with start/end steps).
Secondary values are still reported, so the owner sees them.

The result is plain data (`to_json`), and `spec()` is the same table a workflows.toml entry gives,
so `workflow()` hands back a `Workflow` that binds through the very code the operator's ones use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from comfy.graph import IMAGE_LOADERS, LOADER_NAMES, MODEL_INPUTS, is_link, links, model_files, run_order
from comfy.workflows import Target, Workflow

SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
# the inputs of each text encoder that hold prompt text
TEXT_INPUTS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeSDXL": ("text_g", "text_l"),
               "CLIPTextEncodeSDXLRefiner": ("text",), "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
               "CLIPTextEncodeFlux": ("clip_l", "t5xxl"), "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl")}
LATENT_SOURCES = re.compile(r"^Empty.*Latent|Latent.*Empty|^VAEEncode")
# sampler settings: the parameter and the input names that hold it, on the sampler or its helpers
SETTINGS = (("seed", ("seed", "noise_seed")), ("steps", ("steps",)), ("cfg", ("cfg",)),
            ("sampler", ("sampler_name",)), ("scheduler", ("scheduler",)), ("denoise", ("denoise",)))
HELPERS = ("noise", "guider", "sampler", "sigmas")  # SamplerCustom(Advanced) takes its settings from these
SIZE = (("width", "width"), ("height", "height"), ("batch", "batch_size"))


@dataclass(frozen=True, slots=True)
class Binding:
    name: str  # the parameter, as workflows.toml names them: prompt, seed, width, checkpoint ...
    node: str
    class_type: str
    input: str
    value: Any
    primary: bool = True  # belongs to the primary sampler (or to no sampler: an image, an upscale model)
    bound: bool = True  # the parameter sets it (see the module's docstring for which secondary ones are)

    def __str__(self) -> str:
        role = "" if self.primary else " (secondary, set with the primary)" if self.bound else " (secondary)"
        return f"{self.name}{role}: node {self.node} ({self.class_type}), input '{self.input}' = {self.value!r}"


@dataclass(frozen=True, slots=True)
class Lora:
    node: str
    class_type: str
    name: str
    strength_model: float | None
    strength_clip: float | None
    primary: bool = True


@dataclass(frozen=True)
class Bindings:
    bindings: tuple[Binding, ...] = ()
    loras: tuple[Lora, ...] = ()
    samplers: tuple[str, ...] = ()  # the primary first
    outputs: tuple[str, ...] = ()  # the nodes whose files are the result
    lora_attach: tuple[str, str] | None = None  # "node.output" giving MODEL and CLIP, where LoRAs are added
    extra: dict[str, Any] = field(default_factory=dict)  # reserved for what later finders add

    def params(self) -> dict[str, list[str]]:
        """Each parameter and the "node.input" places it sets, as workflows.toml writes them."""
        table: dict[str, list[str]] = {}
        for binding in self.bindings:
            if binding.bound:
                table.setdefault(binding.name, []).append(f"{binding.node}.{binding.input}")
        return table

    def spec(self, file: str) -> dict[str, Any]:
        """The workflows.toml entry for this graph (as tomllib reads it)."""
        spec: dict[str, Any] = {"file": file, "outputs": list(self.outputs), "params": self.params()}
        if self.lora_attach:
            spec["lora"] = {"model": self.lora_attach[0], "clip": self.lora_attach[1]}
        return spec

    def workflow(self, name: str, path: Path, graph: Mapping[str, Any]) -> Workflow:
        """A Workflow that binds this graph through the same code as the operator's workflows."""
        params = {key: tuple(Target(*place.rsplit(".", 1)) for place in places) for key, places in self.params().items()}
        lora = tuple(Target(*place.rsplit(".", 1)) for place in self.lora_attach) if self.lora_attach else None
        return Workflow(name, path, graph, params, self.outputs, lora=lora)  # type: ignore[arg-type]

    def lines(self) -> list[str]:
        """What the owner is shown before the workflow is saved, one line per thing found."""
        shown = [str(binding) for binding in self.bindings]
        for lora in self.loras:
            role = "" if lora.primary else " (secondary)"
            shown.append(f"LoRA{role}: node {lora.node} ({lora.class_type}) {lora.name!r}, model {lora.strength_model}"
                         + ("" if lora.strength_clip is None else f", clip {lora.strength_clip}"))
        return shown

    def to_json(self) -> dict[str, Any]:
        return {"bindings": [asdict(b) for b in self.bindings], "loras": [asdict(lora) for lora in self.loras],
                "samplers": list(self.samplers), "outputs": list(self.outputs),
                "lora_attach": list(self.lora_attach) if self.lora_attach else None, "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bindings:
        attach = data.get("lora_attach")
        return cls(tuple(Binding(**b) for b in data.get("bindings", ())), tuple(Lora(**x) for x in data.get("loras", ())),
                   tuple(data.get("samplers", ())), tuple(data.get("outputs", ())),
                   (attach[0], attach[1]) if attach else None, dict(data.get("extra") or {}))


SHARED = {"prompt", "negative_prompt", "seed"}  # bound on every sampler, see the module's docstring


def find_bindings(graph: Mapping[str, Any], object_info: Mapping[str, Any] | None = None) -> Bindings:
    """Everything in `graph` the bot can set, from each sampler back along the links. The graph must
    have the API shape (vetting checks it first); links to missing nodes and loops are tolerated."""
    if not isinstance(graph, Mapping) or not all(isinstance(body, Mapping) and isinstance(body.get("class_type"), str)
                                                 and isinstance(body.get("inputs"), Mapping) for body in graph.values()):
        raise ValueError("not an API-format graph: vet it before finding its bindings")
    info = object_info or {}
    order = run_order(graph)
    position = {node: index for index, node in enumerate(order)}
    samplers = [node for node in order if _is_sampler(graph[node])]
    fed = [node for node in samplers if _latent_source(graph, node, samplers)[0] == "source"]
    primary = (fed or samplers or [None])[0]
    samplers = ([primary] if primary else []) + [node for node in samplers if node != primary]
    found: list[Binding] = []
    seen: set[tuple[str, str]] = set()

    def add(name: str, node: str, key: str, is_primary: bool, bound: bool | None = None) -> None:
        if (node, key) in seen:
            return
        seen.add((node, key))
        found.append(Binding(name, node, graph[node]["class_type"], key, graph[node]["inputs"][key], is_primary,
                             is_primary or name in SHARED if bound is None else bound))

    encoded: dict[str, set[str]] = {"positive": set(), "negative": set()}
    primary_steps = None
    for sampler in samplers:
        first = sampler == primary
        for side, name in (("positive", "prompt"), ("negative", "negative_prompt")):
            for node in _encoders(graph, sampler, side):
                if side == "negative" and node in encoded["positive"]:
                    continue
                encoded[side].add(node)
                for key in _text_inputs(graph[node]):
                    target = _literal(graph, node, key)
                    if target and isinstance(target[2], str):
                        add(name, target[0], target[1], first)
        for name, keys in SETTINGS:
            target = _setting(graph, sampler, keys)
            if target is None:
                continue
            if name == "steps":
                primary_steps = target[2] if first else primary_steps
                add(name, target[0], target[1], first, first or target[2] == primary_steps)
            else:
                add(name, target[0], target[1], first)
        kind, source = _latent_source(graph, sampler, samplers)
        if kind == "source" and source and LATENT_SOURCES.search(graph[source]["class_type"]):
            for name, key in SIZE:
                target = _literal(graph, source, key)
                if target:
                    add(name, target[0], target[1], first)
    for node in sorted(graph, key=lambda n: position.get(n, 0)):
        loader = IMAGE_LOADERS.get(graph[node]["class_type"])
        if loader and isinstance(graph[node]["inputs"].get("image"), str):
            count = sum(1 for b in found if b.name.split("_")[0] == loader) + 1
            add(loader if count == 1 else f"{loader}_{count}", node, "image", True)
    loras: list[Lora] = []
    attach_model = attach_clip = None
    for sampler in samplers:
        chain, loader = _model_chain(graph, sampler)
        for node in chain:
            if not any(lora.node == node for lora in loras):
                loras.append(_lora(graph, node, sampler == primary))
        if loader is not None:
            key = next((k for k in ("ckpt_name", "unet_name") if isinstance(graph[loader]["inputs"].get(k), str)), None)
            if key:
                add("checkpoint", loader, key, sampler == primary)
        if sampler == primary:
            attach_model, attach_clip = _attachment(graph, sampler, chain, loader)
    for node, key, _ in model_files(graph, info):
        if (node, key) not in seen and key != "lora_name":
            name = LOADER_NAMES.get(graph[node]["class_type"], MODEL_INPUTS.get(key, "model"))
            add(name, node, key, not any(b.name == name and b.primary for b in found))
    outputs = tuple(_outputs(graph, info, order))
    attach = (attach_model, attach_clip) if attach_model and attach_clip else None
    return Bindings(tuple(found), tuple(loras), tuple(samplers), outputs, attach)


def _is_sampler(body: Mapping[str, Any]) -> bool:
    inputs = body["inputs"]
    return body["class_type"] in SAMPLERS or (is_link(inputs.get("latent_image")) and (
        (is_link(inputs.get("positive")) and is_link(inputs.get("negative"))) or is_link(inputs.get("guider"))))


def _follow(graph: Mapping[str, Any], node: str, key: str) -> tuple[str, int] | None:
    value = graph[node]["inputs"].get(key)
    if is_link(value) and str(value[0]) in graph:
        return str(value[0]), value[1]
    return None


def _literal(graph: Mapping[str, Any], node: str, key: str) -> tuple[str, str, Any] | None:
    """Where the value of an input is written: the input itself, or a Primitive node it links to."""
    for _ in range(8):
        value = graph[node]["inputs"].get(key)
        if not is_link(value):
            return (node, key, value) if key in graph[node]["inputs"] else None
        source = _follow(graph, node, key)
        if source is None or not graph[source[0]]["class_type"].startswith("Primitive"):
            return None
        node, key = source[0], "value"
    return None


def _setting(graph: Mapping[str, Any], sampler: str, keys: tuple[str, ...]) -> tuple[str, str, Any] | None:
    """A sampler setting, on the sampler itself or on the helper nodes that feed SamplerCustom*."""
    places = [sampler]
    for helper in HELPERS:
        source = _follow(graph, sampler, helper)
        if source:
            places.append(source[0])
    for node in places:
        for key in keys:
            if key in graph[node]["inputs"]:
                target = _literal(graph, node, key)
                if target:
                    return target
    return None


def _text_inputs(body: Mapping[str, Any]) -> tuple[str, ...]:
    known = TEXT_INPUTS.get(body["class_type"])
    if known is not None:
        return known
    return ("text",) if "text" in body["inputs"] and is_link(body["inputs"].get("clip")) else ()


def _encoders(graph: Mapping[str, Any], sampler: str, side: str) -> list[str]:
    """The text encoders whose conditioning reaches a sampler's positive (or negative) input,
    through combiners, ControlNet appliers and guiders (which keep positive and negative apart)."""
    start = _follow(graph, sampler, side)
    if start is None and _follow(graph, sampler, "guider"):
        guider = _follow(graph, sampler, "guider")[0]  # type: ignore[index]
        start = _follow(graph, guider, side) or (_follow(graph, guider, "conditioning") if side == "positive" else None)
    found: list[str] = []
    stack, visited = ([start] if start else []), set()
    while stack:
        node, output = stack.pop()
        if (node, output) in visited or len(visited) > 10_000:
            continue
        visited.add((node, output))
        body = graph[node]
        if _text_inputs(body):
            found.append(node)
            continue
        inputs = body["inputs"]
        if is_link(inputs.get("positive")) and is_link(inputs.get("negative")):
            source = _follow(graph, node, "positive" if output == 0 else "negative")
            stack += [source] if source else []
            continue
        for key, source, index in reversed(links(body)):
            if source in graph and ("cond" in key or key in ("positive", "negative")):
                stack.append((source, index))
    return sorted(dict.fromkeys(found), key=found.index)


def _latent_source(graph: Mapping[str, Any], sampler: str, samplers: list[str]) -> tuple[str, str | None]:
    """Where a sampler's latent starts: ("source", node) for a latent source, ("sampler", node) when
    another sampler's output comes first, ("none", None) otherwise."""
    stack, visited = [sampler], set()
    first = True
    while stack:
        node = stack.pop()
        if node in visited:
            continue
        visited.add(node)
        if not first and node in samplers:
            return "sampler", node
        if not first and LATENT_SOURCES.search(graph[node]["class_type"]):
            return "source", node
        keys = ("latent_image",) if first else tuple(k for k, _, _ in links(graph[node]) if "latent" in k or k == "samples")
        first = False
        stack += [source for key, source, _ in reversed(links(graph[node])) if key in keys and source in graph]
    return "none", None


def _model_chain(graph: Mapping[str, Any], sampler: str) -> tuple[list[str], str | None]:
    """The LoRA nodes on a sampler's model path, the checkpoint's side first, and the loader it starts at."""
    chain, node, visited = [], sampler, set()
    guider = _follow(graph, sampler, "guider")
    source = _follow(graph, guider[0] if guider else sampler, "model")
    while source and source[0] not in visited:
        node = source[0]
        visited.add(node)
        if "lora_name" in graph[node]["inputs"]:
            chain.append(node)
        source = _follow(graph, node, "model")
    loader = node if node != sampler and not _follow(graph, node, "model") else None
    return chain[::-1], loader


def _lora(graph: Mapping[str, Any], node: str, primary: bool) -> Lora:
    inputs = graph[node]["inputs"]
    number = (lambda key: inputs[key] if isinstance(inputs.get(key), int | float) and not isinstance(inputs.get(key), bool)
              else None)
    return Lora(node, graph[node]["class_type"], str(inputs.get("lora_name")), number("strength_model"),
                number("strength_clip"), primary)


def _attachment(graph: Mapping[str, Any], sampler: str, chain: list[str], loader: str | None) -> tuple[str | None, str | None]:
    """Where new LoRAs go: after the last LoRA on the model path (or the loader's MODEL output), and
    after the last LoRA on the prompt's CLIP path (or the loader's CLIP output)."""
    model = f"{chain[-1]}.0" if chain else (f"{loader}.0" if loader else None)
    encoders = _encoders(graph, sampler, "positive")
    clip = None
    source = _follow(graph, encoders[0], "clip") if encoders else None
    visited: set[str] = set()
    while source and source[0] not in visited:
        visited.add(source[0])
        if "lora_name" in graph[source[0]]["inputs"] or not _follow(graph, source[0], "clip"):
            clip = f"{source[0]}.{source[1]}"
            break
        source = _follow(graph, source[0], "clip")
    return model, clip


def _outputs(graph: Mapping[str, Any], object_info: Mapping[str, Any], order: list[str]) -> list[str]:
    """The nodes whose files are the result: the saving ones, or else every output node."""
    outputs = [node for node in order if (object_info.get(graph[node]["class_type"]) or {}).get("output_node")
               or graph[node]["class_type"].startswith(("Save", "Preview"))]
    saving = [node for node in outputs if graph[node]["class_type"].startswith("Save")]
    return saving or outputs
