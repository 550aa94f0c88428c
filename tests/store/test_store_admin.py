"""The store's admin area on both engines (store/admin.py, store/postgres/admin.py): the audit log, admin
switches, GPU time and cost per job, and usage figures per UTC day, per person and per server."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from store import StoreError
from store.admin import Usage
from store.core import PostgresStore
from tests.store.test_store import make_generation, make_job, stored_text

MIDNIGHT = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()  # 2026-03-02 00:00 UTC


@pytest.fixture
def db(any_store):
    return any_store


@pytest.fixture
def clock(monkeypatch):
    """The wall clock the store stamps rows with (created_at, updated_at), set by the test."""
    now = [MIDNIGHT - 3600.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


async def job(db, *, gpu: float | None = None, cost: float = 0.0, images: int = 0, **overrides):
    """A job (and, with `images`, its result of that many files), with its GPU time and cost recorded."""
    made = await db.add_job(make_job(**{"user_id": 1, "guild_id": 10, **overrides}))
    if gpu is not None:
        await db.record_cost(made.id, gpu, cost)
    if images:
        await db.add_generation(make_generation(job_id=made.id, user_id=made.user_id, guild_id=made.guild_id,
                                                files=[f"{made.id}-{n}.png" for n in range(images)]))
    return made


async def test_the_audit_log_is_per_server_newest_first(db, clock):
    await db.audit(10, 7, "pause", reason="maintenance")
    clock[0] += 1
    await db.audit(10, 8, "block", user=99, terms=["a", "ünïcode"], nested={"x": None})
    await db.audit(11, 7, "drain")
    assert await db.audit_log(10) == [
        {"actor_id": 8, "action": "block", "details": {"user": 99, "terms": ["a", "ünïcode"], "nested": {"x": None}},
         "at": clock[0]},
        {"actor_id": 7, "action": "pause", "details": {"reason": "maintenance"}, "at": clock[0] - 1}]
    assert [entry["action"] for entry in await db.audit_log(10, limit=1)] == ["block"]
    assert await db.audit_log(11) == [{"actor_id": 7, "action": "drain", "details": {}, "at": clock[0]}]
    assert await db.audit_log(12) == []


async def test_switches_are_set_replaced_and_cleared(db):
    assert await db.set_control("pause", "10", {"reason": "night"}) is True
    assert await db.set_control("pause", "all", {"reason": "upgrade", "by": 7}) is True
    assert await db.set_control("pause", "10", {"reason": "later"}) is True  # replaced, not added
    assert await db.set_control("quota", "user:10:1:day:images", {"limit": 5}) is True
    assert await db.controls("pause") == {"10": {"reason": "later"}, "all": {"reason": "upgrade", "by": 7}}
    assert await db.set_control("pause", "10", None) is True
    assert await db.set_control("pause", "10", None) is False  # nothing left to clear
    assert await db.controls("pause") == {"all": {"reason": "upgrade", "by": 7}}
    assert await db.controls("quota") == {"user:10:1:day:images": {"limit": 5}}
    assert await db.controls("term") == {}


async def test_gpu_history_is_the_latest_measured_jobs_oldest_first(db):
    first = await job(db, gpu=2.5, cost=0.01, request={"prompt": "one", "steps": 20})
    await db.update_job(first.id, server="gpu-a")
    unmeasured = await job(db)
    await db.update_job(unmeasured.id, server="gpu-a")
    await job(db, gpu=9.0)  # measured, but no server
    zero = await job(db, gpu=0.0)
    await db.update_job(zero.id, server="gpu-a")
    last = await job(db, gpu=4.0, kind="upscale", request={"factor": 2})
    await db.update_job(last.id, server="gpu-b")
    assert await db.gpu_history() == [("gpu-a", "txt2img", {"prompt": "one", "steps": 20}, 2.5),
                                      ("gpu-b", "upscale", {"factor": 2}, 4.0)]
    assert await db.gpu_history(limit=1) == [("gpu-b", "upscale", {"factor": 2}, 4.0)]


async def test_usage_by_day_splits_at_midnight_utc(db, clock):
    clock[0] = MIDNIGHT - 30  # 23:59:30 on the 1st
    await job(db, gpu=10.0, cost=0.5, images=2)
    await job(db, gpu=5.0, cost=0.25, images=1)
    await job(db, gpu=1.0, guild_id=11, images=4)  # another server
    clock[0] = MIDNIGHT + 30  # 00:00:30 on the 2nd
    await job(db, gpu=2.0, cost=0.125, images=3, user_id=2)
    await job(db, images=1)  # no GPU time measured
    clock[0] = MIDNIGHT + 86400 + 5  # the 3rd: a job still running, nothing made yet
    await job(db, gpu=1.5)
    days = await db.usage_by_day(10, MIDNIGHT - 86400)
    assert days == [{"day": "2026-03-01", "images": 3, "gpu_seconds": 15.0, "cost": 0.75},
                    {"day": "2026-03-02", "images": 4, "gpu_seconds": 2.0, "cost": 0.125},
                    {"day": "2026-03-03", "images": 0, "gpu_seconds": 1.5, "cost": 0.0}]
    assert all(type(day["images"]) is int and type(day["gpu_seconds"]) is float for day in days)
    assert [day["day"] for day in await db.usage_by_day(10, MIDNIGHT)] == ["2026-03-02", "2026-03-03"]
    assert await db.usage_by_day(11, 0.0) == [{"day": "2026-03-01", "images": 4, "gpu_seconds": 1.0, "cost": 0.0}]
    assert await db.usage_by_day(12, 0.0) == []


async def test_usage_outside_servers_is_its_own(db, clock):
    await job(db, gpu=3.0, cost=1.0, images=2, guild_id=None)
    await job(db, gpu=7.0, images=1)
    assert await db.usage_by_day(None, 0.0) == [{"day": "2026-03-01", "images": 2, "gpu_seconds": 3.0, "cost": 1.0}]
    assert await db.usage(None, None, 0.0) == Usage(2, 3.0, 1.0)
    assert await db.usage_by_person(None, 0.0) == [(1, Usage(2, 3.0, 1.0))]


async def test_the_days_are_utc_whatever_the_session_time_zone(pg_dsn, clock):
    # A PostgreSQL session in New York (UTC-5 in March) still counts the UTC day.
    db = PostgresStore(pg_dsn + "&timezone=America%2FNew_York")
    await db.open()
    try:
        clock[0] = MIDNIGHT + 60
        await job(db, gpu=1.0, images=1)
        assert await db.usage_by_day(10, 0.0) == [{"day": "2026-03-02", "images": 1, "gpu_seconds": 1.0, "cost": 0.0}]
    finally:
        await db.close()


async def test_usage_of_a_person_and_of_a_server_since_a_time(db, clock):
    await job(db, gpu=4.0, cost=0.5, images=2)
    await job(db, gpu=1.0, cost=0.25, images=1, user_id=2)
    clock[0] += 60
    since = clock[0]
    await job(db, gpu=2.0, cost=0.125, images=4)
    await job(db, gpu=1.0, images=1, guild_id=11)
    assert await db.usage(10, 1, 0.0) == Usage(6, 6.0, 0.625)
    assert await db.usage(10, None, 0.0) == Usage(7, 7.0, 0.875)
    assert await db.usage(10, 1, since) == Usage(4, 2.0, 0.125)
    assert await db.usage(10, 3, 0.0) == Usage(0, 0.0, 0.0)
    usage = await db.usage(12, None, 0.0)
    assert usage == Usage(0, 0.0, 0.0) and type(usage.images) is int and type(usage.gpu_seconds) is float


async def test_usage_by_person_ranks_by_gpu_time_then_images(db, clock):
    await job(db, gpu=1.0, images=1, user_id=1)
    await job(db, gpu=5.0, cost=0.5, images=1, user_id=2)
    await job(db, gpu=3.0, images=2, user_id=3)
    await job(db, gpu=2.0, images=5, user_id=3)  # 5 s in all, more images than person 2
    await job(db, user_id=4)  # a job but no GPU time yet
    await job(db, gpu=100.0, images=1, user_id=5, guild_id=11)
    ranked = await db.usage_by_person(10, 0.0)
    assert ranked == [(3, Usage(7, 5.0, 0.0)), (2, Usage(1, 5.0, 0.5)), (1, Usage(1, 1.0, 0.0)),
                      (4, Usage(0, 0.0, 0.0))]
    assert await db.usage_by_person(10, 0.0, limit=2) == ranked[:2]
    assert await db.usage_by_person(10, clock[0] + 1) == []


async def test_recent_failures_say_what_people_were_told(db, clock):
    quiet = await job(db, kind="upscale", user_id=2)
    await db.update_job(quiet.id, state="failed")  # no sentence stored: an empty one
    clock[0] += 1
    told = await job(db)
    await db.update_job(told.id, state="failed", error="The server ran out of memory; try a smaller size.")
    done = await job(db)
    await db.update_job(done.id, state="done")
    elsewhere = await job(db, guild_id=None)
    await db.update_job(elsewhere.id, state="failed", error="gone")
    assert await db.recent_failures(10) == [
        {"at": clock[0], "kind": "txt2img", "user_id": 1, "error": "The server ran out of memory; try a smaller size."},
        {"at": clock[0] - 1, "kind": "upscale", "user_id": 2, "error": ""}]
    assert len(await db.recent_failures(10, limit=1)) == 1
    assert await db.recent_failures(None) == [{"at": clock[0], "kind": "txt2img", "user_id": 1, "error": "gone"}]


async def test_an_audit_entry_needs_a_server(db):
    with pytest.raises(StoreError):
        await db.audit(None, 7, "pause")
    assert await db.audit_log(10) == []


async def test_a_cost_for_no_job_changes_nothing(db):
    await db.record_cost(12345, 1.0, 1.0)
    assert await db.gpu_history() == []
    assert await db.usage(10, None, 0.0) == Usage(0, 0.0, 0.0)


async def test_text_with_a_nul_is_kept(db):
    # PostgreSQL's text cannot hold NUL: it keeps U+FFFD in its place (store/postgres/text.py).
    await db.audit(10, 7, "pa\x00use", reason="a\x00b", **{"k\x00": ["\x00"]})
    [entry] = await db.audit_log(10)
    assert (entry["action"], entry["details"]) == (stored_text(db, "pa\x00use"), {
        "reason": stored_text(db, "a\x00b"), stored_text(db, "k\x00"): [stored_text(db, "\x00")]})
    assert await db.set_control("term", "10:ba\x00d", {"term": "ba\x00d"}) is True
    assert await db.controls("term") == {stored_text(db, "10:ba\x00d"): {"term": stored_text(db, "ba\x00d")}}
    assert await db.set_control("term", "10:ba\x00d", None) is True
    assert await db.controls("term") == {}
