"""CHAIR on synthetic captions; caption statistics; the paired bootstrap."""

from __future__ import annotations

import pytest

from captionkit.eval.bootstrap import bootstrap
from captionkit.eval.chair import caption_objects, chair, singularize
from captionkit.eval.coco_objects import COCO_SYNONYMS, word_to_category
from captionkit.eval.stats import caption_stats


def test_synonym_table_has_the_80_categories() -> None:
    assert len(COCO_SYNONYMS) == 80
    table = word_to_category()
    assert table["puppy"] == "dog" and table["sofa"] == "couch" and table["iphone"] == "cell phone"


@pytest.mark.parametrize(
    ("word", "singular"),
    [("dogs", "dog"), ("puppies", "puppy"), ("buses", "bus"), ("knives", "knife"),
     ("men", "man"), ("glasses", "glass"), ("benches", "bench"), ("skis", "skis"),
     ("grass", "grass"), ("bus", "bus")],
)  # fmt: skip
def test_singularize(word: str, singular: str) -> None:
    assert singularize(word) == singular


def test_caption_objects_rules() -> None:
    found = caption_objects("Two men ride motor bikes past a fire hydrant and a baby bird.")
    assert found == [("man", "person"), ("motor bike", "motorcycle"),
                     ("fire hydrant", "fire hydrant"), ("bird", "bird")]  # fmt: skip
    # "toilet seat" is a toilet, not a chair; "hot dogs" are food, not dogs
    assert [c for _, c in caption_objects("a toilet seat next to hot dogs")] == [
        "toilet",
        "hot dog",
    ]


def test_chair_against_references_and_detections() -> None:
    refs = {"i1": ["A man walks a dog on a beach."], "i2": ["A cat on a sofa."]}
    cands = {
        "i1": "A man and his dog with a frisbee and a car.",
        "i2": "A kitten sleeps on a couch.",
    }
    result = chair(cands, refs)
    assert result.per_image["i1"]["hallucinated"] == ["frisbee", "car"]
    assert result.per_image["i2"]["hallucinated"] == []
    assert result.chair_s == 0.5
    assert result.chair_i == pytest.approx(2 / 6)  # man, dog, frisbee, car, cat, couch
    assert dict(result.most_hallucinated) == {"frisbee": 1, "car": 1}
    with_dets = chair(cands, refs, {"i1": ["frisbee"]})
    assert with_dets.per_image["i1"]["hallucinated"] == ["car"]
    assert with_dets.ground_truth == "references+detections"
    with pytest.raises(ValueError):
        chair(cands)


def test_caption_stats() -> None:
    caps = ["A dog runs.", "A dog runs.", "A cat sleeps on a mat."]
    stats = caption_stats(caps, {"x": ["a cat sleeps on a mat"]})
    assert stats.lengths == [3, 3, 6] and stats.vocabulary == 7
    assert stats.mean_length == 4.0 and stats.median_length == 3.0
    assert stats.distinct[1] == pytest.approx(7 / 12)
    assert stats.novel == pytest.approx(2 / 3)
    assert stats.as_dict()["distinct-2"] == pytest.approx(7 / 9)


def test_paired_bootstrap_separates_real_differences() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    keys = [f"k{i}" for i in range(200)]
    base = rng.normal(1.0, 0.3, size=200)
    per = {
        "good": {k: float(b + 0.3) for k, b in zip(keys, base, strict=True)},
        "bad": {k: float(b) for k, b in zip(keys, base, strict=True)},
        "same": {k: float(b + rng.normal(0, 0.01)) for k, b in zip(keys, base, strict=True)},
    }
    intervals, diffs = bootstrap(per, samples=500, seed=0)
    assert intervals["good"].low < intervals["good"].mean < intervals["good"].high
    by_pair = {(d.a, d.b): d for d in diffs}
    assert by_pair[("good", "bad")].significant and by_pair[("good", "bad")].p_not_better == 0
    assert not by_pair[("bad", "same")].significant
