"""The moderation holds (store/moderation.py and its PostgreSQL twins), on both engines: one hold per job,
a decision taken once, the pending list per server, and the card's message."""

from __future__ import annotations

import asyncio

from store.moderation import Hold


def hold(job_id: int, guild_id: int = 7, reason: str = "flagged: sexual") -> Hold:
    return Hold(id=None, job_id=job_id, generation_id=job_id * 10, guild_id=guild_id, user_id=42, channel_id=99,
                reason=reason, scores={"sexual": 0.93, "violence": 0.01})


async def test_a_hold_is_kept_with_its_scores_and_found_by_job(any_store):
    held = await any_store.add_hold(hold(1))
    assert held.id is not None and held.state == "held" and held.created_at is not None
    assert held.scores == {"sexual": 0.93, "violence": 0.01}
    assert await any_store.hold_of_job(1) == held
    assert await any_store.get_hold(held.id) == held
    assert await any_store.hold_of_job(2) is None and await any_store.get_hold(held.id + 100) is None


async def test_a_job_has_one_hold_even_when_held_twice_at_once(any_store):
    first, second = await asyncio.gather(any_store.add_hold(hold(1)), any_store.add_hold(hold(1, reason="other")))
    assert first == second and first.reason in ("flagged: sexual", "other")
    assert len(await any_store.pending_holds(7, 10)) == 1


async def test_a_decision_is_taken_once(any_store):
    held = await any_store.add_hold(hold(1))
    results = await asyncio.gather(any_store.decide_hold(held.id, "released", 5),
                                   any_store.decide_hold(held.id, "deleted", 6))
    decided = [result for result in results if result is not None]
    assert len(decided) == 1
    assert decided[0].state in ("released", "deleted") and decided[0].decided_by in (5, 6)
    assert decided[0].decided_at is not None
    assert await any_store.decide_hold(held.id, "released", 5) is None
    assert await any_store.pending_holds(7, 10) == []


async def test_pending_holds_are_the_servers_oldest_first(any_store):
    for job_id, guild in ((1, 7), (2, 8), (3, 7), (4, 7)):
        await any_store.add_hold(hold(job_id, guild))
    await any_store.decide_hold((await any_store.hold_of_job(3)).id, "deleted", 5)
    assert [h.job_id for h in await any_store.pending_holds(7, 10)] == [1, 4]
    assert [h.job_id for h in await any_store.pending_holds(None, 10)] == [1, 2, 4]
    assert [h.job_id for h in await any_store.pending_holds(7, 1)] == [1]


async def test_the_cards_message_is_recorded(any_store):
    held = await any_store.add_hold(hold(1))
    await any_store.set_hold_message(held.id, 123456789012345678)
    assert (await any_store.get_hold(held.id)).message_id == 123456789012345678


async def test_a_decision_is_only_released_or_deleted(any_store):
    held = await any_store.add_hold(hold(1))
    try:
        await any_store.decide_hold(held.id, "held", 5)
    except ValueError as error:
        assert "released or deleted" in str(error)
    else:
        raise AssertionError("decide_hold took 'held'")
