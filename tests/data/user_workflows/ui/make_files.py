"""Writes the UI-format (editor "Save") workflows beside this file, laid out as the ComfyUI editor
saves them: nodes with slots, positions and bare widget value lists, and a table of links.

Run it again after changing a graph here: `.venv/bin/python tests/data/user_workflows/ui/make_files.py`.
Each graph mirrors tests/data/user_workflows/api/<same name>.json (its Save (API) export).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent
# output (name, type) and socket inputs (name, type) of each class, as /object_info gives them
OUTPUTS = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "EmptyLatentImage": [("LATENT", "LATENT")], "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "KSampler": [("LATENT", "LATENT")], "KSamplerAdvanced": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")], "SaveImage": [], "PreviewImage": [],
    "LoraLoader": [("MODEL", "MODEL"), ("CLIP", "CLIP")], "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "UpscaleModelLoader": [("UPSCALE_MODEL", "UPSCALE_MODEL")], "ImageUpscaleWithModel": [("IMAGE", "IMAGE")],
    "ImageScaleBy": [("IMAGE", "IMAGE")],
}
SOCKETS = {
    "KSampler": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                 ("latent_image", "LATENT")],
    "CLIPTextEncode": [("clip", "CLIP")], "VAEDecode": [("samples", "LATENT"), ("vae", "VAE")],
    "SaveImage": [("images", "IMAGE")], "PreviewImage": [("images", "IMAGE")],
    "LoraLoader": [("model", "MODEL"), ("clip", "CLIP")],
    "ImageUpscaleWithModel": [("upscale_model", "UPSCALE_MODEL"), ("image", "IMAGE")],
    "ImageScaleBy": [("image", "IMAGE")],
}
SOCKETS["KSamplerAdvanced"] = SOCKETS["KSampler"]


class Graph:
    """A workflow being laid out: nodes first, then wires between them by output index and input name."""

    def __init__(self) -> None:
        self.nodes: dict[int, dict] = {}
        self.links: list[list] = []

    def node(self, node_id: int, kind: str, widgets: list, *, title: str | None = None, mode: int = 0,
             widget_inputs: tuple[tuple[str, str], ...] = ()) -> None:
        """`widget_inputs` are widgets turned into sockets (name, type), as the editor lists them."""
        node = {"id": node_id, "type": kind, "pos": [100 + 50 * len(self.nodes), 80 * node_id],
                "size": [315, 98], "flags": {}, "order": len(self.nodes), "mode": mode,
                "inputs": [{"name": name, "type": kind_, "link": None} for name, kind_ in SOCKETS.get(kind, [])],
                "outputs": [{"name": name, "type": kind_, "links": [], "slot_index": index}
                            for index, (name, kind_) in enumerate(OUTPUTS.get(kind, []))],
                "properties": {"Node name for S&R": kind}, "widgets_values": widgets}
        for name, kind_ in widget_inputs:
            node["inputs"].append({"name": name, "type": kind_, "link": None, "widget": {"name": name}})
        if title:
            node["title"] = title
        if not node["inputs"]:
            del node["inputs"]
        self.nodes[node_id] = node

    def reroute(self, node_id: int, kind: str) -> None:
        self.nodes[node_id] = {"id": node_id, "type": "Reroute", "pos": [400, 40 * node_id], "size": [75, 26],
                               "flags": {}, "order": len(self.nodes), "mode": 0,
                               "inputs": [{"name": "", "type": "*", "link": None}],
                               "outputs": [{"name": "", "type": kind, "links": [], "slot_index": 0}],
                               "properties": {"showOutputText": False, "horizontal": False}}

    def primitive(self, node_id: int, kind: str, widget: str, values: list, title: str) -> None:
        self.nodes[node_id] = {"id": node_id, "type": "PrimitiveNode", "pos": [20, 40 * node_id], "size": [210, 82],
                               "flags": {}, "order": len(self.nodes), "mode": 0,
                               "outputs": [{"name": kind, "type": kind, "links": [], "slot_index": 0,
                                            "widget": {"name": widget}}],
                               "title": title, "properties": {"Run widget replace on values": False},
                               "widgets_values": values}

    def wire(self, origin: int, slot: int, target: int, name: str) -> None:
        link_id = len(self.links) + 1
        output = self.nodes[origin]["outputs"][slot]
        inputs = self.nodes[target]["inputs"]
        index = next(i for i, entry in enumerate(inputs) if entry["name"] == name)
        inputs[index]["link"] = link_id
        output["links"].append(link_id)
        self.links.append([link_id, origin, slot, target, index, output["type"]])

    def saved(self, *, schema: int = 0) -> dict:
        nodes = [self.nodes[key] for key in sorted(self.nodes)]
        for node in nodes:
            for output in node.get("outputs", []):
                output["links"] = output["links"] or None
        if schema == 1:
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            return {"id": "6f2b5a8e-1c3d-4e5f-9a0b-1c2d3e4f5a6b", "revision": 0, "version": 1,
                    "state": {"lastNodeId": max(self.nodes), "lastLinkId": len(self.links),
                              "lastGroupId": 0, "lastRerouteId": 0},
                    "nodes": nodes, "links": [dict(zip(keys, link)) for link in self.links], "groups": [],
                    "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}}
        return {"last_node_id": max(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def txt2img(seed_widget: bool = False) -> Graph:
    g = Graph()
    g.node(3, "KSampler", [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
           widget_inputs=(("seed", "INT"),) if seed_widget else ())
    g.node(4, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"])
    g.node(5, "EmptyLatentImage", [512, 512, 1])
    g.node(6, "CLIPTextEncode", ["beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"])
    g.node(7, "CLIPTextEncode", ["text, watermark"])
    g.node(8, "VAEDecode", [])
    g.node(9, "SaveImage", ["ComfyUI"])
    return g


def wire_txt2img(g: Graph, model: tuple[int, int] = (4, 0), clip: tuple[int, int] = (4, 1),
                 vae: tuple[int, int] = (4, 2)) -> Graph:
    g.wire(*model, 3, "model")
    g.wire(6, 0, 3, "positive")
    g.wire(7, 0, 3, "negative")
    g.wire(5, 0, 3, "latent_image")
    g.wire(*clip, 6, "clip")
    g.wire(*clip, 7, "clip")
    g.wire(3, 0, 8, "samples")
    g.wire(*vae, 8, "vae")
    g.wire(8, 0, 9, "images")
    return g


def sdxl_refiner() -> Graph:
    g = Graph()
    prompt = "evening sunset scenery blue sky nature, glass bottle with a galaxy in it"
    g.node(4, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"], title="Load Checkpoint - BASE")
    g.node(5, "EmptyLatentImage", [1024, 1024, 1])
    g.node(6, "CLIPTextEncode", [prompt])
    g.node(7, "CLIPTextEncode", ["text, watermark"])
    g.node(10, "KSamplerAdvanced", ["enable", 721897303308196, "fixed", 25, 8, "euler", "normal", 0, 20, "enable"],
           title="KSampler (Advanced) - BASE")
    g.node(11, "KSamplerAdvanced", ["disable", 0, "fixed", 25, 8, "euler", "normal", 20, 10000, "disable"],
           title="KSampler (Advanced) - REFINER")
    g.node(12, "CheckpointLoaderSimple", ["sd_xl_refiner_1.0.safetensors"], title="Load Checkpoint - REFINER")
    g.node(15, "CLIPTextEncode", [prompt])
    g.node(16, "CLIPTextEncode", ["text, watermark"])
    g.node(17, "VAEDecode", [])
    g.node(19, "SaveImage", ["ComfyUI"])
    for clip_node in (6, 7):
        g.wire(4, 1, clip_node, "clip")
    for clip_node in (15, 16):
        g.wire(12, 1, clip_node, "clip")
    for sampler, model, positive, negative, latent in ((10, 4, 6, 7, (5, 0)), (11, 12, 15, 16, (10, 0))):
        g.wire(model, 0, sampler, "model")
        g.wire(positive, 0, sampler, "positive")
        g.wire(negative, 0, sampler, "negative")
        g.wire(*latent, sampler, "latent_image")
    g.wire(11, 0, 17, "samples")
    g.wire(12, 2, 17, "vae")
    g.wire(17, 0, 19, "images")
    return g


def lora_stack() -> Graph:
    g = Graph()
    g.node(3, "KSampler", [851616030078638, "randomize", 28, 6.5, "dpmpp_2m", "karras", 1])
    g.node(4, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"])
    g.node(5, "EmptyLatentImage", [512, 768, 2])
    g.node(6, "CLIPTextEncode", ["a watercolor fox in the snow, detailed fur"])
    g.node(7, "CLIPTextEncode", ["blurry, lowres"])
    g.node(8, "VAEDecode", [])
    g.node(9, "SaveImage", ["loras/fox"])
    g.node(10, "LoraLoader", ["watercolor_v2.safetensors", 0.8, 0.8])
    g.node(11, "LoraLoader", ["detail_tweaker.safetensors", 0.5, 1])
    g.wire(4, 0, 10, "model")
    g.wire(4, 1, 10, "clip")
    g.wire(10, 0, 11, "model")
    g.wire(10, 1, 11, "clip")
    return wire_txt2img(g, model=(11, 0), clip=(11, 1))


def upscale() -> Graph:
    g = Graph()
    g.node(1, "LoadImage", ["photo.png", "image"])
    g.node(2, "UpscaleModelLoader", ["RealESRGAN_x4plus.pth"])
    g.node(3, "ImageUpscaleWithModel", [])
    g.node(4, "ImageScaleBy", ["lanczos", 0.5])
    g.node(5, "SaveImage", ["upscaled"])
    g.wire(2, 0, 3, "upscale_model")
    g.wire(1, 0, 3, "image")
    g.wire(3, 0, 4, "image")
    g.wire(4, 0, 5, "images")
    return g


def muted() -> Graph:
    """txt2img with a muted preview: the editor leaves it out of the prompt."""
    g = txt2img()
    g.node(10, "PreviewImage", [], mode=2)
    wire_txt2img(g)
    g.wire(8, 0, 10, "images")
    return g


def bypassed() -> Graph:
    """txt2img with a bypassed LoRA between the checkpoint and its users: MODEL and CLIP pass through."""
    g = txt2img()
    g.node(10, "LoraLoader", ["some_lora.safetensors", 1, 1], mode=4)
    g.wire(4, 0, 10, "model")
    g.wire(4, 1, 10, "clip")
    return wire_txt2img(g, model=(10, 0), clip=(10, 1))


def reroute_primitive() -> Graph:
    """txt2img with the VAE taken through two reroutes and the seed set by a primitive (42)."""
    g = txt2img(seed_widget=True)
    g.reroute(12, "VAE")
    g.reroute(13, "VAE")
    g.primitive(14, "INT", "seed", [42, "fixed"], "seed")
    g.wire(4, 2, 12, "")
    g.wire(12, 0, 13, "")
    wire_txt2img(g, vae=(13, 0))
    g.wire(14, 0, 3, "seed")
    return g


FILES = {"txt2img.json": wire_txt2img(txt2img()).saved(), "sdxl_refiner.json": sdxl_refiner().saved(),
         "lora_stack.json": lora_stack().saved(), "upscale.json": upscale().saved(schema=1),
         "muted.json": muted().saved(), "bypassed.json": bypassed().saved(),
         "reroute_primitive.json": reroute_primitive().saved()}

if __name__ == "__main__":
    for name, workflow in FILES.items():
        (HERE / name).write_text(json.dumps(workflow, indent=2) + "\n")
