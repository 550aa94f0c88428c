"""Tests for outputs.py: every claim is checked against what is on disk."""

import asyncio
import os
import random
import re
import shutil
import struct
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from results import media
from results import folder as outputs
from results.media import BadResult, TooLarge, fit_to_limit, verify
from results.folder import MIB, OutputError, OutputFolder, OutputFull, OutputTooLarge

SAFE_NAME = re.compile(
    r"\d{8}-\d{6}-\d{6}-[A-Za-z0-9_-][A-Za-z0-9._-]*\.(png|jpe?g|webp|gif|mp4|webm|bin)"
)


def finals(root: Path) -> list[str]:
    """Names of the final files on disk, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def partials(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".partial").iterdir())


async def opened(root: Path, limit: int, **options: float) -> OutputFolder:
    folder = OutputFolder(root, limit, **options)
    await folder.open()
    return folder


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[start : start + size]


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    return Image.frombytes(mode, (width, height), os.urandom(width * height * len(mode)))


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


# --- the cap -------------------------------------------------------------------------------


async def test_cap_prunes_oldest_released_file_and_never_a_pinned_one(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 3, full_wait=0.1)
    kept = await folder.save_bytes("kept.png", b"kept")
    second = await folder.save_bytes("second.png", b"second")
    third = await folder.save_bytes("third.png", b"third")
    folder.release(second)
    folder.release(third)

    fourth = await folder.save_bytes("fourth.png", b"fourth")
    assert finals(tmp_path) == sorted(p.name for p in (kept, third, fourth))
    assert folder.files() == [kept, third, fourth]

    fifth = await folder.save_bytes("fifth.png", b"fifth")
    assert folder.files() == [kept, fourth, fifth]
    assert finals(tmp_path) == sorted(p.name for p in (kept, fourth, fifth))
    assert kept.read_bytes() == b"kept"
    assert partials(tmp_path) == []


async def test_full_folder_raises_after_the_bound(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 2, full_wait=0.2)
    saved = [await folder.save_bytes("a.png", b"a"), await folder.save_bytes("b.png", b"b")]

    started = time.monotonic()
    with pytest.raises(OutputFull, match="waiting to be delivered"):
        await folder.save_bytes("c.png", b"c")
    assert 0.2 <= time.monotonic() - started < 2
    assert finals(tmp_path) == sorted(p.name for p in saved)
    assert partials(tmp_path) == []


async def test_release_during_the_wait_lets_the_save_proceed(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=5)
    first = await folder.save_bytes("first.png", b"first")
    waiting = asyncio.create_task(folder.save_bytes("second.png", b"second"))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    folder.release(first)
    second = await asyncio.wait_for(waiting, 2)
    assert finals(tmp_path) == [second.name]
    assert second.read_bytes() == b"second"


async def test_concurrent_saves_respect_the_cap_and_lose_nothing(tmp_path: Path) -> None:
    limit = 10
    folder = await opened(tmp_path, limit, full_wait=10)
    rng = random.Random(1234)
    held = set(rng.sample(range(50), 5))  # pinned until the end; the rest are released
    released: set[Path] = set()
    results: dict[Path, bytes] = {}
    most_seen = 0
    stop = threading.Event()

    def watch_disk() -> None:
        nonlocal most_seen
        while not stop.is_set():
            most_seen = max(most_seen, len(finals(tmp_path)))

    async def worker(index: int) -> None:
        data = os.urandom(rng.randrange(1, 200_000))
        chunks = chunked(data, rng.randrange(1, 70_000))
        path = await folder.save_stream(f"job/{index % 3}.png", chunks)
        assert len(folder.files()) <= limit
        results[path] = data
        if index in held:
            return
        await asyncio.sleep(rng.uniform(0, 0.02))
        assert path.read_bytes() == data  # still pinned, so still there
        folder.release(path)
        released.add(path)

    watcher = threading.Thread(target=watch_disk)
    watcher.start()
    try:
        await asyncio.gather(*(worker(i) for i in range(50)))
    finally:
        stop.set()
        watcher.join()

    assert most_seen <= limit
    assert len(results) == 50  # 50 distinct names
    on_disk = finals(tmp_path)
    assert len(on_disk) == limit
    assert sorted(p.name for p in folder.files()) == on_disk
    for path, data in results.items():
        if path.exists():
            assert path.read_bytes() == data
        else:
            assert path in released
    assert len(results.keys() - released) == len(held)
    assert all(p.exists() for p in results.keys() - released)
    assert partials(tmp_path) == []


# --- failed saves ---------------------------------------------------------------------------


async def test_save_cancelled_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(2 * MIB)  # big enough to reach the temp file
        await never.wait()
        yield b"never"

    saving = asyncio.create_task(folder.save_stream("x.png", stalls()))
    for _ in range(200):
        if partials(tmp_path):
            break
        await asyncio.sleep(0.01)
    assert partials(tmp_path), "the save never wrote its temp file"

    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    assert folder.files() == []
    await folder.save_bytes("y.png", b"y")  # the slot was freed


async def test_saves_cancelled_at_random_points_leave_a_consistent_folder(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 3, full_wait=5)
    rng = random.Random(99)
    data = os.urandom(3 * MIB)

    for _ in range(15):
        saving = asyncio.create_task(folder.save_stream("x.png", chunked(data, 256 * 1024)))
        await asyncio.sleep(rng.uniform(0, 0.03))
        saving.cancel()
        try:
            path = await saving
        except asyncio.CancelledError:
            pass
        else:
            assert path.read_bytes() == data
            folder.release(path)
        assert sorted(p.name for p in folder.files()) == finals(tmp_path)
        assert partials(tmp_path) == []

    for path in folder.files():
        folder.release(path)
    for _ in range(3):  # every slot came back
        await asyncio.wait_for(folder.save_bytes("z.png", b"z"), 1)


async def test_cancel_while_a_write_waits_for_its_thread_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled save's write thread may run after the cleanup; it must not recreate the file."""
    folder = await opened(tmp_path, 1, full_wait=0.1)
    queued, go, finished = threading.Event(), threading.Event(), threading.Event()
    write = outputs._TempFile.write

    def write_after_cleanup(self: outputs._TempFile, data: bytearray) -> None:
        queued.set()
        go.wait(5)
        try:
            write(self, data)
        finally:
            finished.set()

    monkeypatch.setattr(outputs._TempFile, "write", write_after_cleanup)
    chunks = chunked(os.urandom(2 * MIB), 2 * MIB)  # one block: a single write
    saving = asyncio.create_task(folder.save_stream("x.png", chunks))
    assert await asyncio.to_thread(queued.wait, 5)
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    go.set()
    assert await asyncio.to_thread(finished.wait, 5)
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []


async def test_cancel_after_the_commit_thread_finished_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename may complete after the caller gave up; the cleanup then deletes the final file."""
    folder = await opened(tmp_path, 1, full_wait=0.1)
    committed, go = threading.Event(), threading.Event()
    commit = outputs._TempFile.commit

    def commit_before_cleanup(self: outputs._TempFile, tail: bytearray) -> None:
        commit(self, tail)
        committed.set()
        go.wait(5)

    monkeypatch.setattr(outputs._TempFile, "commit", commit_before_cleanup)
    saving = asyncio.create_task(folder.save_bytes("x.png", b"x"))
    assert await asyncio.to_thread(committed.wait, 5)
    assert len(finals(tmp_path)) == 1
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    go.set()
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    assert folder.files() == []
    await folder.save_bytes("y.png", b"y")


async def test_failing_source_leaves_nothing(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)

    async def breaks() -> AsyncIterator[bytes]:
        yield os.urandom(2 * MIB)
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):
        await folder.save_stream("x.png", breaks())
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    await folder.save_bytes("y.png", b"y")


async def test_stalled_source_fails_within_its_bound(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1, stall_timeout=0.1)

    async def stalls() -> AsyncIterator[bytes]:
        yield b"start"
        await asyncio.sleep(30)
        yield b"never"

    with pytest.raises(OutputError, match="stopped arriving"):
        await folder.save_stream("x.png", stalls())
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    await folder.save_bytes("y.png", b"y")


async def test_disk_error_is_an_output_error_and_frees_the_slot(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    shutil.rmtree(tmp_path / ".partial")

    with pytest.raises(OutputError, match="could not be saved"):
        await folder.save_bytes("x.png", b"x")
    assert finals(tmp_path) == []

    (tmp_path / ".partial").mkdir()
    assert (await folder.save_bytes("y.png", b"y")).read_bytes() == b"y"


# --- the byte cap ----------------------------------------------------------------------------

CAP = 5 * MIB // 2  # 2.5 MiB
PIECE = 300_000  # the 9th piece passes CAP in its middle: 8 pieces are 2.4 MB, 9 are 2.7 MB
PIECES_TO_PASS = CAP // PIECE + 1


class Source:
    """An endless or finite source that counts the chunks pulled from it and notes whether the
    save's temp file was on disk when the chunk that passes CAP was asked for."""

    def __init__(self, root: Path, pieces: int | None) -> None:
        self.root = root
        self.pieces = pieces  # None: it never ends
        self.pulled = 0
        self.partial_seen = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.pieces is None or self.pulled < self.pieces:
            assert self.pulled < 2 * PIECES_TO_PASS, "the save read on past its cap"
            await asyncio.sleep(0)
            self.pulled += 1
            if self.pulled == PIECES_TO_PASS:
                self.partial_seen = bool(partials(self.root))
            yield os.urandom(PIECE)


