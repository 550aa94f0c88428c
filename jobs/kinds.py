"""Job kinds, each one declaration: what it runs, what it needs, what its result offers and is called.

The scheduler, the store, delivery and views read a `Kind` and never name one, so adding a kind is
a declaration here, its workflow files and its tests. Knows nothing of Discord: `buttons` names
the actions a result offers, and views turns each name into its restart-proof buttons.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Settings
from image_gen import (ImageRequest, RequestError, check_upscale, controlnet, controlnet_values, image_to_image,
                       img2img_values, inpaint, outpaint, outpaint_values, resolve_seed, text_to_image,
                       txt2img_values, upscale)
from backends.runner import Engine, JobResult
from backends.runpod import model_files
from video_gen import (VIDEO_FACTORS, animate, check_animation, interpolate, text_to_video, text_video_values,
                       upscale_video)
from jobs import user_workflow

IMAGE_FIELDS = {f.name for f in dataclasses.fields(ImageRequest)}
FILES = ("input", "mask", "inputs")  # request values that name files in the output folder: pinned until the job ends


API_CHANNEL = 0  # the channel_id of a job that came through the HTTP API: it has no Discord channel


def from_discord(channel_id: int) -> bool:
    return channel_id != API_CHANNEL


def result_channel(request: Mapping[str, Any], channel_id: int) -> int:
    """Where a job's result is posted: its channel, or the age-restricted one it was sent to."""
    return int(request.get("deliver_to") or channel_id)


def files(request: Mapping[str, Any]) -> list[str]:
    """The output folder's files a request needs (its input image, its mask, the images of an Upscale all)."""
    named = [request[key] if isinstance(request.get(key), list) else [request.get(key)] for key in FILES]
    return list(dict.fromkeys(name for names in named for name in names if isinstance(name, str)))


# What a job derived from a result (Upscale, Vary, Zoom out, Animate, Reroll, Remix, Apps -> Vary this image)
# takes from the request that made it: every choice the person made. The action then sets what it changes.
CHOICES = ("prompt", "negative_prompt", "model", "checkpoint", "steps", "cfg", "sampler", "scheduler", "loras",
           "style", "style_prompt", "style_negative", "sfw_negative", "deliver_to")
PER_RUN = ("seed", "upload_limit", "pipeline")  # never passed on: a derived job draws anew and is posted where it was
# asked, and runs alone (a Reroll of a pipeline's result runs its last step again, not the pipeline)


def derived(made: Mapping[str, Any], shown: Mapping[str, Any], *, again: bool = False) -> dict[str, Any]:
    """The request a job derived from a result starts from. `made`: the request of the job that made
    the result (empty when that job is gone); `shown`: the result's shown values. `again` (Reroll,
    Remix: the same kind once more): all of `made` but its per-run values; otherwise its choices, then
    the result's size."""
    if again:
        return {key: value for key, value in made.items() if key not in PER_RUN}
    request = {key: made.get(key, shown.get(key)) for key in CHOICES if made.get(key, shown.get(key)) is not None}
    if shown.get("width") and shown.get("height"):
        request["width"], request["height"] = shown["width"], shown["height"]
    return request


Runner = Callable[[Engine, Mapping[str, Any], Path | None, dict[str, Any]], Awaitable[JobResult]]


