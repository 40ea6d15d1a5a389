"""Styles: one instruction and one set of finishing rules shared by every backend."""

from __future__ import annotations

import pytest

from captionkit.errors import ConfigError
from captionkit.styles import STYLES, decorate, finish, first_sentence, get_style, truncate_words

LONG = (
    "A dog, a cat and a bird sit on a very long bench in the park while the sun slowly sets "
    "behind the hills far away, casting long shadows"
)


def test_every_style_is_complete():
    assert set(STYLES) == {"short", "detailed", "alt-text", "social", "training", "tags"}
    for name, style in STYLES.items():
        assert style.name == name
        assert style.instruction.endswith(".") and len(style.instruction) > 40
        assert style.summary and "\n" not in style.summary
        assert style.florence_task.startswith("<") and style.florence_task.endswith(">")
    assert "125" in STYLES["alt-text"].instruction and STYLES["alt-text"].max_chars == 125


def test_unknown_style_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        get_style("poem")
    assert str(info.value) == (
        "unknown style 'poem'; choose one of: short, detailed, alt-text, social, training, tags"
    )
    with pytest.raises(ConfigError):
        finish("x", "poem")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Here's a short caption: A dog runs on the beach.", "A dog runs on the beach."),
        ("Sure, here is a caption: a dog runs.", "A dog runs."),
        ("Certainly! Here is the caption:\nA dog.", "A dog."),
        ("This image shows a dog running on grass.", "A dog running on grass."),
        ("The photo depicts two children playing.", "Two children playing."),
        ("The picture features: a red bus.", "A red bus."),
        ('"A cat sleeping on a sofa."', "A cat sleeping on a sofa."),
        ("'a cat sleeping'", "A cat sleeping"),
        ("  a   dog\u200bon\n grass  ", "A dog on grass"),
    ],
)
def test_finish_cleans_preambles_quotes_and_spacing(raw, expected):
    assert finish(raw, "short") == expected


def test_short_keeps_one_sentence_detailed_keeps_all():
    assert finish("A dog runs. It is happy! The sky is blue.", "short") == "A dog runs."
    assert finish("A man. Two dogs.", "detailed") == "A man. Two dogs."
    assert first_sentence("one sentence without a stop") == "one sentence without a stop"
    # A full stop followed by a lower-case word is not a sentence end.
    assert first_sentence("Shot at 5 p.m. in the park. Later.") == "Shot at 5 p.m. in the park."


def test_alt_text_drops_image_of_and_fits_125_at_a_word_boundary():
    assert finish("An image of a cat on a mat", "alt-text") == "A cat on a mat"
    assert finish("Photograph of two men", "alt-text") == "Two men"
    out = finish(LONG, "alt-text")
    assert len(out) <= 125
    assert LONG.startswith(out)
    assert LONG[len(out)] == " "  # cut at a word boundary...
    assert not out.endswith(",")  # ...without a dangling comma
    assert out.endswith("casting")


def test_alt_text_short_enough_is_untouched():
    text = "A man riding a bicycle past shops."
    assert finish(text, "alt-text") == text


def test_max_chars_per_style():
    words = "word " * 200
    for name, style in STYLES.items():
        out = finish(words, name)
        if style.max_chars:
            assert len(out) <= style.max_chars, name
        else:
            assert len(out) == len(words.strip())


def test_training_keeps_lower_case_tags():
    assert (
        finish("a dog, grass, sunny, 35mm photo", "training") == "a dog, grass, sunny, 35mm photo"
    )


def test_truncate_words():
    assert truncate_words("one two three", 100) == "one two three"
    assert truncate_words("one two three", 7) == "one two"
    assert truncate_words("one two three", 8) == "one two"
    assert truncate_words("one two, three", 9) == "one two"  # no dangling comma


def test_truncate_words_without_spaces_respects_the_limit():
    assert len(truncate_words("x" * 200, 125)) <= 125


def test_quoted_caption_after_a_preamble():
    assert finish('Here is a caption: "a dog runs on the beach."', "short") == (
        "A dog runs on the beach."
    )


def test_exclamation_preamble_without_colon():
    assert finish("Sure! A dog runs on the beach.", "short") == "A dog runs on the beach."


@pytest.mark.parametrize(
    "caption",
    ["The picture frame hangs on the wall.", "The image is blurry.", "The photo booth is red."],
)
def test_captions_starting_with_the_picture_are_not_cut(caption):
    assert finish(caption, "short") == caption


def test_decorate_trigger_prefix_suffix():
    assert decorate("a dog", trigger_word="ohwx") == "ohwx, a dog"
    assert decorate("a dog", prefix="photo: ", suffix=" --v5") == "photo: a dog --v5"
    assert decorate("a dog", "[", "]", "ohwx") == "[ohwx, a dog]"
    assert decorate("", trigger_word="ohwx") == "ohwx"
    assert decorate("a dog") == "a dog"


def test_decorate_does_not_double_the_trigger_word():
    assert decorate("ohwx, a dog", trigger_word="ohwx") == "ohwx, a dog"
    assert decorate(decorate("a dog", trigger_word="sks"), trigger_word="sks") == "sks, a dog"


def test_decorate_trigger_word_is_matched_as_a_word():
    assert decorate("dogs running", trigger_word="dog") == "dog, dogs running"


def test_social_hashtags_deduplicated_capped_and_last():
    from captionkit.styles import finish

    raw = "A skier #snow flies #Snow downhill. #snow #ski #winter #alps #mountains #fun #snow"
    assert finish(raw, "social") == "A skier flies downhill. #snow #ski #winter #alps #mountains"
    assert finish("No tags at all.", "social") == "No tags at all."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1girl, red_dress, Smiling", "1girl, red_dress, Smiling"),  # case and _ kept: rules' job
        ("Tags: cat, dog", "cat, dog"),
        ("Sure! Here are the tags: cat, dog.", "cat, dog"),
        ("- cat\n- dog\n- green grass", "cat, dog, green grass"),
        ("1. cat\n2) dog", "cat, dog"),
        ("cat,, dog ,  ", "cat, dog"),
        ("rating:general, cat", "rating:general, cat"),
    ],
)
def test_tags_style_keeps_a_comma_separated_list(raw, expected):
    assert finish(raw, "tags") == expected


def test_tags_style_asks_for_tags():
    style = get_style("tags")
    assert "comma-separated tags" in style.instruction and style.max_chars is None
