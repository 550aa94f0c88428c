"""Files as Discord takes them: a result checked to be the image or video it claims, an image
fitted to an upload limit, and a video's format (MP4, WebP or GIF) chosen to fit one.

A proxy in front of ComfyUI answers errors with a web page, which would be saved under the
result's name; a cut download leaves a truncated image. Either would reach Discord as a broken
attachment, so `verify` refuses it in words first. A result larger than a channel accepts can
be re-encoded by `fit_to_limit` if it is a still image; a video by `choose_video_format`, from the
frames its workflow saved beside the MP4. All Pillow work runs in a thread.
"""

import asyncio
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import structlog
from PIL import Image, ImageOps, ImageSequence, features

from results.folder import OutputError, _mib, _reason

log = structlog.get_logger(__name__)

_QUALITIES = (90, 80, 70, 55, 40)
_SCALE = 0.75
_SCALE_STEPS = 4
_REENCODABLE = frozenset({"PNG", "WEBP", "JPEG"})
_VIDEO_SUFFIXES = frozenset({".mp4", ".webm"})

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
# Only the formats Discord shows inline are tried: Pillow then never runs its other decoders
# (EPS hands the file to Ghostscript) on a file a server named `.png`.
_POSTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# (offset, magic) of each video container: a video is not decoded, only its header is checked.
_VIDEO_MAGIC = {".mp4": (4, b"ftyp"), ".webm": (0, b"\x1a\x45\xdf\xa3")}
_HEAD = 1024


class TooLarge(OutputError):
    """A file cannot be brought under an upload limit."""


class BadResult(OutputError):
    """A result is not the image or video its name says (often a proxy's error page), so it is
    not posted: Discord would show a broken attachment."""


async def verify(path: Path) -> None:
    """Raise `BadResult` unless `path` is an image that decodes or a video with its container's
    header; only the file name goes into the message, never its content.

    A proxy in front of ComfyUI answers errors with a web page, which would be saved under the
    result's name; a cut download leaves a truncated image. Either would reach Discord as a
    broken attachment. Decoding runs in a thread, as it can take a while for a large image.
    """
    try:
        await asyncio.to_thread(_verify, path)
    except BadResult as exc:
        log.warning("output_bad_result", file=path.name, reason=str(exc))
        raise


def _verify(path: Path) -> None:
    """Runs in a thread: the checks of `verify`, cheapest first."""
    name, suffix = path.name, path.suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        kind = "an image"
    elif suffix in _VIDEO_MAGIC:
        kind = "a video"
    else:
        raise BadResult(f"The result {name} is not an image or video the bot can post.")
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD)
    except OSError as exc:
        raise OutputError(f"The result {name} could not be read ({_reason(exc)}).") from exc
    if not head:
        raise BadResult(f"The result {name} is empty, not {kind}.")
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 byte order mark, then blanks
    if text.startswith(b"<"):
        raise BadResult(
            f"The result {name} is a web page, not {kind}: probably an error page from the "
            "server or a proxy in front of it."
        )
    if text.startswith(b"{"):
        raise BadResult(
            f"The result {name} is JSON text, not {kind}: probably an error from the server."
        )
    if suffix in _VIDEO_MAGIC:
        offset, magic = _VIDEO_MAGIC[suffix]
        if head[offset : offset + len(magic)] != magic:
            raise BadResult(
                f"The video {name} is damaged or not in the {suffix[1:].upper()} format its "
                "name says."
            )
        return
    _decode(path)


def _decode(path: Path) -> None:
    """Check the image with Pillow's limits as they are set: a PNG by its chunks' checksums and end
    marker (a result is usually a PNG of megabytes: inflating it would cost ~4 ms a MiB), any other
    format by decoding it (the first frame of an animation).

    An image over `Image.MAX_IMAGE_PIXELS` is refused without being decoded, whether or not the
    process turns Pillow's DecompressionBombWarning into an error.
    """
    too_many = BadResult(f"The image {path.name} has too many pixels to be opened safely.")
    try:
        with Image.open(path, formats=_POSTED_FORMATS) as image:
            limit = Image.MAX_IMAGE_PIXELS
            bomb = limit is not None and image.width * image.height > limit
            if bomb:
                pass
            elif image.format == "PNG":
                image.verify()  # every chunk's CRC and the end marker: catches a cut file without inflating it
            else:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_many from exc
    # Pillow's decoders raise many types on bad data: OSError, SyntaxError, ValueError,
    # EOFError, struct.error...; their messages may quote the file's bytes, so none is shown.
    except Exception as exc:
        raise BadResult(
            f"The image {path.name} is damaged, cut short or not an image at all."
        ) from exc
    if bomb:
        raise too_many


