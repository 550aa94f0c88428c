"""flags.parse: each flag's good and bad values, the exact sentences, and a property over any text."""

from __future__ import annotations


import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from jobs.flags import FlagError, Flags, parse

PRESETS = ("anime", "Photo Real", "seed", "sdxl-turbo")
STYLES = ("ink", "Water Color")
BUILT_IN = "`--ar`, `--seed`, `--steps`, `--cfg`, `--no`, `--style`, `--model`, `--lora`"


def values(prompt: str, **kwargs) -> dict:
    return parse(prompt, presets=PRESETS, styles=STYLES, **kwargs).values


def error(prompt: str, **kwargs) -> str:
    kwargs.setdefault("presets", PRESETS)
    kwargs.setdefault("styles", STYLES)
    with pytest.raises(FlagError) as caught:
        parse(prompt, **kwargs)
    return str(caught.value)


def test_no_flags_keeps_the_prompt_with_whitespace_tidied():
    assert parse("  a cat\n on a   mat ") == Flags("a cat on a mat", {})
    assert parse("") == Flags("", {})


def test_flags_are_removed_and_the_rest_kept_in_order():
    result = parse("a cat --ar 16:9 on a mat --seed 42 at dusk", presets=PRESETS)
    assert result == Flags("a cat on a mat at dusk", {"aspect": (16, 9), "seed": 42})


def test_only_flags_gives_an_empty_prompt():
    assert parse("--seed 1 --steps 2") == Flags("", {"seed": 1, "steps": 2})


@pytest.mark.parametrize("text, expected", [
    ("--ar 16:9", (16, 9)), ("--ar 1:1", (1, 1)), ("--ar 1:4", (1, 4)), ("--ar 4:1", (4, 1)),
    ("--ar 100:25", (100, 25)), ("--ar 32:18", (32, 18)), ("--aspect 2:3", (2, 3)), ("--AR 3:2", (3, 2)),
])
def test_aspect_good(text, expected):
    assert values(text) == {"aspect": expected}


@pytest.mark.parametrize("text", [
    "--ar", "--ar 16x9", "--ar 16:", "--ar :9", "--ar 0:1", "--ar 101:100", "--ar 5:1", "--ar 1:5",
    "--ar 16:9:1", "--ar -1:2", "--ar 1.5:1", "--ar --seed 1", "--ar ١:١",
])
def test_aspect_bad(text):
    assert error(text) == "--ar needs a width and height from 1 to 100, from 1:4 to 4:1, like --ar 16:9."


def test_aspect_alias_is_named_in_its_error():
    assert error("--aspect wide") == (
        "--aspect needs a width and height from 1 to 100, from 1:4 to 4:1, like --aspect 16:9.")


@pytest.mark.parametrize("text, expected", [
    ("--seed 0", 0), ("--seed 42", 42), ("--seed 007", 7), ("--seed 9007199254740991", 2**53 - 1),
])
def test_seed_good(text, expected):
    assert values(text) == {"seed": expected}


@pytest.mark.parametrize("text", [
    "--seed", "--seed -1", "--seed 9007199254740992", "--seed 4.2", "--seed 1e3", "--seed 4_2", "--seed ٤٢",
    "--seed abc", "--seed " + "9" * 5000, "--seed +1",
])
def test_seed_bad(text):
    assert error(text) == "--seed needs a whole number from 0 to 9007199254740991, like --seed 42."


def test_steps():
    assert values("--steps 1") == {"steps": 1}
    assert values("--steps 5000") == {"steps": 5000}  # the bot checks the upper limit
    for text in ("--steps", "--steps 0", "--steps 2.5", "--steps -3", "--steps many"):
        assert error(text) == "--steps needs a whole number of steps, like --steps 30."


