"""The job kind "workflow": a person's own workflow as a request (its id, version and needs), which
server may take it, and running a stored version against the fake ComfyUI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.pool import Backend
from backends.runner import Engine
from comfy.discover import find_bindings
from image_gen import RequestError
from jobs import kinds, user_workflow
from store import make_store
from tests.conftest import make_engine

API = Path(__file__).resolve().parents[1] / "data" / "user_workflows" / "api"


def stored(name: str = "txt2img.json") -> tuple[dict, dict]:
    graph = json.loads((API / name).read_text())
    return graph, find_bindings(graph).to_json()


def request_for(settings, asked=(), servers=(), **values):
    graph, bindings = stored(values.pop("file", "txt2img.json"))
    return user_workflow.request_for(settings, 7, "mine", 2, graph, bindings, {"prompt": "a fox", **values},
                                     set(asked), list(servers), [f"gpu{n + 1}" for n in range(len(servers))])


async def test_a_request_records_the_version_and_what_it_needs_of_a_server(settings, client):
    info = await client.object_info()
    request = request_for(settings, ["seed", "steps"], [info], seed=5, steps=12)
    assert (request["workflow_id"], request["workflow_version"], request["workflow_name"]) == (7, 2, "mine")
    assert request["needs"]["nodes"] == ["CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler",
                                         "SaveImage", "VAEDecode"]
    assert request["needs"]["files"] == [["CheckpointLoaderSimple", "ckpt_name", "v1-5-pruned-emaonly.safetensors"]]
    assert request["needs"]["checkpoint"] == "v1-5-pruned-emaonly.safetensors" and request["seed"] == 5
    kind = kinds.get("workflow")
    assert kind.workflow_for(request) == "user:7"
    models = kind.models(settings, request)
    assert hash(tuple(models.values())) is not None  # the pool and scheduler key their answers by them
    rerolled = kind.prepare(settings, {key: value for key, value in request.items() if key != "seed"})
    assert isinstance(rerolled["seed"], int)  # a Reroll draws a new seed for a workflow that takes one

    engine = Engine(client, {}, None, settings)
    backend = Backend(engine, 1)
    assert backend.problems("user:7", models) == ["its node list is not known yet"]
    backend.learn(info)
    assert backend.problems("user:7", models) == []
    lacking = {**models, "nodes": (*models["nodes"], "FaceDetailer"),
               "files": (("CheckpointLoaderSimple", "ckpt_name", "gone.safetensors"),)}
    assert backend.problems("user:7", lacking) == [
        "it lacks the node class FaceDetailer",
        "it lacks the model file 'gone.safetensors' (CheckpointLoaderSimple, input 'ckpt_name')"]


def test_values_a_workflow_cannot_take_and_limits_are_refused_in_words(settings):
    solo, _ = stored()
    solo["3"]["inputs"]["negative"] = ["6", 0]
    del solo["7"]
    with pytest.raises(RequestError, match=r"^the workflow `solo` has no place for a negative prompt; leave it out"):
        user_workflow.request_for(settings, 1, "solo", 1, solo, find_bindings(solo).to_json(),
                                  {"prompt": "x", "negative_prompt": "y"}, {"negative_prompt"}, [], [])
    with pytest.raises(RequestError, match=r"^the workflow `mine` starts from an input image"):
        request_for(settings, file="upscale.json")
    with pytest.raises(RequestError, match=r"^steps must be between 1 and 100 \(got 500\)$"):
        request_for(settings, ["steps"], steps=500)


async def test_a_stored_version_runs_with_the_persons_values_bound(comfy, client, settings):
    engine = await make_engine(client, settings)
    graph, bindings = stored()
    request = request_for(settings, ["seed", "width", "height"], seed=9, width=64, height=64,
                          negative_prompt=None, sfw_negative="nsfw")

    store = make_store(settings)
    await store.open()
    saved = await store.save_workflow(0, 5001, "mine", graph, bindings=bindings, source_format="api", limit=5)
    request.update(workflow_id=saved.id, workflow_version=saved.version)
    kind = kinds.get("workflow")
    options = await kind.load(store, request)
    result = await kind.run(engine, request, None, options)
    sent = list(comfy.prompts.values())[-1]["prompt"]
    assert sent["6"]["inputs"]["text"] == "a fox" and sent["3"]["inputs"]["seed"] == 9
    assert sent["7"]["inputs"]["text"] == "text, watermark, nsfw"  # the workflow's own negative, and the operator's
    assert (sent["5"]["inputs"]["width"], sent["5"]["inputs"]["height"]) == (64, 64)
    assert result.kind == "workflow" and len(result.files) == 1 and result.params["seed"] == 9
    with pytest.raises(RequestError, match="no longer in the bot's store"):
        await kind.load(store, {**request, "workflow_version": 2})
    await store.close()
