"""model:auto's choice and the reason people read: tags, phrases, names, ties, favorites, the default,
presets no server offers, and prompts written to break the sentence."""

from __future__ import annotations

from collections import Counter

from config import ModelPreset
from jobs.auto_model import NO_PRESET, Choice, choose, wants_auto
from jobs.compose import compose
from tests.conftest import make_settings

PRESETS = {
    "anime": ModelPreset(checkpoint="anime.safetensors", tags=["manga", "cel shaded", "chibi"], steps=20),
    "photo": ModelPreset(checkpoint="photo.safetensors", tags=["photo", "portrait", "35mm film"]),
    "sdxl": ModelPreset(checkpoint="sdxl.safetensors", tags=["landscape", "portrait"]),
    "pixel": ModelPreset(checkpoint="pixel.safetensors", tags=["pixel art", "8-bit"]),
}
ALL = list(PRESETS)


def pick(prompt: str, offered: list[str] = ALL, favorites: Counter | None = None) -> Choice:
    return choose(prompt, PRESETS, offered, favorites)


def test_a_tag_in_the_prompt_picks_its_preset_and_says_the_word_as_written():
    assert pick("a girl reading MANGA on a train") == Choice("anime", "`anime` preset: the prompt says `MANGA`")
    assert pick("Manga, a fox") == Choice("anime", "`anime` preset: the prompt says `Manga`")


def test_only_whole_words_match():
    assert pick("a mangaka at her desk").name is None  # "manga" inside a longer word
    assert pick("photographs of the sea").name is None
    assert pick("an 8-bit castle") == Choice("pixel", "`pixel` preset: the prompt says `8-bit`")
    assert pick("pixel-perfect icons").name == "pixel"  # the name, before a hyphen, is a whole word


def test_a_tag_of_several_words_matches_the_phrase_only():
    assert pick("a knight, Cel   Shaded, dramatic") == Choice("anime", "`anime` preset: the prompt says `Cel Shaded`")
    assert pick("a shaded cel in a prison").name is None  # the words, but not the phrase
    assert pick("on 35mm\nfilm at dusk") == Choice("photo", "`photo` preset: the prompt says `35mm film`")


def test_the_presets_name_counts_as_a_tag():
    assert pick("an anime fox") == Choice("anime", "`anime` preset: the prompt says `anime`")


def test_the_preset_with_most_matching_words_wins_and_all_are_quoted():
    chosen = pick("a portrait in manga style, chibi, on 35mm film")
    assert chosen == Choice("anime", "`anime` preset: the prompt says `manga` and `chibi`")
    repeated = pick("portrait portrait portrait of a chibi manga cat")  # a word counts once however often
    assert repeated.name == "anime"


def test_ties_go_to_the_preset_of_more_favorites_then_to_the_first_declared():
    assert pick("a portrait of a cat") == Choice("photo", "`photo` preset: the prompt says `portrait`")
    liked = pick("a portrait of a cat", favorites=Counter({"sdxl": 3, "photo": 1}))
    assert liked == Choice("sdxl", "`sdxl` preset: the prompt says `portrait` (and more of your favorites used it)")
    even = pick("a portrait of a cat", favorites=Counter({"sdxl": 2, "photo": 2}))
    assert even == Choice("photo", "`photo` preset: the prompt says `portrait`")
    assert pick("a manga cat", favorites=Counter({"sdxl": 9})).name == "anime"  # the prompt before favorites


def test_no_match_picks_the_preset_most_of_their_favorites_used():
    assert pick("a quiet lake", favorites=Counter({"photo": 1, "sdxl": 4})) == Choice(
        "sdxl", "`sdxl` preset: most of your favorites used it")
    assert pick("a quiet lake", favorites=Counter({"sdxl": 2, "photo": 2})).name == "photo"  # tie: declared order


def test_no_match_and_no_favorites_is_the_default_model():
    assert pick("a quiet lake") == Choice(None, NO_PRESET) == pick("a quiet lake", favorites=Counter())
    assert NO_PRESET == "the default model: nothing in the prompt or your favorites pointed to a preset"
    assert choose("a manga cat", {}, [], None) == Choice(None, NO_PRESET)