@dataclass(frozen=True)
class Kind:
    name: str  # as stored with each job, and the name of the workflow that runs it
    noun: str  # what people call its result: "your image is ready"
    title: Callable[[Mapping[str, Any], int], str]  # the result's title, from its shown values and file count
    models: Callable[[Settings, Mapping[str, Any]], dict[str, Any]]  # model files it needs, as workflow values
    run: Runner  # (engine, request, input image or None, options for run_workflow)
    prepare: Callable[[Settings, dict[str, Any]], dict[str, Any]] = lambda settings, request: request
    sampling: str = "Drawing"  # what its sampler's stage is called while it runs
    image_input: bool = False  # the request names an image in the output folder ("input"), uploaded first
    video_input: bool = False  # ... and that input is one of the bot's video results (not for the HTTP API)
    buttons: tuple[str, ...] = ()  # the actions its result offers per image ("upscale", "animate")
    shown: tuple[str, ...] = ()  # request values its result shows beside the workflow's ("model", "factor")
    workflow: Callable[[Mapping[str, Any]], str] | None = None  # the workflow a request runs, when not `name`
    load: Callable[[Any, Mapping[str, Any]], Awaitable[dict[str, Any]]] | None = None  # (store, request) -> more
    # options for `run`, read from the store when the job runs (someone's own workflow: jobs/user_workflow.py)

    def workflow_for(self, request: Mapping[str, Any]) -> str:
        """The workflow that runs this request: what a server must be able to run to take it."""
        return self.workflow(request) if self.workflow is not None else self.name


# what a sampling job's result shows as the person asked for it (the prompt without its style's template), and
# why model:auto chose its model (jobs/auto_model.py). Reroll and Remix keep the chosen model and do not
# choose again (`derived` with again): the person sees the choice, and picks another with model:
SAMPLING_SHOWN = ("model", "prompt", "negative_prompt", "style", "loras", "sampler", "model_reason")