async def fit_to_limit(path: Path, limit: int) -> Path:
    """Return `path` if it has at most `limit` bytes, else a re-encoded copy that does.

    Only still PNG, WebP and JPEG images are re-encoded; the first candidate of `_encodings`
    that fits wins. The copy is written next to the original as `<stem>.fit-<limit><ext>`:
    fitting the same file for the same limit again replaces it rather than piling up copies.
    The copy is not tracked by `OutputFolder`, so the caller deletes it once uploaded.
    """
    size = (await asyncio.to_thread(path.stat)).st_size
    if size <= limit:
        return path
    try:
        fitted, step, fitted_size = await asyncio.to_thread(_fit, path, size, limit)
    except TooLarge as exc:
        log.info("output_fit_failed", file=path.name, size=size, limit=limit, reason=str(exc))
        raise
    log.info(
        "output_fitted",
        file=path.name,
        size=size,
        limit=limit,
        step=step,
        fitted=fitted.name,
        fitted_size=fitted_size,
    )
    return fitted


def _fit(path: Path, size: int, limit: int) -> tuple[Path, str, int]:
    """Runs in a thread: the fitted copy, the step that produced it, and its size."""
    image = _load_still(path, size, limit)
    for step, suffix, data in _encodings(image):
        if len(data) <= limit:
            return _write_beside(path, f".fit-{limit}{suffix}", data), step, len(data)
    raise TooLarge(
        f"The image is {_mib(size)} and could not be shrunk enough; "
        f"this channel accepts files up to {_mib(limit)}."
    )


def _load_still(path: Path, size: int, limit: int) -> Image.Image:
    """Decode a still PNG, WebP or JPEG; anything else is not re-encoded, so it is TooLarge."""
    try:
        with Image.open(path) as image:
            animated = getattr(image, "n_frames", 1) > 1
            if image.format in _REENCODABLE and not animated:
                image.load()
                return image
            kind = "animation" if animated else "image"
    except (OSError, Image.DecompressionBombError):
        kind = "video" if path.suffix.lower() in _VIDEO_SUFFIXES else "file"
    raise TooLarge(f"The {kind} is {_mib(size)}; this channel accepts files up to {_mib(limit)}.")


def _encodings(image: Image.Image) -> Iterator[tuple[str, str, bytes]]:
    """Candidates, best first: lossless PNG, WebP at falling quality, then the same smaller.

    Each yields (step, suffix, bytes) and is encoded only when asked for.
    """
    if image.format != "JPEG":  # a JPEG is lossy already; as a PNG it only grows
        yield "png-optimize", ".png", _encode(image, "PNG", optimize=True, compress_level=9)
    lossy = image.convert("RGBA" if image.has_transparency_data else "RGB")
    for step in range(_SCALE_STEPS + 1):
        scale = _SCALE**step
        dimensions = (max(1, round(lossy.width * scale)), max(1, round(lossy.height * scale)))
        scaled = lossy.resize(dimensions, Image.Resampling.LANCZOS) if step else lossy
        for quality in _QUALITIES:
            yield f"webp-q{quality}-x{scale:.2f}", ".webp", _encode(scaled, "WEBP", quality=quality)


