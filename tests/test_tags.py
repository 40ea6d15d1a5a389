"""Tag rules: every rule on its own, then the order they combine in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from captionkit.errors import ConfigError
from captionkit.tags import TagRules, is_kaomoji, parse_replace, split_tags, tag_key

SCORED = [("1girl", 0.99), ("long_hair", 0.8), ("smile", 0.5), ("solo", 0.9)]


def run(rules: TagRules, tags: list[tuple[str, float | None]] = SCORED) -> list[str]:
    return rules.apply(tags)


def test_defaults_tidy_underscores_and_rank_by_score() -> None:
    assert run(TagRules()) == ["1girl", "solo", "long hair", "smile"]
    assert not TagRules().active


@pytest.mark.parametrize("face", [">_<", "^_^", "=_=", "o_o", "(o)_(o)", "<|>_<|>", "||_||"])
def test_kaomoji_keep_their_underscores(face: str) -> None:
    assert is_kaomoji(face)
    assert TagRules().apply([(face, 0.9), ("open_mouth", 0.8)]) == [face, "open mouth"]


def test_underscores_kept_on_request() -> None:
    rules = TagRules(underscores_to_spaces=False)
    assert rules.active
    assert run(rules) == ["1girl", "solo", "long_hair", "smile"]


def test_dedupe_is_case_and_underscore_blind_and_keeps_best_score() -> None:
    tags = [("Long_Hair", 0.3), ("smile", 0.5), ("long hair", 0.9), ("smile", None)]
    assert TagRules().apply(tags) == ["Long Hair", "smile"]


def test_exclude_exact_case_insensitive_and_underscore_blind() -> None:
    assert run(TagRules(exclude=("Long Hair", "SOLO"))) == ["1girl", "smile"]


def test_exclude_star_is_a_wildcard_and_nothing_else_is() -> None:
    tags = [("white_background", 0.9), ("simple background", 0.8), ("background", 0.7),
            ("rating:safe", 0.6), ("red_dress", 0.5), ("reddish", 0.4), ("what?", 0.3)]  # fmt: skip
    rules = TagRules(exclude=("*_background", "rating:*", "red_*", "what."))
    assert rules.apply(tags) == ["background", "reddish", "what?"]
    assert TagRules(exclude=("what?",)).apply(tags[-1:]) == []


def test_replace_old_new_and_empty_new_removes() -> None:
    rules = TagRules(replace=(("1girl", "woman"), ("long_hair", ""), ("Smile", "happy_face")))
    assert run(rules) == ["woman", "solo", "happy face"]


def test_replace_merges_with_an_existing_tag() -> None:
    rules = TagRules(replace=(("female", "woman"),))
    assert rules.apply([("woman", 0.4), ("female", 0.9)]) == ["woman"]


@pytest.mark.parametrize(
    ("pair", "expected"),
    [("old=new", ("old", "new")), (" a b = c ", ("a b", "c")), ("watermark=", ("watermark", "")),
     (r"\=_\==equal sign face", ("=_=", "equal sign face")), ("a=b=c", ("a", "b=c"))],
)  # fmt: skip
def test_parse_replace(pair: str, expected: tuple[str, str]) -> None:
    assert parse_replace(pair) == expected


@pytest.mark.parametrize("bad", ["no equals", "=new", "  =x"])
def test_parse_replace_rejects_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_replace(bad)
    assert "\n" not in str(info.value) and "--replace-tags" in str(info.value)


def test_always_first_in_given_order_only_when_present() -> None:
    rules = TagRules(always_first=("smile", "1boy", "long_hair"))
    assert run(rules) == ["smile", "long hair", "1girl", "solo"]


def test_max_tags_cuts_the_lowest_scores() -> None:
    assert run(TagRules(max_tags=2)) == ["1girl", "solo"]
    with pytest.raises(ValidationError):
        TagRules(max_tags=0)


def test_sort_alpha_and_none() -> None:
    assert run(TagRules(sort="alpha")) == ["1girl", "long hair", "smile", "solo"]
    assert run(TagRules(sort="none")) == ["1girl", "long hair", "smile", "solo"]
    unsorted = [("b", 0.1), ("a", 0.9), ("c", 0.5)]
    assert TagRules(sort="none").apply(unsorted) == ["b", "a", "c"]


def test_score_sort_puts_unscored_after_scored_in_their_order() -> None:
    tags = [("x", None), ("a", 0.2), ("y", None), ("b", 0.7)]
    assert TagRules().apply(tags) == ["b", "a", "x", "y"]


def test_trigger_word_first_once_never_excluded_or_cut() -> None:
    rules = TagRules(trigger_word="sks_style", exclude=("sks*",), max_tags=1)
    assert rules.apply([("smile", 0.9), ("sks style", 0.1)]) == ["sks_style"]  # verbatim
    rules = TagRules(trigger_word="sks", max_tags=2)
    assert run(rules) == ["sks", "1girl"]


def test_keep_tokens_head_keeps_its_place_rest_sorted_and_cut() -> None:
    tags = [("zebra", 0.1), ("yak", 0.2), ("b", 0.9), ("a", 0.3), ("c", 0.8)]
    rules = TagRules(keep_tokens=2, max_tags=3)
    assert rules.apply(tags) == ["zebra", "yak", "b"]
    assert TagRules(keep_tokens=2, sort="alpha").apply(tags) == ["zebra", "yak", "a", "b", "c"]
    # the head is never cut, even past max_tags
    assert TagRules(keep_tokens=3, max_tags=1).apply(tags) == ["zebra", "yak", "b"]


def test_keep_tokens_counts_the_trigger_word() -> None:
    tags = [("zebra", 0.1), ("yak", 0.2), ("b", 0.9)]
    assert TagRules(keep_tokens=2, trigger_word="sks").apply(tags) == ["sks", "zebra", "b", "yak"]


def test_keep_tokens_head_comes_before_always_first() -> None:
    tags = [("zebra", 0.1), ("yak", 0.2), ("b", 0.9), ("solo", 0.3)]
    rules = TagRules(keep_tokens=1, always_first=("solo", "zebra"))
    assert rules.apply(tags) == ["zebra", "solo", "b", "yak"]


def test_separator_joins_and_splits() -> None:
    rules = TagRules(separator=" | ")
    assert rules.apply_text("red_hat | c, d") == "red hat | c | d"
    assert TagRules(separator=" ").apply_text("red_dress smile ^_^") == "red dress smile ^_^"
    assert TagRules(separator=" ").apply_text("red dress, smile") == "red dress smile"


def test_apply_text_keeps_lines_and_drops_empty_tags() -> None:
    rules = TagRules(trigger_word="sks", exclude=("photo",))
    assert rules.apply_text("a, , photo, b\n\nc,a") == "sks, a, b\nsks, c, a"
    assert TagRules().apply_text("") == ""


def test_apply_ranked_uses_model_names_and_shown_filter() -> None:
    ranked = [["rating:general", 0.95, "rating"], ["long_hair", 0.6, "general"],
              ["^_^", 0.7, "general"], ["hatsune_miku", 0.9, "character"]]  # fmt: skip
    shown = "hatsune miku, ^_^, long hair"
    rules = TagRules(underscores_to_spaces=False)
    assert rules.apply_ranked(ranked, shown) == "hatsune_miku, ^_^, long_hair"
    assert TagRules(sort="alpha").apply_ranked(ranked) == (
        "^_^, hatsune miku, long hair, rating:general"
    )


def test_split_tags_and_keys() -> None:
    assert split_tags(" a ,b,, c ") == ["a", "b", "c"]
    assert tag_key(" Red__Dress ") == "red dress"
    assert tag_key(">_<") == ">_<"


def test_rules_are_frozen_and_strict() -> None:
    rules = TagRules()
    with pytest.raises(ValidationError):
        rules.max_tags = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TagRules(max_tag=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TagRules(sort="random")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TagRules(keep_tokens=-1)
