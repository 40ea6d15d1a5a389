"""Re-ranking by agreement with the facts, and the shared COCO word list."""

from __future__ import annotations

from captionkit.captioners.grounded.coco_words import (
    COCO_CLASSES,
    SYNONYMS,
    display_name,
    mentioned_classes,
    pluralise,
)
from captionkit.captioners.grounded.facts import Facts, ObjectFact
from captionkit.captioners.grounded.rerank import hallucinated, rerank, score_text


def facts() -> Facts:
    return Facts(
        width=100,
        height=100,
        objects=[
            ObjectFact(id="dog_1", label="dog", score=0.9, box=(0, 0, 50, 50)),
            ObjectFact(id="frisbee_1", label="frisbee", score=0.6, box=(60, 0, 70, 10)),
        ],
        counts={"dog": 1, "frisbee": 1},
    )


def test_coco_list_is_complete_and_every_class_has_words():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert set(SYNONYMS) == set(COCO_CLASSES)


def test_mentioned_classes_prefers_longer_phrases_and_synonyms():
    assert mentioned_classes("A man eats a hot dog on a sofa.") == ["person", "hot dog", "couch"]
    assert mentioned_classes("Two puppies chase a ball") == ["dog", "sports ball"]
    assert mentioned_classes("An orange sunset") == []  # the colour is not the fruit


def test_plurals_and_display_names():
    assert pluralise("person") == "people"
    assert pluralise("bus") == "buses"
    assert pluralise("dining table") == "dining tables"
    assert pluralise("butterfly") == "butterflies"
    assert display_name("dining table") == "table" and display_name("dog") == "dog"


def test_hallucinated_objects_are_found():
    assert hallucinated("A dog catches a frisbee near a car.", facts()) == ["car"]
    assert hallucinated("A dog catches a frisbee.", facts()) == []


def test_rerank_puts_the_faithful_candidate_first():
    candidates = [
        "A cat sits on a car.",
        "A dog.",
        "A brown dog is catching a frisbee in the park.",
        "A brown dog is catching a frisbee in the park.",  # duplicates collapse
    ]
    ranked = rerank(candidates, facts())
    assert ranked[0].text == "A brown dog is catching a frisbee in the park."
    assert ranked[-1].text == "A cat sits on a car."
    assert len(ranked) == 3
    assert all(c.score is not None for c in ranked)
    assert ranked[0].score > ranked[1].score > ranked[2].score


def test_length_sanity():
    short = score_text("A dog.", facts())
    normal = score_text("A dog is playing outside.", facts())
    rambling = score_text("A dog " + "and more " * 40, facts())
    assert normal > short and normal > rambling
