"""Files as Discord takes them: a result checked to be the image or video it claims, and an image
fitted to an upload limit.

A proxy in front of ComfyUI answers errors with a web page, which would be saved under the
result's name; a cut download leaves a truncated image. Either would reach Discord as a broken
attachment, so `verify` refuses it in words first. A result larger than a channel accepts can
be re-encoded by `fit_to_limit` if it is a still image. All Pillow work runs in a thread.
"""

import asyncio
import os
import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import structlog
from PIL import Image, ImageOps

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
