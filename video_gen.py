"""Video jobs: animate an image into an MP4. Knows nothing of Discord."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from image_gen import RequestError, resolve_seed, upload
from backends.runner import Engine, EventHandler, JobResult, run_workflow

MAX_SIDE = 1024  # video models work at about this size; larger inputs are scaled down
MULTIPLE = 8  # latent video models and H.264 both want sides divisible by 8 (H.264: by 2)


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


async def animate(engine: Engine, image: Path, *, frames: int | None = None, fps: int | None = None,
                  seed: int | None = None, on_event: EventHandler | None = None,
                  prompt_id: str | None = None, attach: bool = False) -> JobResult:
    settings = engine.settings
    frames = frames or settings.default_frames
    fps = fps or settings.default_fps
    if not 1 <= frames <= settings.max_frames:
        raise RequestError(f"frames must be between 1 and {settings.max_frames} (got {frames})")
    if not 1 <= fps <= 60:
        raise RequestError(f"fps must be between 1 and 60 (got {fps})")
    width, height = video_size(*await asyncio.to_thread(_image_size, image))
    values = {
        "image": await upload(engine, image),
        "video_checkpoint": settings.video_checkpoint,
        "width": width,
        "height": height,
        "frames": frames,
        "fps": fps,
        "seed": resolve_seed(seed),
    }
    return await run_workflow(engine, "animate", values, on_event=on_event, prompt_id=prompt_id, attach=attach)
