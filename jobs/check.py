"""`python bot.py check [--smoke]`: prove a ComfyUI server works before inviting the bot anywhere.

Prints the settings (secrets masked), whether ComfyUI answers, its version and
queue, the validation of every workflow of the selected set, each RunPod endpoint's /health, and with
--smoke runs every kind of job the bot offers once (kinds.KINDS): text to image, then each kind that
takes an image from its result.
Exit status 0 when everything passed, 1 otherwise.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from PIL import Image, ImageDraw

from comfy.types import ComfyError, Unreachable
from comfy.client import ComfyClient
from config import RunPodEndpoint, Settings, redact_url
from jobs import kinds
from image_gen import RequestError
from results.folder import OutputError
from results.keeper import make_results
from backends.runner import Engine
from backends.runpod_client import KeyRefused, NoEndpoint, RunPodClient
from backends.runpod import TRUST, unlisted
from safe_text import server_line
from jobs.styles import StyleError, load as load_styles
from comfy.workflows import Workflow, WorkflowError, load_set, validate

Print = Callable[[str], None]


def default_values(settings: Settings) -> dict[str, object]:
    """The operator-chosen values a workflow is validated with (models, default sizes)."""
    return {
        "checkpoint": settings.checkpoint,
        "upscale_model": settings.upscale_model,
        "video_checkpoint": settings.video_checkpoint,
        "width": settings.default_width,
        "height": settings.default_height,
        "steps": settings.default_steps,
        "cfg": settings.default_cfg,
        "frames": settings.default_frames,
        "fps": settings.default_fps,
    }


CONTROLNET_PREFIX = "controlnet_"
# workflows of custom nodes that are off until a setting names their model: workflow -> (value, setting)
OPTIONAL_MODELS = {"interpolate": ("interpolate_model", "interpolate_model"),
                   "text_to_video": ("motion_model", "animatediff_model")}


def workflow_values(settings: Settings, name: str) -> dict[str, object] | None:
    """The values workflow `name` is validated with; None for a ControlNet type nobody may choose
    (CONTROLNET_MODELS names no model file for it), which is not checked."""
    values = default_values(settings)
    if name in OPTIONAL_MODELS:  # off (and not checked) while its setting is empty
        value, setting = OPTIONAL_MODELS[name]
        if not getattr(settings, setting):
            return None
        values[value] = getattr(settings, setting)
    if name.startswith(CONTROLNET_PREFIX):
        control_net = settings.controlnet_models.get(name.removeprefix(CONTROLNET_PREFIX))
        if control_net is None:
            return None
        values["control_net"] = control_net
    return values


async def run_check(settings: Settings, *, smoke: bool = False, out: Print = print) -> int:
    out("Configuration")
    for name, value in settings.described().items():
        out(f"  {name:<22} {value}")
    try:
        workflows = load_set(settings.workflow_dir())
    except WorkflowError as error:
        out(f"Workflows: the set in {settings.workflow_dir()} cannot be loaded")
        for problem in error.problems:
            out(f"  {problem}")
        return 1
    failed = False
    try:
        found = load_styles(settings.styles_file)
        out(f"Styles: {len(found)} in {settings.styles_file}")
    except StyleError as error:
        out(f"Styles: {error}")
        failed = True
    for url in settings.servers():
        failed |= not await _check_server(settings, url, workflows, smoke, out)
    for endpoint in settings.runpod_endpoints:
        failed |= not await _check_endpoint(settings, endpoint, workflows, out)
    out("All checks passed." if not failed else "Some checks failed (see above).")
    return 1 if failed else 0


async def _check_server(settings: Settings, url: str, workflows: dict, smoke: bool, out: Print) -> bool:
    """One server of the pool: answers, version, queue, workflows, and optionally the smoke jobs."""
    async with ComfyClient(url, headers=settings.comfyui_headers(), timeout=settings.comfyui_timeout) as client:
        out(f"ComfyUI at {redact_url(url)}")
        try:
            stats = await client.system_stats()
            running, pending = await client.queue()
            object_info = await client.object_info()
        except Unreachable as error:
            out(f"  does not answer: {error}")
            return False
        except ComfyError as error:  # it answers, but not as ComfyUI does
            out(f"  cannot be used: {error}")
            return False
        version = server_line(stats["system"].get("comfyui_version") or "", 40) or "(version unknown)"
        devices = ", ".join(server_line(device.get("name") or "", 80) or "?" for device in stats["devices"][:8]) or "unknown"
        out(f"  answers: ComfyUI {version}, devices: {devices}")
        method = preview_method(stats["system"].get("argv"))
        out(f"  previews: on ({method})" if method else
            "  previews: off; start ComfyUI with --preview-method auto to show them while a job runs")
        out(f"  queue: {len(running)} running, {len(pending)} waiting; {len(object_info)} node classes")
        out(f"Workflows (set {settings.workflow_set!r} in {settings.workflow_dir()})")
        ok = True
        for name, workflow in workflows.items():
            values = workflow_values(settings, name)
            if values is None:
                out(f"  {name:<10} not offered: {OPTIONAL_MODELS[name][1].upper()} is not set" if name in OPTIONAL_MODELS
                    else f"  {name:<10} not offered: CONTROLNET_MODELS names no model file for "
                    f"{name.removeprefix(CONTROLNET_PREFIX)!r}")
                continue
            problems = validate(workflow, object_info, {k: v for k, v in values.items() if k in workflow.params})
            out(f"  {name:<10} {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                out(f"    {problem}")
            ok &= not problems
        ok &= _check_presets(settings, workflows, object_info, out)
        if smoke and ok:
            outputs = make_results(settings)  # with OUTPUT_STORE the smoke results go up to the bucket too
            try:
                await outputs.open()
                ok = await _smoke(Engine(client, workflows, outputs, settings), out)
            except OutputError as error:
                out(f"results: {error}")
                ok = False
            finally:
                await outputs.close()
    return ok


async def _check_endpoint(settings: Settings, endpoint: RunPodEndpoint, workflows: dict, out: Print) -> bool:
    """A RunPod endpoint: its /health (are the id and key right?), the kinds whose model files its settings do
    not list, and what is taken on trust (it has no /object_info to validate the workflows against)."""
    name = f"RunPod endpoint {endpoint.endpoint_id}"
    out(f"{name} at {redact_url(endpoint.base_url)}")
    client = RunPodClient(endpoint.endpoint_id, endpoint.api_key.get_secret_value(), base_url=endpoint.base_url,
                          name=name, timeout=settings.comfyui_timeout, retries=2, backoff=(1.0, 5.0))
    try:
        workers = await client.health()
    except KeyRefused:
        out("  the API key was refused (401): check its api_key in RUNPOD_ENDPOINTS")
        return False
    except NoEndpoint:
        out(f"  no endpoint with id {endpoint.endpoint_id!r} (404): check its endpoint_id in RUNPOD_ENDPOINTS")
        return False
    except Unreachable as error:
        out(f"  unreachable: {error}")
        return False
    except ComfyError as error:
        out(f"  cannot be used: {error}")
        return False
    finally:
        await client.close()
    out("  answers: ok, workers: " + ", ".join(f"{workers.get(state, 0)} {state}" for state in
                                              ("ready", "idle", "running")))
    missing = unlisted(endpoint, kinds.model_files_needed(settings, workflows))
    out("  models: these kinds never go to it, as RUNPOD_ENDPOINTS lists no model file they need: "
        + ", ".join(f"{kind} ({', '.join(names)})" for kind, names in missing.items()) if missing else
        "  models: every model file the settings name for its kinds is listed for it")
    out(f"  taken on trust: {TRUST}")
    return True


def _check_presets(settings: Settings, workflows: dict, object_info: dict, out: Print) -> bool:
    """Each model preset's checkpoint, sampler and scheduler against the server, and where LoRAs attach."""
    ok = True
    txt2img = workflows.get("txt2img")
    if txt2img is not None and settings.model_presets:
        out("Model presets")
        for name, preset in settings.model_presets.items():
            values = {"checkpoint": preset.checkpoint, "sampler": preset.sampler, "scheduler": preset.scheduler}
            problems = validate(txt2img, object_info, txt2img.applied({k: v for k, v in values.items() if v}))
            out(f"  {name:<10} {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                out(f"    {problem}")
            ok &= not problems
    attaching = [(name, workflow) for name, workflow in workflows.items()
                 if workflow.lora is not None and not workflow.extends]
    if attaching:
        out("Where LoRAs attach")
    for name, workflow in attaching:
        problem = lora_problem(workflow, object_info)
        out(f"  {name:<10} at {' and '.join(f'{t.node}.{t.input}' for t in workflow.lora)}: {problem or 'ok'}")
        ok &= problem is None
    return ok


def lora_problem(workflow: Workflow, object_info: dict) -> str | None:
    """Why the outputs a workflow names for LoRAs are not a MODEL and a CLIP, or None."""
    for target, wanted in zip(workflow.lora, ("MODEL", "CLIP")):
        class_type = workflow.graph[target.node]["class_type"]
        outputs = (object_info.get(class_type) or {}).get("output") or []
        index = int(target.input)
        if index >= len(outputs) or outputs[index] != wanted:
            return (f"output {index} of node {target.node} ({class_type}) is "
                    f"{outputs[index] if index < len(outputs) else 'missing'}, not {wanted}")
    return None


def preview_method(argv: object) -> str | None:
    """The preview method ComfyUI was started with (its `--preview-method`), None when it sends none."""
    if not isinstance(argv, list):
        return None
    args = [str(arg) for arg in argv]
    for index, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--preview-method=") else (
            args[index + 1] if arg == "--preview-method" and index + 1 < len(args) else None)
        if value is not None:
            return None if value == "none" else server_line(value, 20)
    return None


