"""The precision stage on the shared Flickr8k photos with the real models (skips without them).

The photos the issue found wrong are checked one by one, and a property test checks that a
caption, in every style, names only COCO objects the facts let through and states a place
only when the facts hold one (the trace ``captionkit facts --json`` shows).
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from captionkit.captioners.grounded.coco_words import mentioned_classes
from captionkit.captioners.grounded.phrasebook import PLACE_PHRASES
from captionkit.captioners.registry import create
from captionkit.eval.chair import caption_objects
from captionkit.types import CaptionRequest

from .conftest import PHOTOS

STYLES = ("short", "detailed", "alt-text", "social")
#: A handful of photos for the fast property test: people, dogs, water, snow, a rainbow.
SAMPLE = (
    "1002674143_1b742ab4b8.jpg", "1075881101_d55c46bece.jpg", "109823394_83fcb735e1.jpg",
    "112178718_87270d9b4d.jpg", "112243673_fd68255217.jpg", "109202801_c6381eef15.jpg",
    "1884065356_c6c34b4568.jpg", "1383840121_c092110917.jpg",
)  # fmt: skip


@pytest.fixture(scope="module")
def grounded():
    pytest.importorskip("onnxruntime", reason="needs the grounded extra")
    return create("grounded", threads=2)


def run(cap, load_photo, name: str, style: str = "short"):
    req = CaptionRequest(style=style)
    out = cap.caption_batch([cap.preprocess(Image.fromarray(load_photo(name)), req)], req)[0]
    return out.candidates[0].text, out.extra["facts"]


def test_painted_rainbow_is_not_a_kite(grounded, load_photo, photo_references):
    name = "1002674143_1b742ab4b8.jpg"  # "... sits in front of a painted rainbow ..."
    assert not any("kite" in r for r in photo_references[name])
    for style in STYLES:
        text, facts = run(grounded, load_photo, name, style)
        assert "kite" not in text.lower(), (style, text)
    assert any(r["label"] == "kite" for r in facts["rejected"])  # the trace says why


def test_bubbles_are_not_a_teddy_bear(grounded, load_photo):
    text, facts = run(grounded, load_photo, "1075881101_d55c46bece.jpg")  # "cleans the bubbles"
    assert "teddy" not in text.lower() and "teddy bear" not in facts["counts"]


def test_a_place_in_the_caption_is_traced_to_its_fact(grounded, load_photo):
    """The issue's man in sand with a snowboard: "playing in the water" with no fact saying
    water. The ground's colour alone no longer says water; here the classifier's "swimming
    trunks" (0.46, above the calibrated cue threshold) still does, and the trace shows it."""
    text, facts = run(grounded, load_photo, "112178718_87270d9b4d.jpg")  # "stands in the sand"
    assert facts["surface"] is None  # a white ground says nothing by itself
    if "water" in text:
        place = facts["place"]
        assert place["word"] == "water" and place["source"].startswith("cue:"), place
        assert place["confidence"] >= 0.25


def test_atvs_are_not_a_snowmobile(grounded, load_photo):
    text, _ = run(grounded, load_photo, "112243673_fd68255217.jpg")  # "People on ATVs ..."
    assert "snowmobile" not in text, text


def test_a_place_word_calibrated_as_unreliable_is_not_said(grounded, load_photo):
    """The scene classifier's "sports field" (0.49 here, a baseball batter) was wrong 8 times
    in 10 on the dev photos: v6 never says it; the game still comes from the classifier."""
    text, facts = run(grounded, load_photo, "1468103286_96a6e07029.jpg")
    assert facts["scene"]["places"][0][0] == "sports field"
    assert facts["place"] is None and "field" not in text, text
    assert "playing baseball" in text


def test_an_unnamed_surfboard_says_surfing_but_not_surfboard(grounded, load_photo):
    """A surfboard (0.97) is not named (right 1 time in 3 on the dev photos), but it still
    says what the person does, and the trace names the detection it comes from."""
    text, facts = run(grounded, load_photo, "181415975_2627aa6668.jpg")  # wakeboarding
    assert "surfboard" not in facts["counts"] and "surfboard" not in text
    assert "surfing" in text
    cue = next(c for c in facts["cues"] if c["value"] == "surfing")
    assert cue["labels"][0].startswith("unnamed surfboard")


def _check(text: str, facts: dict) -> None:
    named = set(facts["counts"])
    extra = [c for c in mentioned_classes(text) if c not in named]
    assert not extra, f"{text!r} names {extra}, facts hold {sorted(named)}"
    # ... and as the metric reads it ("unicycle" is a bicycle to CHAIR)
    chair_extra = [c for _, c in caption_objects(text) if c not in named]
    assert not chair_extra, f"{text!r} names {chair_extra} for CHAIR, facts hold {sorted(named)}"
    for obj in facts["objects"]:
        assert obj["evidence"], f"{obj['id']} has no evidence"
    if facts["place"] is None:
        said = [p for p in PLACE_PHRASES.values() if p in text]
        assert not said, f"{text!r} says {said} with no place fact"


@pytest.mark.parametrize("name", SAMPLE)
def test_every_object_word_is_in_the_facts(grounded, load_photo, name):
    for style in STYLES:
        _check(*run(grounded, load_photo, name, style))


@pytest.mark.slow
def test_every_object_word_is_in_the_facts_on_all_dev_photos(grounded, load_photo):
    names = sorted(json.loads((PHOTOS / "references.json").read_text()))
    for name in names:
        _check(*run(grounded, load_photo, name))


def test_facts_json_shows_the_trace(tmp_path):
    """``captionkit facts --json``: evidence per object, what was left out, the place."""
    from typer.testing import CliRunner

    from captionkit.cli.main import app

    path = PHOTOS / "images" / "1002674143_1b742ab4b8.jpg"
    if not path.is_file():
        pytest.skip(f"needs {path.resolve()} (the ../shared folder beside the repo)")
    pytest.importorskip("onnxruntime", reason="needs the grounded extra")
    result = CliRunner().invoke(app, ["facts", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["precision"] == "calibrated-2"
    assert all(o["evidence"] for o in facts["objects"])
    assert any(r["label"] == "kite" and r["reason"] for r in facts["rejected"])
    assert "place" in facts
    off = json.loads(
        CliRunner().invoke(app, ["facts", str(path), "--json", "--no-precision"]).output
    )
    assert off["precision"] is None and "kite" in off["counts"]
