"""Relations from box geometry, on layouts whose answer is unambiguous."""

from __future__ import annotations

from captionkit.captioners.grounded.relations import (
    Relation,
    salient_relations,
    spatial_relation,
)

SQUARE = (20.0, 50.0, 120.0, 150.0)  # the red square of test_colours
CIRCLE = (170.0, 50.0, 270.0, 150.0)  # the blue circle beside it


def test_square_left_of_circle_and_back():
    assert spatial_relation(SQUARE, CIRCLE) == ("left of", 1.0)
    assert spatial_relation(CIRCLE, SQUARE)[0] == "right of"


def test_above_and_below():
    top, bottom = (100.0, 0.0, 200.0, 80.0), (100.0, 200.0, 200.0, 280.0)
    assert spatial_relation(top, bottom)[0] == "above"
    assert spatial_relation(bottom, top)[0] == "below"


def test_rider_on_top_of_horse():
    horse = (100.0, 150.0, 400.0, 400.0)
    rider = (200.0, 40.0, 300.0, 220.0)  # bottom lands in the horse's upper part
    predicate, confidence = spatial_relation(rider, horse)
    assert predicate == "on top of" and confidence >= 0.5


def test_in_front_of_uses_the_lower_bottom_edge():
    car = (100.0, 100.0, 400.0, 250.0)
    person = (150.0, 80.0, 250.0, 330.0)  # overlaps the car and stands nearer the camera
    assert spatial_relation(person, car)[0] == "in front of"


def test_next_to_when_touching_side_by_side():
    a, b = (0.0, 100.0, 100.0, 200.0), (105.0, 110.0, 205.0, 210.0)
    assert spatial_relation(a, b)[0] == "next to"


def test_diagonal_layout_is_not_confident():
    a, b = (0.0, 0.0, 100.0, 100.0), (110.0, 110.0, 210.0, 210.0)
    assert salient_relations([("a_1", "a", a), ("b_1", "b", b)]) == []


def test_salient_relations_people_first_and_capped():
    objects = [
        ("cup_1", "cup", (500.0, 100.0, 520.0, 120.0)),
        ("dog_1", "dog", (0.0, 100.0, 100.0, 200.0)),
        ("person_1", "person", (300.0, 0.0, 400.0, 200.0)),
        ("car_1", "car", (700.0, 50.0, 900.0, 200.0)),
        ("bench_1", "bench", (1000.0, 100.0, 1200.0, 200.0)),
    ]
    rels = salient_relations(objects, max_relations=2)
    assert len(rels) == 2
    assert rels[0].subject == "person_1"
    assert all(isinstance(r, Relation) and r.confidence >= 0.5 for r in rels)
    assert Relation.from_dict(rels[0].to_dict()) == rels[0]
    assert rels[0].text().startswith("person_1 is ")


def test_degenerate_boxes_give_nothing():
    assert spatial_relation((0.0, 0.0, 0.0, 10.0), CIRCLE) is None
