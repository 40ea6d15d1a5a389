"""Grounded facts -> tags: only what the captions may state, ranked, ready for the tag rules."""

from __future__ import annotations

import pytest

from captionkit.captioners.grounded.coco_words import mentioned_classes
from captionkit.captioners.grounded.facts import Facts, ObjectFact, SceneFact, TextFact
from captionkit.captioners.grounded.precision import CueFact, PlaceFact
from captionkit.captioners.grounded.tags import (
    count_tag,
    facts_to_tags,
    tags_extra,
    tags_output,
    text_tag,
)
from captionkit.tags import TagRules

from .conftest import PHOTOS


def obj(label: str, score: float, *colours: str, n: int = 1) -> ObjectFact:
    return ObjectFact(
        id=f"{label}_{n}", label=label, score=score, box=(0, 0, 10, 10), colours=list(colours)
    )


def facts(objects: list[ObjectFact], **kw) -> Facts:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o.label] = counts.get(o.label, 0) + 1
    return Facts(width=100, height=100, objects=objects, counts=counts, **kw)


def names(f: Facts) -> list[str]:
    return [t for t, _ in facts_to_tags(f)]


def test_objects_with_counts_and_colours_ranked_by_score() -> None:
    objects = [
        obj("dog", 0.7, "black", n=1), obj("dog", 0.5, "white", n=2),
        obj("car", 0.9, "dark blue"), obj("person", 0.8, "red"),
        *[obj("bird", 0.4, n=i) for i in range(1, 7)],
    ]  # fmt: skip
    tags = facts_to_tags(facts(objects))
    assert [t for t, _ in tags] == [
        "car", "blue car", "person", "person in red", "2 dogs", "many birds",
    ]  # fmt: skip
    assert dict(tags)["2 dogs"] == 0.7  # the class's best detection
    assert "black dog" not in dict(tags)  # two dogs: the first one's colour is no claim


def test_colours_only_where_the_captions_would_say_them() -> None:
    assert names(facts([obj("dog", 0.9, "green")])) == ["dog"]  # grass inside the box
    assert names(facts([obj("dog", 0.9, "brown")])) == ["dog", "brown dog"]
    assert names(facts([obj("person", 0.9, "tan")])) == ["person"]  # skin, not clothes
    assert names(facts([], image_colours=["green", "blue"])) == ["green", "blue"]


def test_what_a_single_person_wears() -> None:
    scene = SceneFact(labels=[("sunglasses", 0.5)])
    assert names(facts([obj("person", 0.9, "red")], scene=scene)) == ["person", "sunglasses"]


def test_counts_follow_the_training_style() -> None:
    assert count_tag("person", 1) == "person"
    assert count_tag("person", 2) == "2 people"
    assert count_tag("sports ball", 4) == "4 balls"
    assert count_tag("dog", 5) == "many dogs"


def test_indoors_outdoors_only_when_a_caption_says_it_unhedged() -> None:
    sure = SceneFact(indoor=False, indoor_confidence=0.9)
    unsure = SceneFact(indoor=True, indoor_confidence=0.7)
    assert names(facts([], scene=sure)) == ["outdoors"]
    assert names(facts([], scene=unsure)) == []


def test_place_after_the_precision_stage_is_the_policy_choice() -> None:
    scene = SceneFact(place="beach", place_confidence=0.8, places=[("beach", 0.8)])
    chosen = facts([], scene=scene, precision="calibrated-1",
                   place=PlaceFact(word="beach", source="scene", confidence=0.8))  # fmt: skip
    assert facts_to_tags(chosen) == [("beach", 0.8)]
    refused = facts([], scene=scene, precision="calibrated-1", place=None)
    assert names(refused) == []


def test_place_without_precision_skips_what_a_caption_would_hedge() -> None:
    sure = SceneFact(place="beach", place_confidence=0.8)
    hedged = SceneFact(place="beach", place_confidence=0.4)
    assert names(facts([], scene=sure)) == ["beach"]
    assert names(facts([], scene=hedged)) == []


def test_surface_time_lighting_and_cues() -> None:
    scene = SceneFact(time_of_day="daytime", lighting="bright")
    cue = CueFact(value="skiing", subject="person", labels=["ski"], mass=0.6)
    f = facts([obj("person", 0.9)], scene=scene, surface="water", precision="calibrated-1",
              cues=[cue])  # fmt: skip
    assert names(f) == ["person", "skiing", "water", "daytime", "bright light"]
    unfiltered = facts([obj("person", 0.9)], scene=scene, cues=[cue])
    assert "skiing" not in names(unfiltered)  # cues count only after the policy


