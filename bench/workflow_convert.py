"""How long `/workflow add` spends turning a large UI-format workflow into the API format.

Generates an editor ("Save") workflow of about 200 nodes: one checkpoint feeding 32 text-to-image
branches (two prompts, a latent, a sampler, a decode, a save each), with a LoRA that is bypassed, a
muted preview, a chain of reroutes carrying the VAE and a primitive setting every sampler's seed.
Times reading the JSON bytes (as an attachment arrives) plus the conversion, and the conversion
alone, over a few hundred runs against the recorded /object_info; prints p50, p95 and max. Also
times reading the metadata of a PNG carrying that workflow. Asserts nothing about speed.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from bench.engine_latency import percentile  # noqa: E402
from comfy.embedded import read_embedded  # noqa: E402
from comfy.ui_format import parse_json, to_api  # noqa: E402
from tests.fakes.comfy_nodes import load_object_info  # noqa: E402

BRANCHES = 32


class Builder:
    """Nodes and links in the editor's layout, numbered as the editor numbers them."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, kind: str, sockets: list[tuple[str, str]], outputs: list[str], widgets: list, mode: int = 0) -> int:
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": kind, "pos": [node_id * 10, node_id * 5], "size": [300, 100],
                           "flags": {}, "order": node_id, "mode": mode,
                           "inputs": [{"name": name, "type": type_, "link": None} for name, type_ in sockets],
                           "outputs": [{"name": type_, "type": type_, "links": [], "slot_index": index}
                                       for index, type_ in enumerate(outputs)],
                           "properties": {"Node name for S&R": kind}, "widgets_values": widgets})
        return node_id

    def wire(self, origin: int, slot: int, target: int, name: str, type_: str) -> None:
        link_id = len(self.links) + 1
        inputs = self.nodes[target - 1]["inputs"]
        index = next(i for i, entry in enumerate(inputs) if entry["name"] == name)
        inputs[index]["link"] = link_id
        self.nodes[origin - 1]["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, origin, slot, target, index, type_])


def workflow() -> dict:
    b = Builder()
    checkpoint = b.add("CheckpointLoaderSimple", [], ["MODEL", "CLIP", "VAE"], ["v1-5-pruned-emaonly.safetensors"])
    lora = b.add("LoraLoader", [("model", "MODEL"), ("clip", "CLIP")], ["MODEL", "CLIP"], ["x.safetensors", 1, 1],
                 mode=4)
    b.wire(checkpoint, 0, lora, "model", "MODEL")
    b.wire(checkpoint, 1, lora, "clip", "CLIP")
    vae = checkpoint
    for _ in range(4):
        reroute = b.add("Reroute", [("", "*")], ["VAE"], [])
        b.wire(vae, 2 if vae == checkpoint else 0, reroute, "", "VAE")
        vae = reroute
    seed = b.add("PrimitiveNode", [], ["INT"], [42, "fixed"])
    b.nodes[seed - 1]["outputs"][0]["widget"] = {"name": "seed"}
    for branch in range(BRANCHES):
        positive = b.add("CLIPTextEncode", [("clip", "CLIP")], ["CONDITIONING"], [f"branch {branch}, a fox"])
        negative = b.add("CLIPTextEncode", [("clip", "CLIP")], ["CONDITIONING"], ["blurry"])
        latent = b.add("EmptyLatentImage", [], ["LATENT"], [512, 512, 1])
        sampler = b.add("KSampler", [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                     ("latent_image", "LATENT"), ("seed", "INT")], ["LATENT"],
                        [0, "fixed", 20, 7, "euler", "normal", 1])
        b.nodes[sampler - 1]["inputs"][-1]["widget"] = {"name": "seed"}
        decode = b.add("VAEDecode", [("samples", "LATENT"), ("vae", "VAE")], ["IMAGE"], [])
        save = b.add("SaveImage", [("images", "IMAGE")], [], [f"branch{branch}"])
        for target in (positive, negative):
            b.wire(lora, 1, target, "clip", "CLIP")
        b.wire(lora, 0, sampler, "model", "MODEL")
        b.wire(positive, 0, sampler, "positive", "CONDITIONING")
        b.wire(negative, 0, sampler, "negative", "CONDITIONING")
        b.wire(latent, 0, sampler, "latent_image", "LATENT")
        b.wire(seed, 0, sampler, "seed", "INT")
        b.wire(sampler, 0, decode, "samples", "LATENT")
        b.wire(vae, 0, decode, "vae", "VAE")
        b.wire(decode, 0, save, "images", "IMAGE")
    preview = b.add("PreviewImage", [("images", "IMAGE")], [], [], mode=2)
    b.wire(save - 1, 0, preview, "images", "IMAGE")
    return {"last_node_id": len(b.nodes), "last_link_id": len(b.links), "nodes": b.nodes, "links": b.links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def timed(action, runs: int) -> list[float]:
    action()  # warm up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def line(label: str, ms: list[float]) -> str:
    return (f"{label}: p50 {statistics.median(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, "
            f"max {max(ms):.2f} ms over {len(ms)} runs")


def main(runs: int = 400) -> None:
    info = load_object_info()
    graph = workflow()
    text = json.dumps(graph, indent=2).encode()
    converted = to_api(graph, info)
    print(f"UI workflow: {len(graph['nodes'])} nodes, {len(graph['links'])} links, {len(text) / 1024:.0f} KiB "
          f"-> API graph of {len(converted)} nodes")
    print(line("parse + convert", timed(lambda: to_api(parse_json(text), info), runs)))
    print(line("convert only   ", timed(lambda: to_api(graph, info), runs)))
    metadata = PngInfo()
    metadata.add_text("prompt", json.dumps(converted))
    metadata.add_text("workflow", json.dumps(graph))
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (90, 120, 200)).save(out, format="PNG", pnginfo=metadata)
    png = out.getvalue()
    print(line(f"PNG metadata ({len(png) / 1024:.0f} KiB, 1024x1024)", timed(lambda: read_embedded(png), runs)))


if __name__ == "__main__":
    main()