def too_large_message(shown: str) -> str:
    return f"The result is larger than {shown}, the most the bot downloads; it was not saved."


@pytest.mark.parametrize("pieces", [20, None], ids=["passes-mid-chunk", "never-ends"])
async def test_stream_past_the_cap_stops_at_once_and_leaves_nothing(
    tmp_path: Path, pieces: int | None
) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    source = Source(tmp_path, pieces)
    chunks = source.chunks()

    with pytest.raises(OutputTooLarge) as caught:
        await folder.save_stream("big.png", chunks, max_bytes=CAP)

    assert str(caught.value) == too_large_message("2.5 MiB")
    assert source.pulled == PIECES_TO_PASS  # not one chunk more
    assert source.partial_seen, "no block reached the temp file; the cleanup was not tested"
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    assert folder.files() == []
    await chunks.aclose()
    assert source.pulled == PIECES_TO_PASS
    saved = await folder.save_bytes("y.png", b"y")  # the only slot came back
    assert finals(tmp_path) == [saved.name]


@pytest.mark.parametrize(
    ("size", "cap", "shown"),
    [(CAP + 1, CAP, "2.5 MiB"), (3 * MIB, 1000 * 1024, "1000.0 KiB"), (901, 900, "900 bytes")],
    ids=["one-byte-over", "far-over", "tiny-cap"],
)
async def test_bytes_over_the_cap_are_refused(
    tmp_path: Path, size: int, cap: int, shown: str
) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    with pytest.raises(OutputTooLarge) as caught:
        await folder.save_bytes("big.png", os.urandom(size), max_bytes=cap)
    assert str(caught.value) == too_large_message(shown)
    assert finals(tmp_path) == []
    assert partials(tmp_path) == []
    await folder.save_bytes("y.png", b"y")


