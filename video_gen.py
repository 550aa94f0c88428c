"""Video jobs: animate an image (SVD), upscale a video, interpolate its frames (RIFE) and make a video from
a prompt (AnimateDiff); each result posted as the MP4, WebP or GIF that fits the upload limit. Knows
nothing of Discord.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from image_gen import RequestError, prompt_values, resolve_seed, upload
from backends.runner import Engine, EventHandler, JobResult, run_workflow
from results.folder import OutputError
from results.media import choose_video_format

MAX_SIDE = 1024  # video models work at about this size; larger inputs are scaled down
MULTIPLE = 8  # latent video models and H.264 both want sides divisible by 8 (H.264: by 2)
MAX_FPS = 60
MOTION = (1, 1023)  # SVD's motion_bucket_id: how much moves
VIDEO_FACTORS = (2, 4)  # Upscale on a video
INTERPOLATE_MULTIPLIER = 2  # Interpolate doubles the frame rate
TEXT_FRAMES = (16, 32)  # /video: AnimateDiff's default, and its most without sliding context windows
TEXT_SIDE = 768  # /video: AnimateDiff on SD 1.5 draws at about 512


def video_size(width: int, height: int) -> tuple[int, int]:
    """The frame size for an input image: same aspect, longest side at most MAX_SIDE, multiples of 8."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return (max(MULTIPLE, int(width * scale) // MULTIPLE * MULTIPLE),
            max(MULTIPLE, int(height * scale) // MULTIPLE * MULTIPLE))


def _image_size(image: Path) -> tuple[int, int]:
    try:
        with Image.open(image) as opened:
            return opened.size
    except (OSError, UnidentifiedImageError):
        raise RequestError(f"{image.name} is not an image that can be animated") from None


def check_animation(settings: Any, frames: int, fps: int, motion: int) -> None:
    """RequestError, in words, for an animation's frames, frame rate or motion out of range."""
    if not 1 <= frames <= settings.max_frames:
        raise RequestError(f"frames must be between 1 and {settings.max_frames} (got {frames})")
    if not 1 <= fps <= MAX_FPS:
        raise RequestError(f"fps must be between 1 and {MAX_FPS} (got {fps})")
    if not MOTION[0] <= motion <= MOTION[1]:
        raise RequestError(f"motion must be between {MOTION[0]} and {MOTION[1]} (got {motion})")


async def animate(engine: Engine, image: Path, *, frames: int | None = None, fps: int | None = None,
                  motion: int | None = None, seed: int | None = None, limit: int | None = None,
                  on_event: EventHandler | None = None, prompt_id: str | None = None,
                  attach: bool = False) -> JobResult:
    settings = engine.settings
    frames, fps = frames or settings.default_frames, fps or settings.default_fps
    motion = motion or settings.default_motion
    check_animation(settings, frames, fps, motion)
    width, height = video_size(*await asyncio.to_thread(_image_size, image))
    values = {
        "image": await upload(engine, image),
        "video_checkpoint": settings.video_checkpoint,
        "width": width,
        "height": height,
        "frames": frames,
        "fps": fps,
        "motion": motion,
        "seed": resolve_seed(seed),
    }
    result = await run_workflow(engine, "animate", values, on_event=on_event, prompt_id=prompt_id, attach=attach)
    return await posted(engine, result, limit)


async def upscale_video(engine: Engine, video: Path, factor: int, *, limit: int | None = None,
                        on_event: EventHandler | None = None, prompt_id: str | None = None,
                        attach: bool = False) -> JobResult:
    """Every frame upscaled with the upscale model, then resized to `factor`, at the same frame rate."""
    if factor not in VIDEO_FACTORS:
        raise RequestError(f"a video can be upscaled {' or '.join(f'{f}x' for f in VIDEO_FACTORS)}")
    settings = engine.settings
    uses_model = "upscale_model" in engine.workflow("video_upscale").params
    values = {"video": await upload(engine, video), "upscale_model": settings.upscale_model,
              "scale": factor / settings.upscale_model_scale if uses_model else float(factor)}
    result = await run_workflow(engine, "video_upscale", values, on_event=on_event, prompt_id=prompt_id,
                                attach=attach)
    result.params["factor"] = factor
    return await posted(engine, result, limit)


async def interpolate(engine: Engine, video: Path, fps: int, *, limit: int | None = None,
                      on_event: EventHandler | None = None, prompt_id: str | None = None,
                      attach: bool = False) -> JobResult:
    """A frame made between every two (RIFE), played at twice the frame rate `fps` of the video: as long,
    smoother."""
    if not engine.settings.interpolate_model:
        raise RequestError("Interpolate is off on this bot (the operator has not set INTERPOLATE_MODEL)")
    values = {"video": await upload(engine, video), "interpolate_model": engine.settings.interpolate_model,
              "multiplier": INTERPOLATE_MULTIPLIER, "fps": min(MAX_FPS * 2, fps * INTERPOLATE_MULTIPLIER)}
    result = await run_workflow(engine, "interpolate", values, on_event=on_event, prompt_id=prompt_id,
                                attach=attach)
    return await posted(engine, result, limit)


def text_video_values(settings: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow values of a /video request (prompt, size, frames, fps, seed), checked; the seed resolved."""
    if not settings.animatediff_model:
        raise RequestError("no server of this bot can make videos from text (the operator has not set "
                           "ANIMATEDIFF_MODEL)")
    frames = int(request.get("frames") or TEXT_FRAMES[0])
    fps = int(request.get("fps") or settings.default_fps)
    if not 1 <= frames <= min(TEXT_FRAMES[1], settings.max_frames):
        raise RequestError(f"frames must be between 1 and {min(TEXT_FRAMES[1], settings.max_frames)} (got {frames})")
    if not 1 <= fps <= MAX_FPS:
        raise RequestError(f"fps must be between 1 and {MAX_FPS} (got {fps})")
    width, height = int(request.get("width") or 512), int(request.get("height") or 512)
    if not (64 <= width <= TEXT_SIDE and 64 <= height <= TEXT_SIDE):
        raise RequestError(f"a video from text is at most {TEXT_SIDE}x{TEXT_SIDE} (got {width}x{height})")
    return {**prompt_values(dict(request)), "seed": resolve_seed(request.get("seed")),
            "steps": int(request.get("steps") or settings.default_steps),
            "cfg": float(settings.default_cfg if request.get("cfg") is None else request["cfg"]),
            "width": width // MULTIPLE * MULTIPLE, "height": height // MULTIPLE * MULTIPLE,
            "frames": frames, "fps": fps,
            "checkpoint": request.get("checkpoint") or settings.checkpoint,
            "motion_model": settings.animatediff_model}


async def text_to_video(engine: Engine, request: Mapping[str, Any], *, limit: int | None = None,
                        on_event: EventHandler | None = None, prompt_id: str | None = None,
                        attach: bool = False) -> JobResult:
    values = text_video_values(engine.settings, request)
    result = await run_workflow(engine, "text_to_video", values, on_event=on_event, prompt_id=prompt_id, attach=attach)
    return await posted(engine, result, limit)


async def posted(engine: Engine, result: JobResult, limit: int | None) -> JobResult:
    """The result as it will be posted: its MP4 if that fits `limit` (the channel's upload limit), else a WebP
    or GIF made from the frames the workflow saved beside it; the other files released. The choice, with
    its reason, is `params["format"]`."""
    videos = [path for path in result.files if path.suffix.lower() == ".mp4"]
    if not videos:  # an operator's workflow that saves no MP4: its files as they are
        return result
    frames = next((path for path in result.files if path.suffix.lower() in (".webp", ".png", ".gif")), None)
    try:
        choice = await choose_video_format(videos[0], frames, int(limit or engine.settings.upload_limit))
        chosen = videos[0]
        if choice.data is not None:
            chosen = await engine.outputs.save_bytes(videos[0].stem + choice.suffix, choice.data)
            await engine.outputs.keep(chosen)
    except OutputError:  # nothing fits, or the folder refused the copy: nobody will post these
        for path in result.files:
            engine.outputs.release(path)
        raise
    for path in result.files:
        if path != chosen:
            engine.outputs.release(path)
    result.files = [chosen]
    result.params["format"] = choice.reason
    return result