def _prepare_txt2img(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    request["seed"] = resolve_seed(request.get("seed"))  # resolved once: a retry gives the same image
    txt2img_values(settings, ImageRequest(**{key: value for key, value in request.items() if key in IMAGE_FIELDS}))
    return request


def _prepare_img2img(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    request["seed"] = img2img_values(settings, request)["seed"]  # checked, and the seed resolved once
    return request


def _prepare_outpaint(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    values = outpaint_values(settings, request)  # checked, and the seed resolved once
    request["seed"] = values["seed"]
    request["source_width"], request["source_height"] = request["width"], request["height"]
    request["width"] += 2 * values["pad_x"]  # what the result will measure, for its embed
    request["height"] += 2 * values["pad_y"]
    return request


def _checkpoint(settings: Settings, request: Mapping[str, Any]) -> dict[str, Any]:
    """The model files of a job that samples: its preset's checkpoint (or the default one), and its
    LoRAs, so that it goes only to a server that has them all."""
    loras = tuple((str(name), float(strength)) for name, strength in request.get("loras") or ())
    return {"checkpoint": request.get("checkpoint") or settings.checkpoint, **({"loras": loras} if loras else {})}


def _prepare_controlnet(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    request["control_type"] = request.get("control_type") or "canny"
    values = controlnet_values(settings, request)  # checked, and the seed resolved once
    request.update(seed=values["seed"], width=values["width"], height=values["height"])
    return request


def _controlnet_models(settings: Settings, request: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint, and the ControlNet model file the operator chose for the request's control type."""
    control_net = settings.controlnet_models.get(str(request.get("control_type") or "canny"))
    return {**_checkpoint(settings, request), **({"control_net": control_net} if control_net else {})}


def _prepare_upscale(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    check_upscale(request)
    return request


def _prepare_animate(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    request["seed"] = resolve_seed(request.get("seed"))
    request["motion"] = int(request.get("motion") or settings.default_motion)
    check_animation(settings, int(request.get("frames") or settings.default_frames),
                    int(request.get("fps") or settings.default_fps), request["motion"])
    return request


def _video(run: Runner) -> Runner:
    """A video kind's runner, given the channel's upload limit: the format it chose to fit it, and why, is
    in the result's values (params["format"]), which the result shows (jobs/endings.SHOWN)."""
    async def runner(engine: Engine, request: Mapping[str, Any], source: Path | None,
                     options: dict[str, Any]) -> JobResult:
        return await run(engine, request, source, {**options, "limit": request.get("upload_limit")})
    return runner


def _prepare_video_upscale(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    if request.get("factor") not in VIDEO_FACTORS:
        raise RequestError(f"a video can be upscaled {' or '.join(f'{f}x' for f in VIDEO_FACTORS)}")
    return request


def _prepare_interpolate(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The source's frame rate is what RIFE's frames play at, twice over; the result shows the new rate."""
    if "source_fps" not in request:
        request["source_fps"] = int(request.get("fps") or settings.default_fps)
        request["fps"] = 2 * request["source_fps"]
        if request.get("frames"):
            request["frames"] = 2 * int(request["frames"]) - 1
    return request


def _prepare_text_to_video(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    values = text_video_values(settings, request)  # checked, and the seed resolved once
    request.update({key: values[key] for key in ("seed", "frames", "fps", "width", "height")})
    return request


VIDEO_SHOWN = ("offers",)  # the video actions servers offered when it was made


TXT2IMG = Kind(
    name="txt2img", noun="image",
    title=lambda shown, count: "Image" if count == 1 else f"{count} images",
    models=_checkpoint,
    run=lambda engine, request, source, options: text_to_image(
        engine, ImageRequest(**{key: value for key, value in request.items() if key in IMAGE_FIELDS}), **options),
    prepare=_prepare_txt2img, buttons=("upscale", "vary", "animate", "reroll", "remix", "zoom"),
    shown=SAMPLING_SHOWN,
)
IMG2IMG = Kind(
    name="img2img", noun="image",
    title=lambda shown, count: "Edited image",
    models=_checkpoint,
    run=lambda engine, request, source, options: image_to_image(engine, source, dict(request), **options),
    prepare=_prepare_img2img, image_input=True, buttons=("upscale", "vary", "animate", "zoom"),
    shown=(*SAMPLING_SHOWN, "width", "height"),
)
INPAINT = dataclasses.replace(  # an img2img whose mask (request["mask"]) says which part is redrawn
    IMG2IMG, name="inpaint",
    run=lambda engine, request, source, options: inpaint(engine, source, dict(request), **options),
)
OUTPAINT = Kind(
    name="outpaint", noun="image",
    title=lambda shown, count: f"Zoomed out {shown['zoom']:g}x" if shown.get("zoom") else "Zoomed out",
    models=_checkpoint,
    run=lambda engine, request, source, options: outpaint(
        engine, source, {**request, "width": request["source_width"], "height": request["source_height"]}, **options),
    prepare=_prepare_outpaint, image_input=True, buttons=("upscale", "vary", "animate", "zoom"),
    shown=(*SAMPLING_SHOWN, "zoom", "width", "height"),
)
UPSCALE = Kind(
    name="upscale", noun="upscale",
    title=lambda shown, count: (f"Upscaled {shown['factor']}x" if shown.get("factor") else "Upscaled")
    + (f": {count} images" if count > 1 else ""),
    models=lambda settings, request: {"upscale_model": settings.upscale_model},
    run=lambda engine, request, source, options: upscale(  # Upscale all: request["inputs"] names each image
        engine, [source.with_name(name) for name in request["inputs"]] if request.get("inputs") else source,
        int(request["factor"]), **options),
    prepare=_prepare_upscale, sampling="Upscaling", image_input=True, buttons=("animate",), shown=("factor",),
)
ANIMATE = Kind(
    name="animate", noun="animation",
    title=lambda shown, count: "Animation",
    models=lambda settings, request: {"video_checkpoint": settings.video_checkpoint},
    run=_video(lambda engine, request, source, options: animate(
        engine, source, frames=request.get("frames"), fps=request.get("fps"), motion=request.get("motion"),
        seed=request.get("seed"), **options)),
    prepare=_prepare_animate, sampling="Animating", image_input=True,
    buttons=("video_upscale", "interpolate", "animate_form"), shown=("motion", *VIDEO_SHOWN),
)
VIDEO_UPSCALE = Kind(  # every frame of a video result (request["input"]) upscaled, at the same frame rate
    name="video_upscale", noun="video",
    title=lambda shown, count: f"Upscaled video {shown['factor']}x" if shown.get("factor") else "Upscaled video",
    models=lambda settings, request: {"upscale_model": settings.upscale_model},
    run=_video(lambda engine, request, source, options: upscale_video(engine, source, int(request["factor"]),
                                                                      **options)),
    prepare=_prepare_video_upscale, sampling="Upscaling", image_input=True, video_input=True, buttons=("interpolate",),
    shown=("factor", "frames", "fps", *VIDEO_SHOWN),
)
INTERPOLATE = Kind(  # a frame made between every two of a video result (RIFE), at twice the frame rate
    name="interpolate", noun="video",
    title=lambda shown, count: "Interpolated video: twice the frame rate",
    models=lambda settings, request: {"interpolate_model": settings.interpolate_model},
    run=_video(lambda engine, request, source, options: interpolate(engine, source, int(request["source_fps"]),
                                                                    **options)),
    prepare=_prepare_interpolate, sampling="Interpolating", image_input=True, video_input=True,
    buttons=("video_upscale",),
    shown=("frames", "fps", "width", "height", *VIDEO_SHOWN),
)
TEXT_TO_VIDEO = Kind(  # /video: a short video drawn from a prompt (AnimateDiff)
    name="text_to_video", noun="video",
    title=lambda shown, count: "Video",
    models=lambda settings, request: {"checkpoint": request.get("checkpoint") or settings.checkpoint,
                                      "motion_model": settings.animatediff_model},
    run=_video(lambda engine, request, source, options: text_to_video(engine, request, **options)),
    prepare=_prepare_text_to_video, buttons=("video_upscale", "interpolate", "reroll"),
    shown=("prompt", "negative_prompt", *VIDEO_SHOWN),
)
CONTROLNET = Kind(  # text to image whose composition follows a control image (request["input"])
    name="controlnet", noun="image",
    title=lambda shown, count: f"Image after your {shown['control_type']} map" if shown.get("control_type") else "Image",
    models=_controlnet_models,
    run=lambda engine, request, source, options: controlnet(engine, source, dict(request), **options),
    prepare=_prepare_controlnet, image_input=True, buttons=("upscale", "vary", "animate", "zoom"),
    shown=(*SAMPLING_SHOWN, "control_type"), workflow=lambda request: f"controlnet_{request.get('control_type') or 'canny'}",
)
WORKFLOW = Kind(  # someone's own workflow (/workflow add), a version of it read from the store when it runs
    name=user_workflow.NAME, noun="image",
    title=lambda shown, count: f"{shown.get('workflow_name') or 'Workflow'} v{shown.get('workflow_version') or '?'}"
    + (f": {count} images" if count > 1 else ""),
    models=user_workflow.models, run=user_workflow.run, prepare=user_workflow.prepare,
    buttons=("upscale", "vary", "animate", "reroll", "zoom"),
    shown=(*SAMPLING_SHOWN, "workflow_name", "workflow_version"),
    workflow=user_workflow.workflow_name, load=user_workflow.load,
)
KINDS = {kind.name: kind for kind in (TXT2IMG, IMG2IMG, INPAINT, OUTPAINT, UPSCALE, ANIMATE, CONTROLNET, WORKFLOW,
                                       VIDEO_UPSCALE, INTERPOLATE, TEXT_TO_VIDEO)}


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise RequestError(f"this bot does not know the job kind {name!r}") from None


def noun(name: str) -> str:
    kind = KINDS.get(name)
    return kind.noun if kind is not None else "job"


def model_files_needed(settings: Settings, workflows: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each kind of job (with the settings' default models) -> the model files it needs: what a server with
    no node list to check (a RunPod endpoint) must hold to take it. Kinds without a workflow are left out."""
    needed = {}
    for kind in KINDS.values():
        workflow = workflows.get(kind.workflow_for({}))
        if workflow is not None:
            needed[kind.name] = model_files(workflow.applied(kind.models(settings, {})))
    return needed
