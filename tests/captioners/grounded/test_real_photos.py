"""Colours and relations on real photos: the SSD detector's boxes on shared Flickr8k images,
checked against what their human captions say (a black dog, two horses side by side)."""

from __future__ import annotations

import pytest

from captionkit.captioners.grounded.colours import dominant_colours
from captionkit.captioners.grounded.relations import salient_relations


def _dogs(ssd_detector, photo):
    return [d for d in ssd_detector.detect_batch([photo])[0] if d.label == "dog"]


@pytest.mark.parametrize(
    ("name", "colour"),
    [
        ("1884065356_c6c34b4568.jpg", "black"),  # "A black dog runs through the water ..."
        ("1383840121_c092110917.jpg", "brown"),  # "A brown dog laying on a blue cover ."
        ("1745110280_0cbff5e273.jpg", "brown"),  # "A brown dog with a black collar ..."
    ],
)
def test_dog_colour_matches_the_captions(ssd_detector, load_photo, photo_references, name, colour):
    assert any(colour in c.lower() for c in photo_references[name])
    photo = load_photo(name)
    dogs = _dogs(ssd_detector, photo)
    assert dogs, "the detector must find the dog"
    names = [c.name for c in dominant_colours(photo, dogs[0].box)]
    assert names[0] == colour, names


def test_two_horses_side_by_side(ssd_detector, load_photo, photo_references):
    name = "109202801_c6381eef15.jpg"  # "Two draft horses pull a cart through the snow ."
    assert any("two" in c.lower() and "horses" in c.lower() for c in photo_references[name])
    detections = ssd_detector.detect_batch([load_photo(name)])[0]
    objects = [(f"{d.label}_{i}", d.label, d.box) for i, d in enumerate(detections)]
    horses = {o[0] for o in objects if o[1] == "horse"}
    assert len(horses) == 2
    between = [r for r in salient_relations(objects) if {r.subject, r.object} == horses]
    assert between and between[0].predicate in ("left of", "right of", "next to")
