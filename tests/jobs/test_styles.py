"""Style presets: the shipped file, apply() keeping every prompt literal, and the refusals' sentences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs import styles
from jobs.styles import NAME, Style, StyleError, apply, check_name, load, make

NAME_SENTENCE = ("A style name is 1 to 32 characters (a to z, 0 to 9, - and _), "
                 "starting with a letter or digit.")
SLOT_SENTENCE = "The template must contain {prompt} once, where your prompt goes."
REQUIRED = ["cinematic", "photographic", "anime", "digital-art", "fantasy", "cyberpunk", "watercolor",
            "oil-painting", "pixel-art", "3d-render", "line-art", "isometric", "comic-book", "low-poly"]
CINEMATIC = Style("cinematic", "cinematic film still of {prompt}, film grain", "anime, cartoon")


# The shipped file

def test_shipped_file_loads_with_the_required_styles():
    shipped = load(styles.SHIPPED)
    assert len(shipped) >= 12
    assert set(REQUIRED) <= set(shipped)
    for name, style in shipped.items():
        assert NAME.fullmatch(name) and style.name == name
        assert style.prompt.count("{prompt}") == 1, name
        assert len(style.prompt) <= 1000 and len(style.negative) <= 1000, name
        assert 0 < len(style.description) <= 100, name
        assert style.negative and not style.nsfw, name


def test_shipped_file_is_at_the_repository_root():
    assert styles.SHIPPED == Path(__file__).resolve().parents[2] / "styles.toml"


# apply()

def test_apply_puts_the_prompt_in_the_template_and_joins_the_negatives():
    assert apply(CINEMATIC, "a cat", "blurry") == (
        "cinematic film still of a cat, film grain", "blurry, anime, cartoon")
    shipped = load(styles.SHIPPED)
    assert apply(shipped["cinematic"], "a cat", "") == (
        "cinematic film still of a cat, shallow depth of field, vignette, highly detailed, high budget, bokeh, "
        "cinemascope, moody, epic, gorgeous, film grain, grainy",
        "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, ugly, "
        "disfigured")
    assert apply(shipped["pixel-art"], "a castle", "")[0].startswith("pixel art of a castle, 16-bit")
    assert apply(shipped["enhance"], "a fox", "")[0].startswith("a fox, breathtaking")


@pytest.mark.parametrize(("mine", "theirs", "joined"), [
    ("", "anime", "anime"),
    ("blurry", "", "blurry"),
    ("", "", ""),
    ("   ", "anime", "anime"),
    ("blurry, ", " anime ", "blurry, anime"),
    (",", ",", ""),
])
def test_apply_skips_empty_negatives(mine, theirs, joined):
    assert apply(Style("s", "{prompt}", theirs), "x", mine)[1] == joined


@pytest.mark.parametrize("text", [
    "{0}", "{prompt.__class__.__init__}", "{prompt.__class__.__init__.__globals__}", "%(x)s", "%s %d",
    "${x}", "$x", "{{prompt}}", "{", "}", "{}", "{prompt", "prompt}", "{!r}", "{0:>{1}}", "\\{prompt\\}",
])
def test_injection_stays_literal_in_the_prompt_and_the_negative(text):
    assert apply(CINEMATIC, text, text) == (
        f"cinematic film still of {text}, film grain", f"{text}, anime, cartoon")


@pytest.mark.parametrize("template", ["{0} {prompt} %s", "{prompt} {prompt.__class__}", "${x} {prompt} %(x)s {}"])
def test_injection_stays_literal_in_the_template(template):
    style = make("mine", template, "{0}, %s")
    assert apply(style, "a cat", "{1}") == (template.replace("{prompt}", "a cat", 1), "{1}, {0}, %s")


def test_a_prompt_containing_the_slot_is_inserted_once_literally():
    assert apply(Style("s", "a {prompt} b"), "x {prompt} y", "") == ("a x {prompt} y b", "")
    assert apply(Style("s", "{prompt}!"), "{prompt}{prompt}", "") == ("{prompt}{prompt}!", "")
    # a Style built by hand may hold the slot twice: only the first is filled
    assert apply(Style("s", "{prompt} and {prompt}"), "x", "") == ("x and {prompt}", "")


pieces = ["{prompt}", "{0}", "%s", "%(x)s", "${x}", "{", "}", "a", " ", ","]
tricky = st.text() | st.lists(st.sampled_from(pieces)).map("".join)  # "{prompt}" itself, often


@given(tricky, tricky, st.sampled_from([CINEMATIC, Style("e", "{prompt}"), Style("t", "{0} {prompt} %s", "x")]))
def test_apply_replaces_the_first_slot_and_never_raises(prompt, negative, style):
    before, _, after = style.prompt.partition("{prompt}")
    expected = prompt.join([before, after])
    styled, joined = apply(style, prompt, negative)
    assert styled == expected
    assert isinstance(joined, str)


@given(st.text(), tricky)
def test_apply_with_brace_heavy_text(prompt, extra):
    style = Style("b", extra + "{prompt}" + extra)  # the slot may appear in extra too: the first one is used
    parts = style.prompt.split("{prompt}")
    assert apply(style, prompt, "")[0] == parts[0] + prompt + "{prompt}".join(parts[1:])


# load(): the operator's file

def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "styles.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_load_reads_every_field(tmp_path):
    path = write(tmp_path, '[a]\nprompt = "x {prompt} y"\nnegative = "n"\ndescription = "d"\nnsfw = true\n'
                           "[b_2]\nprompt = '{prompt}'\n")
    assert load(path) == {"a": Style("a", "x {prompt} y", "n", "d", True), "b_2": Style("b_2", "{prompt}")}
    assert load(write(tmp_path, "# nothing yet\n")) == {}


@pytest.mark.parametrize(("text", "style", "problem"), [
    ('[Cinematic]\nprompt = "{prompt}"\n', "[Cinematic]",
     "the name must be 1 to 32 characters (a to z, 0 to 9, - and _), starting with a letter or digit"),
    ('["a b"]\nprompt = "{prompt}"\n', '["a b"]', "the name must be"),
    (f'[{"x" * 33}]\nprompt = "{{prompt}}"\n', f'[{"x" * 33}]', "the name must be"),
    ('[-x]\nprompt = "{prompt}"\n', "[-x]", "the name must be"),
    ('[plain]\nnegative = "n"\n', "[plain]", 'needs prompt = "... {prompt} ..."'),
    ('[plain]\nprompt = "a cat"\n', "[plain]",
     "prompt must contain {prompt} once, where the person's prompt goes (it has 0)"),
    ('[plain]\nprompt = "{prompt} {prompt}"\n', "[plain]", "(it has 2)"),
    ('[plain]\nprompt = 3\n', "[plain]", "prompt must be a string"),
    ('[plain]\nprompt = "{prompt}"\nnegative = ["a"]\n', "[plain]", "negative must be a string"),
    ('[plain]\nprompt = "{prompt}"\ndescription = 1.5\n', "[plain]", "description must be a string"),
    ('[plain]\nprompt = "{prompt}"\nnsfw = "yes"\n', "[plain]", "nsfw must be true or false"),
    (f'[plain]\nprompt = "{{prompt}}{"x" * 993}"\n', "[plain]", "prompt has 1001 characters; the most is 1000"),
    (f'[plain]\nprompt = "{{prompt}}"\nnegative = "{"x" * 1001}"\n', "[plain]",
     "negative has 1001 characters; the most is 1000"),
    (f'[plain]\nprompt = "{{prompt}}"\ndescription = "{"x" * 101}"\n', "[plain]",
     "description has 101 characters; the most is 100"),
    ('[plain]\nprompt = "{prompt}"\npromt = "x"\n', "[plain]",
     'unknown key "promt" (the keys are prompt, negative, description and nsfw)'),
    ('plain = "{prompt}"\n', "[plain]", "must be a table (write [name] on a line of its own"),
])
def test_load_names_the_file_the_style_and_the_problem(tmp_path, text, style, problem):
    path = write(tmp_path, text)
    with pytest.raises(StyleError) as raised:
        load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {style}: ")
    assert problem in message and message.endswith(".")


def test_load_lists_every_problem_of_every_style(tmp_path):
    path = write(tmp_path, '[good]\nprompt = "{prompt}"\n[one]\nprompt = "no slot"\nnsfw = 1\n[Two]\n')
    with pytest.raises(StyleError) as raised:
        load(path)
    assert str(raised.value) == (
        f"{path}: [one]: prompt must contain {{prompt}} once, where the person's prompt goes (it has 0); "
        "[one]: nsfw must be true or false; "
        "[Two]: the name must be 1 to 32 characters (a to z, 0 to 9, - and _), starting with a letter or digit; "
        '[Two]: needs prompt = "... {prompt} ...".')


@pytest.mark.parametrize(("content", "start"), [
    ("[a\nprompt = 1\n", "is not valid TOML ("),
    ('[a]\nprompt = "{prompt}"\n[a]\nprompt = "{prompt}"\n', "is not valid TOML ("),
    (b"[a]\nprompt = '\xff{prompt}'\n", "is not UTF-8 text."),
])
def test_load_refuses_a_file_that_is_not_toml(tmp_path, content, start):
    path = write(tmp_path, content)
    with pytest.raises(StyleError, match="^" + re.escape(f"{path} {start}")):
        load(path)


def test_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(StyleError) as raised:
        load(tmp_path / "nowhere.toml")
    assert str(raised.value) == f"{tmp_path / 'nowhere.toml'} cannot be read (No such file or directory)."


# check_name() and make(): a person's own style

@pytest.mark.parametrize(("given_name", "cleaned"), [
    ("cinematic", "cinematic"), ("  Cinematic ", "cinematic"), ("3D-Render", "3d-render"), ("a", "a"),
    ("x" * 32, "x" * 32), ("my_style-2", "my_style-2"),
])
def test_check_name_cleans_a_good_name(given_name, cleaned):
    assert check_name(given_name) == cleaned


@pytest.mark.parametrize("bad", ["", "   ", "-x", "_x", "a b", "x" * 33, "café", "a/b", "a.b", "{prompt}",
                                 "a\nb", "ünïcode", "x\u200b", "@everyone"])
def test_check_name_refuses_a_bad_name(bad):
    with pytest.raises(StyleError) as raised:
        check_name(bad)
    assert str(raised.value) == NAME_SENTENCE


def test_make_builds_a_checked_style():
    assert make(" Mine ", " moody {prompt} ", " blurry ", description=" dark ", nsfw=True) == \
        Style("mine", "moody {prompt}", "blurry", "dark", True)
    assert make("plain", "{prompt}") == Style("plain", "{prompt}")


@pytest.mark.parametrize(("args", "kwargs", "sentence"), [
    (("bad name", "{prompt}"), {}, NAME_SENTENCE),
    (("mine", "a cat"), {}, SLOT_SENTENCE),
    (("mine", "{prompt} and {prompt}"), {}, SLOT_SENTENCE),
    (("mine", "{Prompt}"), {}, SLOT_SENTENCE),
    (("mine", ""), {}, SLOT_SENTENCE),
    (("mine", "{prompt}" + "x" * 993), {}, "The template has 1001 characters; the most is 1000."),
    (("mine", "{prompt}", "x" * 1001), {}, "The negative prompt has 1001 characters; the most is 1000."),
    (("mine", "{prompt}"), {"description": "x" * 101}, "The description has 101 characters; the most is 100."),
    (("mine", None), {}, "The template must be text."),
    (("mine", "{prompt}"), {"nsfw": "yes"}, "The nsfw flag must be true or false."),
    (("mine", "a cat", "x" * 1001), {}, SLOT_SENTENCE),  # the template is checked first
])
def test_make_refuses_with_a_sentence_for_the_person(args, kwargs, sentence):
    with pytest.raises(StyleError) as raised:
        make(*args, **kwargs)
    assert str(raised.value) == sentence


def test_style_error_is_a_value_error():
    assert issubclass(StyleError, ValueError)