SMOKE = {"prompt": "bot.py check --smoke", "width": 256, "height": 256, "strength": 0.5, "factor": 2, "zoom": 2.0}


def _mask(size: tuple[int, int]) -> bytes:
    """An inpaint mask for the smoke test: white (redrawn) in the middle, black around it."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


async def _smoke(engine: Engine, out: Print) -> bool:
    """Every kind of job the bot offers (kinds.KINDS), once: text to image first, then each kind that takes an
    image from its result (inpaint with a mask made here)."""
    out("Smoke test")
    settings, source, video, held = engine.settings, None, None, []
    try:
        for kind in kinds.KINDS.values():
            request = {**SMOKE, "control_type": next(iter(settings.controlnet_models), None)}
            if kind.name == "controlnet" and request["control_type"] is None:
                out(f"  {kind.name}: skipped, ControlNet is not offered (see CONTROLNET_MODELS)")
                continue
            optional = OPTIONAL_MODELS.get(kind.workflow_for(request))
            if optional is not None and not getattr(settings, optional[1]):
                out(f"  {kind.name}: skipped, {optional[1].upper()} is not set")
                continue
            if kind.workflow_for(request) not in engine.workflows:
                out(f"  {kind.name}: skipped, the workflow set has no {kind.workflow_for(request)!r} workflow")
                continue
            began = time.monotonic()
            try:
                if kind.image_input and source is not None:
                    request["input"] = source.name
                if kind.video_input and video is not None:  # their input is the animation
                    request.update(input=video.name, fps=settings.default_fps)
                if kind.name == "inpaint" and source is not None:
                    mask = await engine.outputs.save_bytes("smoke-mask.png", _mask((SMOKE["width"], SMOKE["height"])))
                    held.append(mask)
                    request["mask"] = mask.name
                result = await kind.run(engine, kind.prepare(settings, request),
                                        video if kind.video_input else source, {})
            except (ComfyError, WorkflowError, RequestError, OutputError) as error:
                out(f"  {kind.name}: FAILED: {error}")
                return False
            if source is None:
                source, kept = result.files[0], result.files[1:]
                held.append(source)
            elif kind.name == "animate" and video is None:
                video, kept = result.files[0], result.files[1:]
                held.append(video)
            else:
                kept = result.files
            for path in kept:
                engine.outputs.release(path)
            seed = f", seed {result.seed}" if result.seed is not None else ""
            out(f"  {kind.name}: ok in {time.monotonic() - began:.2f} s{seed}: {', '.join(map(str, result.files))}")
    finally:
        for path in held:
            engine.outputs.release(path)
    return True