def test_cfg():
    for text, expected in [("--cfg 7", 7.0), ("--cfg 7.5", 7.5), ("--cfg 0", 0.0), ("--cfg 30", 30.0),
                           ("--cfg .5", 0.5), ("--cfg 3.", 3.0)]:
        assert values(text) == {"cfg": expected}
        assert isinstance(values(text)["cfg"], float)
    for text in ("--cfg", "--cfg -1", "--cfg 30.01", "--cfg nan", "--cfg inf", "--cfg 1e1", "--cfg 7,5", "--cfg ."):
        assert error(text) == "--cfg needs a number from 0 to 30, like --cfg 7.5."


def test_no_spans_words_up_to_the_next_flag_and_repeats():
    assert parse("a cat --no text, watermark --seed 3 grumpy", presets=PRESETS) == Flags(
        "a cat grumpy", {"no": "text, watermark", "seed": 3})
    assert values("--no blurry  hands --no text") == {"no": "blurry hands, text"}
    assert values("--no text, --no blur") == {"no": "text, blur"}
    assert values("a cat --no dogs") == {"no": "dogs"}
    for text in ("a cat --no", "--no --seed 3", "--no , --seed 3"):
        assert error(text) == "--no needs what to leave out, like --no text, watermark."


def test_style():
    assert values("--style ink") == {"style": "ink"}
    assert values("--style INK") == {"style": "ink"}
    assert parse("a --style water   color b", styles=STYLES) == Flags("a b", {"style": "Water Color"})
    assert parse("a --style water b", styles=STYLES + ("water",)) == Flags("a b", {"style": "water"})
    assert error("--style oil") == "There is no style called oil. The styles are: `ink`, `Water Color`."
    assert error("--style") == "--style needs a style name: `ink`, `Water Color`."
    assert error("--style ink", styles=()) == "No styles are set up, so --style can't be used."
    many = [f"s{n}" for n in range(12)]
    assert error("--style x", styles=many) == (
        "There is no style called x. The styles are: `s0`, `s1`, `s2`, `s3`, `s4`, `s5`, `s6`, `s7`, `s8`, `s9`, ….")


def test_model_and_preset_flags():
    assert values("--model anime") == {"model": "anime"}
    assert values("--model photo real") == {"model": "Photo Real"}
    assert values("a cat --anime") == {"model": "anime"}
    assert values("a cat --ANIME") == {"model": "anime"}
    assert values("—sdxl-turbo") == {"model": "sdxl-turbo"}
    assert values("--model seed") == {"model": "seed"}  # a preset named like a flag: only by --model
    assert values("--seed 5") == {"seed": 5}
    assert error("--model dall-e") == (
        "There is no model called dall-e. The models are: `anime`, `Photo Real`, `seed`, `sdxl-turbo`, `auto`.")
    assert error("--model") == "--model needs a model name: `anime`, `Photo Real`, `seed`, `sdxl-turbo`, `auto`."
    assert error("--model x", presets=()) == "No models are set up, so --model can't be used."
    assert error("--anime --model anime") == "--anime and --model both set the model; keep one."
    assert error("--anime --sdxl-turbo") == "--anime and --sdxl-turbo both set the model; keep one."
    assert error("--anime --anime") == "--anime is given twice; keep one."


def test_model_auto_lets_the_bot_choose_unless_a_preset_is_called_so():
    assert values("a cat --model auto") == {"model": "auto"} == values("--model AUTO", offered=())
    assert error("--anime --model auto") == "--anime and --model both set the model; keep one."
    assert error("--auto").startswith("`--auto` is not a flag I know.")  # only --model auto
    assert error("--model auto", presets=()) == "No models are set up, so --model can't be used."
    assert parse("--model auto", presets=("Auto",)).values == {"model": "Auto"}  # the operator's own preset