def _encode(image: Image.Image, image_format: str, **options: int | bool) -> bytes:
    buffer = BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _write_beside(original: Path, suffix: str, data: bytes) -> Path:
    """Write `data` as `<stem><suffix>` next to `original`, through a hidden temp file."""
    target = original.with_name(original.stem + suffix)
    descriptor, temp = tempfile.mkstemp(
        dir=original.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    return target


async def fit_input(path: Path, max_width: int, max_height: int) -> tuple[bytes, tuple[int, int], bytes | None]:
    """A person's image made ready for a workflow, in a thread: turned upright (EXIF), its first frame,
    RGB, scaled down so it fits `max_width` x `max_height`, sides multiples of 8, as PNG bytes; with
    its size and, when it has transparent parts, a mask of them (white where it is transparent).

    Only PNG, JPEG, WebP and GIF are opened, and never one with more pixels than Pillow's limit.
    """
    return await asyncio.to_thread(_fit_input, path, max_width, max_height)


async def fit_mask(path: Path, size: tuple[int, int]) -> bytes:
    """A mask a person sent (white where the image is to be redrawn), upright, grey, at `size`, as PNG."""
    return await asyncio.to_thread(_fit_mask, path, size)


def _fit_mask(path: Path, size: tuple[int, int]) -> bytes:
    return _encode(open_upright(path, "L").resize(size, Image.Resampling.BILINEAR), "PNG")


def open_upright(path: Path, mode: str) -> Image.Image:
    """A still image decoded in `mode`, turned as its EXIF says; BadResult for anything else or too large."""
    try:
        with Image.open(path, formats=_POSTED_FORMATS) as image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise BadResult(f"The image has more than {limit:,} pixels; send a smaller one.")
            image.seek(0)
            return ImageOps.exif_transpose(image).convert(mode)
    except BadResult:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadResult(f"The image has more than {Image.MAX_IMAGE_PIXELS:,} pixels; send a smaller one.") from exc
    except Exception as exc:  # Pillow's many decoder errors: the text may quote the file
        raise BadResult("The attachment is not a PNG, JPEG, WebP or GIF image that can be read.") from exc


def _fit_input(path: Path, max_width: int, max_height: int) -> tuple[bytes, tuple[int, int], bytes | None]:
    upright = open_upright(path, "RGBA")
    scale = min(1.0, max_width / upright.width, max_height / upright.height)
    size = (max(8, int(upright.width * scale) // 8 * 8), max(8, int(upright.height * scale) // 8 * 8))
    if size != upright.size:
        upright = upright.resize(size, Image.Resampling.LANCZOS)
    alpha = upright.getchannel("A")
    mask = _encode(ImageOps.invert(alpha), "PNG") if alpha.getextrema()[0] < 255 else None
    return _encode(upright.convert("RGB"), "PNG"), size, mask


# videos ---------------------------------------------------------------------------------------

_GIF_COLORS = 64  # a GIF's palette: fewer colours, fewer bytes; banding shows less in motion
_FRAME_PIXELS = 300_000_000  # the most pixels, all frames together, read to make a video smaller (~900 MB)


@dataclass(frozen=True)
class VideoChoice:
    """What a video result is posted as: `suffix` (".mp4", ".webp", ".gif"), the re-encoded file's bytes
    (None: the MP4 as it is) and why, in words for the result's embed."""

    suffix: str
    data: bytes | None
    reason: str


async def choose_video_format(video: Path, frames: Path | None, limit: int) -> VideoChoice:
    """The best format of a video that fits `limit` bytes: the MP4 when it fits (the sharpest per byte);
    else, made from `frames` (the same frames as an animated image), at full size and then smaller: an
    animated WebP at falling quality, or failing that a GIF of every other frame (on grainy frames its few
    colours can take fewer bytes than WebP's). The size is kept before the frame rate. Raises TooLarge, in
    words, when nothing fits."""
    size = (await asyncio.to_thread(video.stat)).st_size
    if size <= limit:
        return VideoChoice(".mp4", None, f"MP4, {_mib(size)}: fits this channel's {_mib(limit)} limit")
    if frames is None:
        raise TooLarge(f"The video is {_mib(size)}; this channel accepts files up to {_mib(limit)}.")
    choice = await asyncio.to_thread(_smaller_video, frames, size, limit)
    log.info("video_format_chosen", file=video.name, size=size, limit=limit, format=choice.suffix,
             fitted_size=len(choice.data or b""))
    return choice


def _smaller_video(frames: Path, size: int, limit: int) -> VideoChoice:
    """Runs in a thread: at each size, the first WebP, then GIF, that fits."""
    images, duration = _read_frames(frames)
    over = f"the MP4 ({_mib(size)}) is over this channel's {_mib(limit)} limit"
    halved = images[::2] if len(images) > 2 else images  # the GIF's: every other frame, each shown twice as long
    webp = features.check("webp")
    for scaled, scaled_half in zip(_scaled(images), _scaled(halved)):
        smaller = _smaller(images, scaled)
        for quality in _QUALITIES if webp else ():
            data = _animation(scaled, "WEBP", duration, quality=quality)
            if len(data) <= limit:
                return VideoChoice(".webp", data, f"WebP, {_mib(len(data))}: {over}{smaller}")
        data = _animation([_palette(image) for image in scaled_half], "GIF", duration * len(images) / len(halved),
                          optimize=True)
        if len(data) <= limit:
            return VideoChoice(".gif", data, f"GIF, {_mib(len(data))}: {over}, and so is a WebP of this size; "
                                             f"at half the frame rate{smaller}")
    raise TooLarge(f"The video is {_mib(size)}, and even as a small WebP or GIF it is over this channel's "
                   f"{_mib(limit)} limit; ask for fewer frames.")


def _read_frames(path: Path) -> tuple[list[Image.Image], float]:
    """An animated image's frames (RGB) and the milliseconds each is shown."""
    try:
        with Image.open(path, formats=("WEBP", "PNG", "GIF")) as animation:
            if getattr(animation, "n_frames", 1) * animation.width * animation.height > _FRAME_PIXELS:
                raise TooLarge(f"The video is over this channel's limit, and too long and large "
                               f"({animation.n_frames} frames of {animation.width}×{animation.height}) to make "
                               "smaller; ask for fewer frames.")
            duration = float(animation.info.get("duration") or 125)
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(animation)], duration
    except TooLarge:
        raise
    except Exception as exc:  # Pillow's many decoder errors
        raise TooLarge("The video is over this channel's limit, and its frames could not be read to "
                       "make it smaller.") from exc


def _scaled(images: list[Image.Image]) -> Iterator[list[Image.Image]]:
    for step in range(_SCALE_STEPS + 1):
        scale = _SCALE**step
        size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
        yield [image.resize(size, Image.Resampling.LANCZOS) for image in images] if step else images


def _smaller(original: list[Image.Image], scaled: list[Image.Image]) -> str:
    return "" if scaled[0].size == original[0].size else f", made smaller ({scaled[0].width}×{scaled[0].height})"


def _palette(image: Image.Image) -> Image.Image:
    return image.quantize(_GIF_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def _animation(images: list[Image.Image], image_format: str, duration: float, **options: int | bool) -> bytes:
    buffer = BytesIO()
    images[0].save(buffer, image_format, save_all=True, append_images=images[1:], duration=round(duration),
                   loop=0, **options)
    return buffer.getvalue()
