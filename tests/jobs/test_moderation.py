"""The moderation provider against the fake OpenAI-compatible endpoint (tests/fakes/moderation.py): what
goes on the wire, the scores it reads back, and every way it can fail (slow, an error status, a wrong key,
not JSON, nobody listening) as ModerationUnavailable; and `judge`, the thresholds."""

from __future__ import annotations

import base64
import io
import socket

import pytest
from PIL import Image

from jobs.moderation import shown_to_moderators
from jobs.moderation_providers import ModerationUnavailable, OpenAIModeration, judge
from store.moderation import Hold
from tests.fakes.moderation import CATEGORIES, FakeModeration


def png(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def endpoint():
    fake = FakeModeration(key="sk-test")
    await fake.start()
    yield fake
    await fake.stop()


def provider(fake: FakeModeration, key: str | None = "sk-test", timeout: float = 2.0) -> OpenAIModeration:
    return OpenAIModeration(fake.base_url + "/", key, "omni-moderation-latest", timeout)


async def test_a_prompt_is_sent_as_text_with_the_key_and_its_scores_read_back(endpoint):
    endpoint.text_scores["quokka"] = {"violence": 0.8, "hate": 0.3}
    checking = provider(endpoint)
    try:
        scores, flags = await checking.scores(7, ["an angry quokka", "", "blurry"], [])
    finally:
        await checking.close()
    (sent,) = endpoint.requests
    assert sent["authorization"] == "Bearer sk-test"
    assert sent["body"] == {"model": "omni-moderation-latest",
                            "input": [{"type": "text", "text": "an angry quokka\nblurry"}]}
    assert set(scores) == set(CATEGORIES) and scores["violence"] == 0.8 and scores["hate"] == 0.3
    assert flags == {"violence"}


async def test_each_image_goes_alone_as_a_data_url_and_the_highest_score_counts(endpoint):
    endpoint.image_scores = {"sexual": 0.7}
    images = [png("red"), png("blue")]
    checking = provider(endpoint)
    try:
        scores, flags = await checking.scores(7, [], images)
    finally:
        await checking.close()
    assert len(endpoint.requests) == 2  # OpenAI's omni models take one image per request
    sent = sorted(base64.b64decode(r["body"]["input"][0]["image_url"]["url"].removeprefix("data:image/png;base64,"))
                  for r in endpoint.requests)
    assert sent == sorted(images)
    assert all(r["body"]["input"][0]["type"] == "image_url" and len(r["body"]["input"]) == 1
               for r in endpoint.requests)
    assert scores["sexual"] == 0.7 and flags == {"sexual"}


async def test_nothing_to_check_sends_nothing(endpoint):
    checking = provider(endpoint)
    assert await checking.scores(7, ["", ""], []) == ({}, set())
    assert endpoint.requests == []


@pytest.mark.parametrize("knob, said", [
    ({"status": 500}, "HTTP 500: {\"error\": {\"message\": \"The server had an error"),
    ({"status": 429}, "HTTP 429"),
    ({"garbage": True}, "an answer that is not a moderation result (JSONDecodeError)"),
    ({"key": "sk-other"}, "HTTP 401: {\"error\": {\"message\": \"Incorrect API key provided."),
])
async def test_errors_of_the_endpoint_are_unavailable_in_words(endpoint, knob, said):
    for name, value in knob.items():
        setattr(endpoint, name, value)
    checking = provider(endpoint)
    try:
        with pytest.raises(ModerationUnavailable) as raised:
            await checking.scores(7, ["a cat"], [png()])
    finally:
        await checking.close()
    assert str(raised.value).startswith(said)


async def test_a_slow_endpoint_is_given_up_on_within_the_timeout(endpoint):
    endpoint.delay = 1.5
    checking = provider(endpoint, timeout=0.3)
    try:
        with pytest.raises(ModerationUnavailable, match=r"^no answer within 0\.3 seconds$"):
            await checking.scores(7, ["a cat"], [])
    finally:
        await checking.close()


async def test_nobody_listening_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    checking = OpenAIModeration(f"http://127.0.0.1:{port}/v1", None, "omni-moderation-latest", 2.0)
    try:
        with pytest.raises(ModerationUnavailable, match="ClientConnectorError"):
            await checking.scores(7, ["a cat"], [])
    finally:
        await checking.close()


def test_thresholds_flag_at_or_above_never_for_null_and_the_providers_flag_elsewhere():
    scores = {"sexual": 0.5, "violence": 0.49, "hate": 0.99, "harassment": 0.7}
    verdict = judge(scores, {"hate", "harassment"}, {"sexual": 0.5, "violence": 0.5, "hate": None})
    assert verdict.flagged == ["harassment", "sexual"]  # hate: never (null); harassment: the provider's flag
    assert verdict.reason() == "harassment, sexual" and verdict.scores == scores
    assert judge(scores, set(), {}).flagged == []


def test_a_result_flagged_for_sexual_minors_is_never_shown_on_a_card():
    def held(reason: str) -> Hold:
        return Hold(id=1, job_id=1, generation_id=1, guild_id=1, user_id=1, channel_id=1, reason=reason)

    assert not shown_to_moderators(held("flagged: sexual, sexual/minors"))
    assert shown_to_moderators(held("flagged: sexual")) and shown_to_moderators(held("the moderation check could not run"))


async def test_the_term_list_is_a_provider_too_scoring_a_blocked_term_in_a_text(tmp_path):
    """/admin terms' words through the Provider protocol (jobs/limits.TermsProvider): whole words, any case, or
    a regular expression; per Discord server; never an image's business."""
    from jobs.limits import BLOCKED, TermsProvider
    from store import Store

    store = Store(tmp_path / "bot.sqlite3")
    await store.open()
    try:
        await store.set_control("term", "31:red fox", {"regex": False})
        await store.set_control("term", "31:b[a4]d", {"regex": True})
        terms = TermsProvider(store)
        assert await terms.scores(31, ["a RED FOX at dawn"], []) == ({BLOCKED: 1.0}, {BLOCKED})
        assert await terms.scores(31, ["", "so b4d"], []) == ({BLOCKED: 1.0}, {BLOCKED})
        assert await terms.scores(31, ["a redfox"], [b"\x89PNG"]) == ({}, set())  # not a whole word
        assert await terms.scores(32, ["a red fox"], []) == ({}, set())  # another server's list
        flagged = judge(*(await terms.scores(31, ["red fox"], [])), {})
        assert flagged.flagged == [BLOCKED] and flagged.reason() == "blocked term"
    finally:
        await store.close()