def test_loras():
    assert values("--lora styles/ink_v2.safetensors:0.7") == {"loras": [("styles/ink_v2.safetensors", 0.7)]}
    assert values("--lora a --lora b:-1.5 --lora c\\d.e-f:2") == {
        "loras": [("a", 1.0), ("b", -1.5), ("c\\d.e-f", 2.0)]}
    assert parse("a --lora x b") == Flags("a b", {"loras": [("x", 1.0)]})
    sentence = "--lora needs a LoRA name and, if you like, a strength from -2 to 2, like --lora ink_v2:0.7."
    for text in ("--lora", "--lora :1", "--lora a:", "--lora a:3", "--lora a:-2.1", "--lora a:b:1", "--lora a*b",
                 "--lora ../secret", "--lora /etc/x", "--lora a\\..\\b", "--lora a:nan", "--lora --seed 3"):
        assert error(text) == sentence, text


def test_a_fourth_lora_is_refused():
    assert error("--lora a --lora b --lora c --lora d") == "At most 3 LoRAs can be used at once; remove a --lora."
    assert error("--lora a --lora b", max_loras=1) == "At most 1 LoRA can be used at once; remove a --lora."
    assert error("--lora a", max_loras=0) == "LoRAs can't be used here; remove --lora."
    assert len(values("--lora a --lora b --lora c --lora d", max_loras=4)["loras"]) == 4


def test_unknown_flag_lists_the_valid_ones():
    assert error("a cat --sead 42", presets=()) == f"`--sead` is not a flag I know. Flags you can use: {BUILT_IN}."
    assert error("--sead 42", presets=("anime",)) == (
        f"`--sead` is not a flag I know. Flags you can use: {BUILT_IN}, and a model's own flag: `--anime`.")
    assert error("--x") == (
        f"`--x` is not a flag I know. Flags you can use: {BUILT_IN}, and a model's own flag: `--anime`, `--sdxl-turbo`.")
    many = [f"m{n}" for n in range(11)]
    assert error("--x", presets=many).endswith(
        "own flag: `--m0`, `--m1`, `--m2`, `--m3`, `--m4`, `--m5`, `--m6`, `--m7`, `--m8`, `--m9`, ….")
    assert error("--aspect-ratio 2:3", presets=()).startswith("`--aspect-ratio` is not a flag I know.")
    assert error("--seed=42", presets=()).startswith("`--seed=42` is not a flag I know.")


def test_a_preset_whose_model_no_server_has_is_not_available_and_not_offered():
    offered = ("anime",)
    assert error("a cat --sdxl-turbo", offered=offered) == (
        "The model `sdxl-turbo` is not available on this server right now. Models you can use: `anime`.")
    assert error("a cat --model sdxl-turbo", offered=offered) == (
        "The model `sdxl-turbo` is not available on this server right now. Models you can use: `anime`.")
    assert error("a cat --model dall-e", offered=offered) == \
        "There is no model called dall-e. The models are: `anime`, `auto`."
    assert error("a cat --dreamshaper", offered=offered) == (
        f"`--dreamshaper` is not a flag I know. Flags you can use: {BUILT_IN}, and a model's own flag: `--anime`.")
    assert error("a cat --anime", offered=()) == (
        "The model `anime` is not available on this server right now. Leave the model out to use the default.")
    assert values("a cat --anime", offered=offered) == {"model": "anime"}


def test_an_echo_is_clipped_and_cannot_ping_or_break_formatting():
    assert error("--a`b@everyone<@123>", presets=()).startswith("`--abeveryone123` is not a flag I know. ")
    assert error("--" + "x" * 100, presets=()).startswith("`--" + "x" * 37 + "…` is not a flag I know. ")
    assert error("--a\x00\u202eb", presets=()).startswith("`--ab` is not a flag I know. ")
    assert error("--style `@here`") == "There is no style called here. The styles are: `ink`, `Water Color`."


def test_the_same_flag_twice_is_refused():
    assert error("--seed 1 --seed 2") == "--seed is given twice; keep one."
    assert error("--SEED 1 --seed 2") == "--seed is given twice; keep one."
    assert error("--ar 1:1 --aspect 2:3") == "--ar and --aspect both set the aspect ratio; keep one."
    assert error("--style ink --style ink") == "--style is given twice; keep one."
    assert error("--cfg 1 --cfg 1") == "--cfg is given twice; keep one."


