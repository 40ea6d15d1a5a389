"""Grounded facts -> ranked tags: ``--style tags`` on the offline backend, no download.

The tags say only what the captions of the same facts may say: objects are the ones the
precision stage let through (``Facts.objects``), the place is the one the captions would
state (:func:`~captionkit.captioners.grounded.writers.place_word`: after the precision stage,
only its calibrated choice), indoors/outdoors only as sure as a caption must be to say it
unhedged (``OUTSIDE_SURE``), activity cues only those the policy accepted, text only spans
OCR read above its threshold. A tag cannot carry a hedge ("possibly a beach"), so anything
a caption would hedge is left out.

What comes out, best first, as ``(tag, score)``:

* each object class: ``dog`` / ``2 dogs`` ... ``4 dogs`` / ``many dogs`` (counts as the
  ``training`` style writes them, digits for tag lists), scored by its best detection;
* its colour when one object of a class was seen (``black dog``), the colour the captions
  use (``describe_colour``), and what a single person wears (``sunglasses``) or else the
  colour they wear (``person in red``); with nothing detected, the image's main colours;
* the place word (``beach``), the surface (``water``), ``indoors``/``outdoors``, the time of
  day and the lighting, and accepted activity cues (``skiing``);
* text read by OCR as ``text: "..."`` (commas dropped, so the tag list still splits).

Scores are the facts' own confidences; facts without one (time, lighting, colours) get
fixed priors below the objects', so a ``--max-tags`` cut drops them first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captionkit.captioners.grounded.coco_words import display_name, pluralise
from captionkit.captioners.grounded.writers import (
    OUTSIDE_SURE,
    describe_colour,
    place_word,
    wearing,
)
from captionkit.types import Candidate, CaptionOutput

if TYPE_CHECKING:
    from captionkit.captioners.grounded.facts import Facts

#: Priors for facts that carry no confidence of their own.
TIME_SCORE = 0.5
LIGHTING_SCORE = 0.45
SURFACE_SCORE = 0.5
IMAGE_COLOUR_SCORE = 0.4
#: At most this many OCR spans become tags.
MAX_TEXTS = 3
#: From this many objects of one class on, the count is "many" (the training style's rule).
MANY_FROM = 5


def count_tag(label: str, n: int) -> str:
    """``dog``, ``2 dogs``, ``many dogs``."""
    name = display_name(label)
    if n <= 1:
        return name
    return f"{n if n < MANY_FROM else 'many'} {pluralise(name)}"


def text_tag(text: str) -> str:
    """OCR text as one tag: ``text: "OPEN"`` (no commas or double quotes inside)."""
    clean = " ".join(text.replace(",", " ").replace('"', "'").split())
    return f'text: "{clean}"'


def facts_to_tags(facts: Facts) -> list[tuple[str, float]]:
    """The facts as ``(tag, score)`` pairs, best first, each tag once (see the module doc)."""
    found: dict[str, float] = {}

    def add(tag: str, score: float) -> None:
        tag = tag.strip()
        if tag and score > found.get(tag, -1.0):
            found[tag] = round(float(score), 3)

    for label, n in sorted(facts.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        objects = [o for o in facts.objects if o.label == label]
        if not objects:
            continue
        best = max(o.score for o in objects)
        add(count_tag(label, n), best)
        if n != 1:
            continue
        if label == "person":
            clothes = wearing(facts)
            colour = describe_colour(objects[0])
            if clothes:
                add(clothes.removeprefix("a ").removeprefix("an "), best)
            elif colour:
                add(f"person in {colour}", best)
        elif " of " not in display_name(label):  # "a white pair of skis" is no tag
            colour = describe_colour(objects[0])
            if colour:
                add(f"{colour} {display_name(label)}", best)
    if not facts.objects:
        for colour in facts.image_colours:
            add(colour, IMAGE_COLOUR_SCORE)

    scene = facts.scene
    place = place_word(facts)
    if place:
        confidence: float | None
        if facts.place is not None and facts.place.word == place:
            confidence = facts.place.confidence
        elif scene is not None and scene.place == place:
            confidence = scene.place_confidence if not scene.hedged else None
        else:
            confidence = SURFACE_SCORE
        if confidence is not None:  # a place a caption would hedge is no tag
            add(place, confidence)
    if facts.surface:
        add(facts.surface, SURFACE_SCORE)
    if scene is not None:
        if scene.indoor is not None and scene.indoor_confidence >= OUTSIDE_SURE:
            add("indoors" if scene.indoor else "outdoors", scene.indoor_confidence)
        if scene.time_of_day:
            add(scene.time_of_day, TIME_SCORE)
        if scene.lighting:
            light = scene.lighting if "light" in scene.lighting else f"{scene.lighting} light"
            add(light, LIGHTING_SCORE)
    if facts.precision is not None:  # without the policy, cues are unfiltered guesses
        for cue in facts.cues:
            add(cue.value, cue.mass)

    for span in facts.texts[:MAX_TEXTS]:
        add(text_tag(span.text), span.score)

    order = list(found)
    return sorted(found.items(), key=lambda kv: (-kv[1], order.index(kv[0])))


def tags_extra(tags: list[tuple[str, float]]) -> list[list[object]]:
    """``extra["tags"]`` rows in the tagger backend's shape: ``[tag, score, "grounded"]``."""
    return [[tag, score, "grounded"] for tag, score in tags]


def tags_output(facts: Facts) -> CaptionOutput:
    """The grounded backend's answer for ``--style tags``: the tags joined with ``", "`` (the
    run's tag rules re-join them), the ranked rows in ``extra["tags"]``, the facts as for
    every style."""
    tags = facts_to_tags(facts)
    return CaptionOutput(
        candidates=[Candidate(", ".join(tag for tag, _ in tags))],
        extra={"facts": facts.to_dict(), "writer": "tags", "tags": tags_extra(tags)},
    )
