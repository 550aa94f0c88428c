"""What the bot shows of a server's text is short and inert, and ComfyUI's errors never crash the bot."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfy.types import ExecutionFailed, Interrupted, PromptRejected
from safe_text import clip, server_line, summarize

FRAGMENTS = ["\n", "\r\n", " ", "  \t", ":", "://", "@", "=", "<", ">", "</", "<b>", "<!--", "'", '"',
             "Authorization: ", "Set-Cookie: ", "X-Api-Key: ", "Cookie:", "Bearer ", "bearer\t", "token=",
             "api_key = ", "password=", "https://", "user:pass@", "deadbeef" * 5, "@everyone", "<@123>",
             "Traceback (most recent call last):\n", "  File \"x.py\", line 1\n", "Error: ", "\x00", "\u202e"]
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), max_size=40).map("".join) | st.text()
big_texts = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=5), st.integers(0, 12_000))
SECRET_HEADER = re.compile(r"(?i)(authorization|set-cookie|cookie|x-api-key)[\"']?\s*:")
SECRET_PAIR = re.compile(r"(?i)(token|api_key|password)\s*=")
TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")


@given(texts | big_texts, st.integers(0, 3000))
def test_clip_never_exceeds_the_limit(text, limit):
    clipped = clip(text, limit)
    assert len(clipped) <= limit
    assert clipped == text or clipped.endswith("…") or limit == 0


@settings(deadline=None)
@given(texts | big_texts, st.integers(1, 500))
def test_a_server_line_is_one_short_line_without_secrets_or_markup(text, limit):
    line = server_line(text, limit)
    assert len(line) <= limit
    assert "\n" not in line and "\r" not in line
    assert "://" not in line
    assert "bearer " not in line.lower()
    assert not SECRET_HEADER.search(line)
    assert not SECRET_PAIR.search(line)
    assert not TAG.search(line)
    assert "@everyone" not in line.lower()


@pytest.mark.parametrize(("text", "shown"), [
    ("Authorization: Bearer abc.def.ghi", "[hidden]"),
    ("upstream said Set-Cookie: session=abc123; Path=/", "upstream said [hidden]"),
    ("X-Api-Key: 5f2b9c", "[hidden]"),
    ("cannot fetch https://admin:hunter2@models.example.com/x.safetensors?sig=1 now", "cannot fetch [hidden] now"),
    ("login admin:hunter2@db.internal failed", "login [hidden] failed"),
    ("rejected Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "rejected [hidden]"),
    ("retry with token=abc123 or api_key = 'k' or password: hunter2", "retry with [hidden] or [hidden] or [hidden]"),
    ("bad key 0123456789abcdef0123456789abcdef01 given", "bad key [hidden] given"),
    ("secret dGhpcyBpcyBhIHNlY3JldCB2YWx1ZSAxMjM0NTY3OA== leaked", "secret [hidden] leaked"),
    ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>",
     "502 Bad Gateway"),
    ("<p>Service <b>unavailable</b></p>", "Service unavailable"),
    ("\n\n   first   line\twith  spaces  \nsecond line", "first line with spaces"),
    ("hey @everyone", "hey @\u200beveryone"),
    ("KeyError: 'model'", "KeyError: 'model'"),
    ("Allocation on device 0 would exceed allowed memory.", "Allocation on device 0 would exceed allowed memory."),
    ("", ""),
    ("   \n\t", ""),
])
def test_server_line_examples(text, shown):
    assert server_line(text) == shown


def test_a_huge_traceback_gives_its_exception_line():
    text = "Traceback (most recent call last):\n" + '  File "nodes.py", line 1, in run\n    x()\n' * 10_000
    text += "RuntimeError: CUDA error: device-side assert triggered\n"
    assert server_line(text) == "RuntimeError: CUDA error: device-side assert triggered"


def test_a_long_line_is_clipped():
    line = server_line("word " * 1000)
    assert len(line) == 300 and line.endswith("…")


def test_summarize_counts_what_it_leaves_out():
    assert summarize([f"p{i}" for i in range(200)]) == "p0; p1; p2; … and 197 more problems"
    assert summarize(["a", "b", "c", "d"]) == "a; b; c; … and 1 more problem"
    assert summarize(["a", "b"]) == "a; b"
    assert summarize([]) == ""


# ComfyUI's errors --------------------------------------------------------------

def too_small(node: int) -> dict:
    return {"class_type": "EmptyImage", "dependent_outputs": ["9"], "errors": [{
        "type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "width",
        "extra_info": {"input_name": "width", "input_config": ["INT", {"min": 1}], "received_value": 0}}]}


def test_two_hundred_problems_are_summed_up():
    reply = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
             "node_errors": {str(node): too_small(node) for node in range(200)}}
    error = PromptRejected.from_reply(reply)
    text = str(error)
    assert len(text) < 1500
    assert text.startswith("ComfyUI rejected the workflow:\n- node 0 (EmptyImage), input 'width': Value 0 smaller")
    assert text.count("\n- ") == 3
    assert text.endswith("… and 197 more problems")
    assert len(error.problems) == 200


def test_a_huge_received_value_and_allowed_list_are_clipped():
    item = {"type": "value_not_in_list", "message": "Value not in list", "details": "",
            "extra_info": {"input_name": "ckpt_name", "received_value": "x" * 10_000,
                           "input_config": [[f"model-{i}-" + "y" * 200 for i in range(500)]]}}
    reply = {"node_errors": {"4": {"class_type": "CheckpointLoaderSimple", "errors": [item]}}}
    error = PromptRejected.from_reply(reply)
    text = str(error)
    assert len(text) < 500
    assert "input 'ckpt_name': 'xxx" in text and "is not one of the allowed values" in text
    assert "model-0-yyy" in text and "model-11-" not in text
    assert len(error.problems[0].allowed) == 500  # all of them, for the logs


def test_the_servers_summary_is_one_sanitized_line():
    reply = {"error": {"message": "Bad request\nAuthorization: Bearer abc", "details": "see https://x.example/y\nmore"},
             "node_errors": {}}
    assert str(PromptRejected.from_reply(reply)) == "ComfyUI rejected the workflow: Bad request (see [hidden])"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
kinds = st.sampled_from(["value_not_in_list", "value_smaller_than_min", "required_input_missing",
                         "custom_validation_failed", "exception_during_validation"]) | json_values
items = st.fixed_dictionaries({}, optional={
    "type": kinds, "message": json_values, "details": json_values,
    "extra_info": json_values | st.fixed_dictionaries({}, optional={
        "input_name": json_values, "received_value": json_values,
        "input_config": json_values | st.tuples(st.just("COMBO"), json_values).map(list)})}) | json_values
entries = st.fixed_dictionaries({}, optional={"class_type": json_values, "errors": st.lists(items, max_size=5) | items})
replies = json_values | st.fixed_dictionaries({}, optional={
    "error": json_values, "node_errors": st.dictionaries(st.text(max_size=5), entries | json_values, max_size=6)})


@settings(deadline=None)
@given(replies)
def test_any_rejection_reply_gives_a_short_sentence(reply):
    text = str(PromptRejected.from_reply(reply))
    assert text.startswith("ComfyUI rejected the workflow")
    assert len(text) < 1500
    assert text.count("\n") <= 4  # the summary, three problems, how many more


@settings(deadline=None)
@given(json_values | st.fixed_dictionaries({}, optional={
    "node_id": json_values, "node_type": json_values, "exception_type": json_values,
    "exception_message": json_values | texts | big_texts}))
def test_any_execution_error_gives_a_short_sentence(data):
    failed, interrupted = str(ExecutionFailed.from_data(data)), str(Interrupted.from_data(data))
    assert failed.startswith("ComfyUI failed in node ") and len(failed) < 500 and "\n" not in failed
    assert interrupted.startswith("The job was interrupted") and len(interrupted) < 200


def test_out_of_memory_is_named_even_in_a_huge_traceback():
    message = "CUDA out of memory. Tried to allocate 2.00 GiB\n" + "  at frame\n" * 20_000
    error = ExecutionFailed.from_data({"node_id": "3", "node_type": "K" * 5000, "exception_type": "RuntimeError",
                                       "exception_message": message})
    text = str(error)
    assert "ran out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in text
    assert len(text) < 300
    assert error.exception_message == message  # whole, for the logs