@pytest.mark.parametrize(
    "piece", [CAP // 5, PIECE, CAP], ids=["cap-on-a-chunk-edge", "last-chunk-short", "one-chunk"]
)
async def test_stream_of_exactly_the_cap_is_saved(tmp_path: Path, piece: int) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    data = os.urandom(CAP)
    path = await folder.save_stream("exact.png", chunked(data, piece), max_bytes=CAP)
    assert path.read_bytes() == data
    assert finals(tmp_path) == [path.name]
    assert partials(tmp_path) == []


@pytest.mark.parametrize("data", [b"12345", b""], ids=["at-the-cap", "empty"])
async def test_bytes_within_the_cap_are_saved(tmp_path: Path, data: bytes) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    path = await folder.save_bytes("exact.png", data, max_bytes=5)
    assert path.read_bytes() == data
    assert finals(tmp_path) == [path.name]


# --- checking a result before it is posted ----------------------------------------------------


def image_bytes(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def frames(count: int, mode: str = "RGB") -> list[Image.Image]:
    return [noise(48, 48).convert(mode) for _ in range(count)]


def animation(image_format: str, mode: str = "RGB") -> bytes:
    first, *rest = frames(3, mode)
    return image_bytes(first, image_format, save_all=True, append_images=rest, duration=100)


def cut_in_idat(png: bytes) -> bytes:
    """The PNG cut halfway through its first IDAT chunk's data."""
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    assert length > 100
    return png[: start + 8 + length // 2]


VALID: list[tuple[str, Callable[[], bytes]]] = [
    ("still.png", lambda: image_bytes(noise(64, 64), "PNG")),
    ("still.jpg", lambda: image_bytes(noise(64, 64), "JPEG")),
    ("still.JPEG", lambda: image_bytes(noise(64, 64), "JPEG")),
    ("still.webp", lambda: image_bytes(noise(64, 64), "WEBP")),
    ("still.gif", lambda: image_bytes(noise(64, 64).convert("P"), "GIF")),
    ("alpha.png", lambda: image_bytes(noise(64, 64, "RGBA"), "PNG")),
    ("anim.webp", lambda: animation("WEBP")),
    ("anim.gif", lambda: animation("GIF", "P")),
    ("anim.png", lambda: animation("PNG")),  # APNG
    ("large.png", lambda: image_bytes(Image.new("RGB", (4096, 4096), "teal"), "PNG")),
    ("clip.mp4", lambda: b"\x00\x00\x00\x18ftypisom" + bytes(4096)),
    ("clip.webm", lambda: b"\x1a\x45\xdf\xa3" + bytes(4096)),
]


@pytest.mark.parametrize(("name", "make"), VALID, ids=[name for name, _ in VALID])
async def test_a_sound_result_passes(tmp_path: Path, name: str, make: Callable[[], bytes]) -> None:
    path = tmp_path / name
    data = make()
    path.write_bytes(data)
    await verify(path)
    assert path.read_bytes() == data  # only read
    assert [p.name for p in tmp_path.iterdir()] == [name]


def png() -> bytes:
    return image_bytes(noise(64, 64), "PNG")


HTML = b"\r\n  <!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>\n"
JSON = b'{"error": {"type": "secret_token_abc", "message": "Bad Gateway"}}'
# Each: file name, its bytes, words the message must hold.
BAD: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("truncated-png", "cut.png", lambda: cut_in_idat(png()), "is damaged, cut short"),
    ("png-without-end", "cut.png", lambda: png()[:-30], "is damaged, cut short"),
    ("truncated-jpeg", "cut.jpg", lambda: image_bytes(noise(64, 64), "JPEG")[:900], "is damaged"),
    ("truncated-webp", "cut.webp", lambda: image_bytes(noise(64, 64), "WEBP")[:900], "damaged"),
    ("empty-png", "empty.png", lambda: b"", "is empty, not an image"),
    ("empty-mp4", "empty.mp4", lambda: b"", "is empty, not a video"),
    ("random-png", "noise.png", lambda: random.Random(7).randbytes(4096), "is damaged"),
    ("random-gif", "noise.gif", lambda: random.Random(8).randbytes(4096), "is damaged"),
    ("bmp-named-png", "bmp.png", lambda: image_bytes(noise(8, 8), "BMP"), "not an image at all"),
    ("html-named-png", "page.png", lambda: HTML, "is a web page, not an image"),
    ("bare-html", "page.webp", lambda: b"<html><body>Bad Gateway</body></html>", "a web page"),
    ("lower-doctype", "page.jpg", lambda: b"<!doctype html><p>Bad Gateway", "a web page"),
    ("bom-html", "page.gif", lambda: b"\xef\xbb\xbf<html>Bad Gateway", "a web page"),
    ("html-named-mp4", "page.mp4", lambda: HTML, "is a web page, not a video"),
    ("json-named-png", "error.png", lambda: JSON, "is JSON text, not an image"),
    ("json-named-webm", "error.webm", lambda: b"\n" + JSON, "is JSON text, not a video"),
    ("garbage-mp4", "clip.mp4", lambda: random.Random(9).randbytes(4096), "not in the MP4 format"),
    ("png-named-mp4", "clip.mp4", png, "not in the MP4 format"),
    ("short-mp4", "clip.mp4", lambda: b"\x00\x00\x00\x18fty", "not in the MP4 format"),
    ("garbage-webm", "clip.webm", lambda: random.Random(10).randbytes(4096), "the WEBM format"),
    ("mp4-named-webm", "clip.webm", lambda: b"\x00\x00\x00\x18ftypisom" + bytes(64), "WEBM"),
    ("png-named-bin", "output.bin", png, "not an image or video the bot can post"),
    ("no-extension", "output", png, "not an image or video the bot can post"),
    ("text-file", "notes.txt", lambda: b"hello", "not an image or video the bot can post"),
]


@pytest.mark.parametrize(
    ("name", "make", "words"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
async def test_a_bad_result_is_refused_in_words(
    tmp_path: Path, name: str, make: Callable[[], bytes], words: str
) -> None:
    path = tmp_path / name
    data = make()
    path.write_bytes(data)
    with pytest.raises(BadResult) as caught:
        await verify(path)
    message = str(caught.value)
    assert words in message
    assert message.startswith(("The result ", "The image ", "The video "))
    assert f" {name} " in message
    assert "Bad Gateway" not in message and "secret_token" not in message  # never the content
    assert str(tmp_path) not in message
    assert path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize(
    ("limit", "warnings_as_errors"),
    [(64 * 64 - 1, False), (64 * 64 - 1, True), (64 * 64 // 3, False), (64 * 64 // 3, True)],
    ids=["over-limit", "over-limit-warnings-as-errors", "over-twice", "over-twice-warnings"],
)
async def test_too_many_pixels_is_refused_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, warnings_as_errors: bool
) -> None:
    """Over Pillow's limit it warns (an error where warnings are errors); over twice it raises."""
    path = tmp_path / "bomb.png"
    noise(64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    action = "error" if warnings_as_errors else "ignore"
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with pytest.raises(BadResult) as caught:
            await verify(path)
    assert str(caught.value) == "The image bomb.png has too many pixels to be opened safely."
    assert path.exists()


async def test_an_image_at_the_pixel_limit_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "edge.png"
    noise(64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)
    await verify(path)


async def test_verify_decodes_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    decode = media._decode

    def recording(path: Path) -> None:
        threads.append(threading.current_thread())
        decode(path)

    monkeypatch.setattr(media, "_decode", recording)
    path = tmp_path / "x.png"
    noise(16, 16).save(path)
    await verify(path)
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


async def test_a_missing_file_is_an_output_error_not_a_bad_result(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"^The result gone\.png could not be read") as caught:
        await verify(tmp_path / "gone.png")
    assert not isinstance(caught.value, BadResult)


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "tail"),
    [
        ("../../etc/passwd", "-passwd.bin"),
        ("bot/scaled_00001_.png", "-scaled_00001_.png"),
        ("a b\x00c.png", "-a_b_c.png"),
        ("..\\..\\windows\\evil.EXE", "-evil.bin"),
        ("", "-output.bin"),
        ("..", "-output.bin"),
        (".hidden.PNG", "-hidden.png"),
        ("clip.webm", "-clip.webm"),
        ("x" * 500 + ".png", "-" + "x" * 80 + ".png"),
    ],
)
async def test_hostile_names_end_safe_inside_root(tmp_path: Path, hint: str, tail: str) -> None:
    folder = await opened(tmp_path, 5)
    path = await folder.save_bytes(hint, b"data")
    assert path.parent == tmp_path
    assert SAFE_NAME.fullmatch(path.name), path.name
    assert path.name.endswith(tail)
    assert finals(tmp_path) == [path.name]
    assert path.read_bytes() == b"data"


async def test_names_sort_by_creation(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 20)
    saved = [await folder.save_bytes(name, b"x") for name in "zyxwvutsrq"]
    assert [p.name for p in saved] == sorted(p.name for p in saved)


# --- restart --------------------------------------------------------------------------------


async def test_open_adopts_existing_files_oldest_first(tmp_path: Path) -> None:
    for age, name in enumerate(["new.png", "mid.png", "old.png"]):
        (tmp_path / name).write_bytes(name.encode())
        os.utime(tmp_path / name, (1_000_000 - age * 100, 1_000_000 - age * 100))
    (tmp_path / ".keep").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.png").write_bytes(b"inner")
    (tmp_path / ".partial").mkdir()
    (tmp_path / ".partial" / "stale.part").write_bytes(b"half")

    folder = await opened(tmp_path, 3, full_wait=0.1)
    assert folder.files() == [tmp_path / "old.png", tmp_path / "mid.png", tmp_path / "new.png"]
    assert partials(tmp_path) == []

    folder.pin(Path("mid.png"))  # a restart pins undelivered results by stored name
    fresh = await folder.save_bytes("fresh.png", b"fresh")
    assert finals(tmp_path) == sorted(["mid.png", "new.png", fresh.name])
    await folder.save_bytes("another.png", b"another")
    assert "mid.png" in finals(tmp_path) and "new.png" not in finals(tmp_path)
    assert (tmp_path / ".keep").exists()
    assert (tmp_path / "sub" / "inner.png").read_bytes() == b"inner"

    with pytest.raises(OutputError, match="no longer in the output folder"):
        folder.pin(tmp_path / "old.png")


# --- fitting to an upload limit ------------------------------------------------------------


async def test_small_file_is_returned_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    noise(32, 32).save(path)
    assert await fit_to_limit(path, 10 * MIB) == path
    assert [p.name for p in tmp_path.iterdir()] == ["small.png"]


async def test_big_noisy_png_is_fitted_under_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    noise(1500, 1500).save(path)
    original = path.read_bytes()
    assert len(original) > 6 * MIB

    fitted = await fit_to_limit(path, MIB)

    assert fitted != path and fitted.parent == tmp_path
    assert fitted.stat().st_size <= MIB
    with Image.open(fitted) as image:
        image.load()
        assert image.width < 1500  # noise needs the scale ladder, not only the quality one
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["big.png", fitted.name])


async def test_fitting_keeps_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    noise(300, 300, "RGBA").save(path)
    fitted = await fit_to_limit(path, path.stat().st_size // 2)
    with Image.open(fitted) as image:
        assert image.has_transparency_data


async def test_image_that_cannot_fit_raises_too_large(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    noise(640, 640).save(path)
    size = path.stat().st_size
    with pytest.raises(TooLarge) as caught:
        await fit_to_limit(path, 100)
    assert f"The image is {mib(size)}" in str(caught.value)
    assert str(caught.value).endswith("this channel accepts files up to 100 bytes.")
    assert [p.name for p in tmp_path.iterdir()] == ["noise.png"]


@pytest.mark.parametrize(("name", "kind"), [("clip.mp4", "video"), ("blob.bin", "file")])
async def test_big_non_image_raises_too_large(tmp_path: Path, name: str, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(os.urandom(3 * MIB))
    expected = rf"^The {kind} is 3\.0 MiB; this channel accepts files up to 1\.0 MiB\.$"
    with pytest.raises(TooLarge, match=expected):
        await fit_to_limit(path, MIB)
    assert [p.name for p in tmp_path.iterdir()] == [name]


async def test_animation_is_not_reencoded(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [noise(64, 64).convert("P") for _ in range(2)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(TooLarge, match="^The animation is"):
        await fit_to_limit(path, 100)


async def test_a_file_two_jobs_need_stays_until_both_release_it(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path, 2, full_wait=0.2)
    await folder.open()
    shared = await folder.save_bytes("shared.png", b"s")  # its result is waiting for delivery
    folder.pin(shared)  # and a queued job takes it as input
    other = await folder.save_bytes("other.png", b"o")
    folder.release(other)
    folder.release(shared)  # delivered; the job still needs it
    third = await folder.save_bytes("third.png", b"t")  # makes room by pruning `other`, not `shared`
    assert shared.read_bytes() == b"s" and not other.exists()
    folder.release(third)
    folder.release(shared)  # the job is done with it too
    folder.release(shared)  # an extra release changes nothing
    await folder.save_bytes("fourth.png", b"f")
    assert not shared.exists() and third.exists()


async def test_a_discarded_file_is_gone_at_once_and_frees_its_slot(tmp_path: Path) -> None:
    folder = await opened(tmp_path, 1, full_wait=0.1)
    broken = await folder.save_bytes("broken.png", b"<html>not an image</html>")
    await folder.discard(broken)
    assert finals(tmp_path) == [] and folder.files() == []
    kept = await folder.save_bytes("next.png", b"next")  # the slot is free although nothing was released
    assert finals(tmp_path) == [kept.name]


# --- inputs: a person's image made ready for a workflow ---------------------------------------------


@pytest.mark.parametrize("fmt, size, fitted", [
    ("PNG", (100, 60), (96, 56)),
    ("WEBP", (4000, 1000), (2048, 512)),
    ("GIF", (64, 64), (64, 64)),
], ids=["png-to-multiples-of-8", "webp-scaled-down", "gif-first-frame"])
async def test_an_input_is_read_by_content_and_fitted(tmp_path: Path, fmt: str, size: tuple[int, int],
                                                      fitted: tuple[int, int]) -> None:
    path = tmp_path / "upload.bin"  # the name says nothing: the content decides
    frames = [Image.new("RGB", size, (255, 0, 0)), Image.new("RGB", size, (0, 0, 255))]
    frames[0].save(path, fmt, save_all=fmt == "GIF", append_images=frames[1:] if fmt == "GIF" else [])
    data, got, mask = await media.fit_input(path, 2048, 2048)
    assert mask is None  # nothing transparent: nothing to redraw in particular
    image = Image.open(BytesIO(data))
    assert got == fitted and image.size == fitted and image.format == "PNG"
    assert image.convert("RGB").getpixel((0, 0))[0] > 200  # the first frame: red


async def test_an_input_with_too_many_pixels_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(BadResult, match="more than 10,000 pixels"):
        await media.fit_input(path, 2048, 2048)