def test_em_dash_counts_as_two_dashes():
    assert parse("a cat —ar 2:3 —seed 9 —no dogs —anime", presets=PRESETS) == Flags(
        "a cat", {"aspect": (2, 3), "seed": 9, "no": "dogs", "model": "anime"})
    assert error("—sead 1", presets=()).startswith("`--sead` is not a flag I know.")


@pytest.mark.parametrize("text", [
    "a well--known cat", "a cat -- on a mat", "a cat — on a mat", "cat—dog", "a cat ---", "---seed 4", "-->",
    "https://example.com/a--b?c=--d", "http://x.y/--seed", "-seed 4", "—", "--", "a —-seed 4", "a --- b",
])
def test_text_that_is_not_a_flag_stays(text):
    result = parse(text, presets=PRESETS, styles=STYLES)
    assert result == Flags(" ".join(text.split()), {})


@pytest.mark.parametrize("text", [
    "-" * 10_000, "-- " * 3_400, "—" * 10_000, "--no " + "x " * 5_000, "a" * 10_000, "--" + "a" * 10_000,
    "--seed " + "9" * 10_000, "--cfg " + "1" * 10_000 + "x", "--lora " + "a" * 10_000 + ":1", "--ar " + "1:" * 5_000,
    "--lora a " * 1_000, "--model " + "photo " * 2_000, "well--" * 1_700,
])
def test_long_prompts_parse_to_a_short_answer(text):  # (their speed is printed by bench/input_latency.py)
    try:
        parse(text, presets=PRESETS, styles=STYLES)
    except FlagError as caught:
        assert len(str(caught)) < 400


pieces = st.sampled_from([
    "--", "—", "-", ":", ".", ",", " ", "\n", "\t", "\u00a0", "a", "x", "0", "1", "16:9", "0.5", "-2", "ar", "aspect",
    "seed", "steps", "cfg", "no", "style", "model", "lora", "anime", "ink", "photo", "real", "water", "color", "SEED",
    "--ar ", "--seed ", "--no ", "--lora ", "--style ", "--model ", "--anime ", "—anime ", "@", "`", "<", ">", "/",
    "\\", "..", "\x00", "ß", "İ",
])
words = st.sampled_from([
    "a", "cat", "well--known", "--", "—", "https://x.y/--z", "--ar 16:9", "—aspect 1:4", "--seed 42", "--steps 30",
    "--cfg 7.5", "--no text, watermark", "--style water color", "--model Photo Real", "--anime", "--SDXL-TURBO",
    "--lora ink_v2:0.7", "--lora a/b.c", "--seed", "--x",
])
prompts = st.one_of(st.text(max_size=200), st.lists(pieces | st.text(max_size=4), max_size=40).map("".join),
                    st.lists(words, max_size=12).map(" ".join))


@settings(max_examples=1000, deadline=None)
@given(prompts, st.integers(min_value=-1, max_value=4))
def test_parse_raises_only_flag_error_and_removes_every_flag(prompt, max_loras):
    try:
        result = parse(prompt, presets=PRESETS, styles=STYLES, max_loras=max_loras)
    except FlagError as caught:
        message = str(caught)
        assert message and "\n" not in message and "``" not in message and message.count("`") % 2 == 0
        assert "@" not in message  # backticks only in pairs around a flag or a name: the text cannot break out
        assert "<" not in message and ">" not in message
        event("refused")
        return
    event("parsed with values" if result.values else "parsed without values")
    again = parse(result.prompt, presets=PRESETS, styles=STYLES, max_loras=max_loras)
    assert again == Flags(result.prompt, {})
    for word in result.prompt.split():
        assert not (word.startswith("--") and word[2:3].isalnum()), word
        assert not (word.startswith("—") and word[1:2].isalnum()), word
