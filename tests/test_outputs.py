"""Tests for outputs.py: every claim is checked against what is on disk."""

import asyncio
import os
import random
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

import outputs
from outputs import MIB, OutputError, OutputFolder, OutputFull, TooLarge, fit_to_limit

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