def test_ocr_text_is_one_quoted_tag() -> None:
    f = facts([], texts=[TextFact(text='OPEN, "24h"', score=0.95)])
    assert names(f) == ["text: \"OPEN '24h'\""]
    assert text_tag("a,b") == 'text: "a b"'
    many = facts([], texts=[TextFact(text=f"T{i}", score=0.9) for i in range(5)])
    assert len(names(many)) == 3


def test_tags_survive_the_tag_rules_round_trip() -> None:
    f = facts([obj("dog", 0.9, "black")], texts=[TextFact(text="STOP, now", score=0.8)])
    tags = facts_to_tags(f)
    text = ", ".join(t for t, _ in tags)
    assert TagRules().apply_text(text) == text
    rules = TagRules(exclude=("text:*",), trigger_word="sks", max_tags=2)
    assert rules.join(rules.apply(tags)) == "sks, dog"
    assert tags_extra(tags)[0] == ["dog", 0.9, "grounded"]


def test_tags_output_is_the_backends_answer() -> None:
    f = facts([obj("dog", 0.9, "black")])
    out = tags_output(f)
    assert out.candidates[0].text == "dog, black dog"
    assert out.extra["tags"] == [["dog", 0.9, "grounded"], ["black dog", 0.9, "grounded"]]
    assert Facts.from_dict(out.extra["facts"]) == f


def test_no_colour_on_of_phrases() -> None:
    assert names(facts([obj("skis", 0.9, "white")])) == ["pair of skis", "snow"]  # skis: snow


@pytest.mark.shared
def test_dev_photos_tags_name_only_what_the_facts_let_through() -> None:
    if not (PHOTOS / "images").is_dir():
        pytest.skip(f"needs {PHOTOS} (the ../shared folder beside the repo)")
    pytest.importorskip("onnxruntime", reason="needs the grounded extra")
    from PIL import Image

    from captionkit.captioners.registry import create
    from captionkit.types import CaptionRequest

    photos = sorted((PHOTOS / "images").glob("*.jpg"))[:6]
    cap = create("grounded", threads=2)
    req = CaptionRequest(style="short")
    with_tags = 0
    for path in photos:
        with Image.open(path) as im:
            out = cap.caption_batch([cap.preprocess(im.convert("RGB"), req)], req)[0]
        f = Facts.from_dict(out.extra["facts"])
        tags = facts_to_tags(f)
        with_tags += bool(tags)
        scores = [s for _, s in tags]
        assert scores == sorted(scores, reverse=True), path.name
        named = set().union(*(mentioned_classes(t) for t, _ in tags)) if tags else set()
        assert named <= set(f.counts), (path.name, tags, f.counts)
        refused = {r.label for r in f.rejected} - set(f.counts)
        assert not named & refused, (path.name, tags)
        if f.place is None:
            assert not any(t == (f.scene.place if f.scene else None) for t, _ in tags)
    assert with_tags == len(photos)


@pytest.mark.shared
def test_grounded_style_tags_end_to_end_on_a_dev_photo() -> None:
    """``--style tags`` on the grounded backend: the facts as tags, not a writer's sentence.

    Fails until grounded/pipeline.py dispatches the style to ``tags_output`` (without it the
    template writer has no ``tags`` entry and raises KeyError)."""
    photo = PHOTOS / "images" / "101669240_b2d3e7f17b.jpg"
    if not photo.is_file():
        pytest.skip(f"needs {photo} (the ../shared folder beside the repo)")
    pytest.importorskip("onnxruntime", reason="needs the grounded extra")
    from PIL import Image

    from captionkit.captioners.registry import create
    from captionkit.types import CaptionRequest

    cap = create("grounded", threads=2)
    req = CaptionRequest(style="tags")
    with Image.open(photo) as im:
        out = cap.caption_batch([cap.preprocess(im.convert("RGB"), req)], req)[0]
    rows = out.extra["tags"]
    assert out.candidates[0].text == ", ".join(r[0] for r in rows)
    assert "2 people" in out.candidates[0].text  # two skiers in the snow