def test_presets_no_server_offers_are_never_picked():
    offered = ["photo", "sdxl"]
    assert pick("a manga portrait", offered).name == "photo"
    assert pick("a manga cat", offered) == Choice(None, NO_PRESET)
    assert pick("a lake", offered, Counter({"anime": 9, "sdxl": 1})) == Choice(
        "sdxl", "`sdxl` preset: most of your favorites used it")
    assert pick("a lake", offered, Counter({"anime": 9})) == Choice(None, NO_PRESET)
    assert pick("a lake", offered, Counter({"gone": 9})) == Choice(None, NO_PRESET)  # a preset since removed


def test_hostile_prompts_stay_inert_in_the_reason():
    markdown = pick("**manga** `x` [link](https://evil.example) ||spoiler||")
    assert markdown == Choice("anime", "`anime` preset: the prompt says `manga`")
    mentions = pick("@everyone <@123> manga <@&456>")
    assert mentions.reason == "`anime` preset: the prompt says `manga`"
    huge = pick("word " * 1199 + "chibi")  # 6000 characters
    assert len("word " * 1199 + "chibi") == 6000 and huge == Choice("anime", "`anime` preset: the prompt says `chibi`")
    assert pick("x" * 6000) == Choice(None, NO_PRESET)


def test_tags_the_operator_wrote_oddly_are_quoted_safely():
    odd = {"weird": ModelPreset(checkpoint="w.safetensors", tags=["c++", "a`b", "(regex)*", "", "   "]),
           "long": ModelPreset(checkpoint="l.safetensors", tags=["x" * 80])}
    assert choose("code in c++ today", odd, list(odd), None) == Choice("weird", "`weird` preset: the prompt says `c++`")
    assert choose("quote a`b here", odd, list(odd), None).reason == "`weird` preset: the prompt says `ab`"
    assert choose("no (regex)* here", odd, list(odd), None).name == "weird"  # escaped, matched literally
    assert choose("no regex here", odd, list(odd), None).name is None
    long = choose("x" * 80, odd, list(odd), None)
    assert long.name == "long" and long.reason == f"`long` preset: the prompt says `{'x' * 39}…`"
    many = {"many": ModelPreset(checkpoint="m.safetensors", tags=["a1", "b2", "c3", "d4", "e5"])}
    assert choose("e5 d4 c3 b2 a1", many, ["many"], None).reason == "`many` preset: the prompt says `e5` and `d4` and `c3`"


def test_auto_is_a_name_only_while_no_preset_is_called_so():
    assert wants_auto("auto", ALL) and wants_auto(" AUTO ", ALL) and wants_auto("auto", [])
    assert not wants_auto("auto", ["Auto"]) and not wants_auto("anime", ALL) and not wants_auto(None, ALL)


def test_compose_applies_the_chosen_preset_and_keeps_the_reason(tmp_path):
    settings = make_settings(tmp_path, model_presets=PRESETS)
    request = compose(settings, "a manga cat --seed 3", {"model": "auto"}, {}, {})
    assert (request["model"], request["checkpoint"], request["steps"]) == ("anime", "anime.safetensors", 20)
    assert request["model_reason"] == "`anime` preset: the prompt says `manga`"
    flagged = compose(settings, "a lake --model auto --no manga", {}, {}, {},
                      favorites=Counter({"photo": 2}), offered=["photo", "sdxl"])
    assert (flagged["model"], flagged["model_reason"]) == ("photo", "`photo` preset: most of your favorites used it")
    saved = compose(settings, "a lake", {}, {"model": "auto"}, {})  # a saved default
    assert (saved["model"], saved["checkpoint"], saved["model_reason"]) == (settings.checkpoint, None, NO_PRESET)
    chosen = compose(settings, "a manga cat", {"model": "photo"}, {"model": "auto"}, {})  # the option wins
    assert chosen["model"] == "photo" and "model_reason" not in chosen
