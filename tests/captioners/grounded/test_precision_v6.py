"""v6 of the precision stage (issue #18, closing the CIDEr-D gap without new hallucinations).

Each rule gets a synthetic case: place words held to their own calibrated thresholds (a
top guess and a runner-up), classifier place cues likewise, activities that unnamed
detections support without naming them, the CHAIR view of "unicycle", and the fits that
produce those thresholds. Captions are checked in every style the precision rules cover.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from captionkit.captioners.grounded.calibration import (
    ImageRecord,
    Levers,
    fit_policy,
    hedged_samples,
)
from captionkit.captioners.grounded.coco_words import mentioned_classes
from captionkit.captioners.grounded.detectors import Detection
from captionkit.captioners.grounded.facts import Facts, build_facts
from captionkit.captioners.grounded.precision import (
    DEFAULT_POLICY,
    NEVER,
    Policy,
    Rejected,
    hedged_activity_cues,
)
from captionkit.captioners.grounded.writers import TemplateWriter
from captionkit.eval.chair import caption_objects

POLICY = Policy(
    name="test", name_min={"person": 0.5}, default_name_min=NEVER, confirm_mass=0.1,
    confirm_min=0.4, veto_mass=0.3, count_min=0.3, place_min=0.5, cue_min=0.3,
    activity_min=0.4, surfaces=(), place_word_min={"water": 0.02, "sports field": NEVER},
    cue_word_min={"water": 0.05, "field": NEVER}, hedged_activity_min=0.6,
)  # fmt: skip
STYLES = ("short", "detailed", "alt-text", "social")


def image() -> np.ndarray:
    img = np.full((200, 300, 3), 128, dtype=np.uint8)
    img[150:] = (200, 200, 200)
    return img


def scene(places=(), labels=(), objects=()):
    return SimpleNamespace(
        indoor=False, indoor_confidence=0.5, places=list(places), labels=list(labels),
        time_of_day=None, lighting=None, objects=list(objects),
    )  # fmt: skip


def person(score=0.9):
    return Detection("person", score, (100.0, 40.0, 160.0, 190.0))


def chair(score):
    return Detection("chair", score, (90.0, 100.0, 170.0, 195.0))


def captions(facts: Facts) -> dict[str, str]:
    writer = TemplateWriter()
    return {style: writer.write(facts, style)[0] for style in STYLES}


# -- per-word place thresholds --------------------------------------------------------------
def test_a_reliable_place_word_is_said_below_the_pooled_threshold():
    """The scene classifier's "water" was right as a 0.02 top guess: its own threshold
    applies, not the pooled 0.5, and the trace keeps the confidence it was said at."""
    facts = build_facts(image(), [person()], scene(places=[("water", 0.05)]), policy=POLICY)
    assert (facts.place.word, facts.place.source, facts.place.confidence) == (
        "water",
        "scene",
        0.05,
    )
    assert "in the water" in captions(facts)["short"]


def test_an_unreliable_place_word_is_never_said():
    """ "sports field" was wrong at any confidence: even a 0.9 guess says no place."""
    facts = build_facts(image(), [person()], scene(places=[("sports field", 0.9)]), policy=POLICY)
    assert facts.place is None and facts.scene.place is None
    for style, text in captions(facts).items():
        assert "field" not in text, (style, text)


def test_an_uncalibrated_place_word_keeps_the_pooled_threshold():
    weak = build_facts(image(), [person()], scene(places=[("beach", 0.3)]), policy=POLICY)
    assert weak.place is None
    sure = build_facts(image(), [person()], scene(places=[("beach", 0.6)]), policy=POLICY)
    assert sure.place is not None and sure.place.word == "beach"


def test_a_runner_up_place_needs_its_own_calibration():
    """Below a vetoed top guess, a runner-up is said only if calibrated on its own: the
    pooled threshold was fitted on top guesses."""
    calibrated = scene(places=[("sports field", 0.6), ("water", 0.03)])
    facts = build_facts(image(), [person()], calibrated, policy=POLICY)
    assert facts.place is not None and facts.place.word == "water"
    pooled = scene(places=[("sports field", 0.6), ("beach", 0.39)])
    facts = build_facts(image(), [person()], pooled, policy=POLICY.model_copy(
        update={"place_min": 0.3}))  # fmt: skip
    assert facts.place is None


def test_place_cues_have_per_word_thresholds_too():
    """ "swimming trunks" at 0.1 is below the pooled cue threshold (0.3) but above the
    calibrated one for water; a football says "field", calibrated as never right."""
    trunks = build_facts(image(), [person()], scene(labels=[("swimming trunks", 0.1)]),
                         policy=POLICY)  # fmt: skip
    assert trunks.place is not None and trunks.place.word == "water"
    assert trunks.place.source == "cue:swimming trunks"
    ball = build_facts(image(), [person()], scene(labels=[("soccer ball", 0.9)]), policy=POLICY)
    assert ball.place is None
    assert all("field" not in t for t in captions(ball).values())


# -- activities of unnamed objects ------------------------------------------------------------
def test_an_unnamed_chair_says_sitting_but_never_chair():
    facts = build_facts(image(), [person(), chair(0.7)], scene(), policy=POLICY)
    assert "chair" not in facts.counts
    assert any(r.label == "chair" for r in facts.rejected)
    cue = next(c for c in facts.cues if c.value == "sitting")
    assert cue.subject == "person" and cue.labels == ["unnamed chair 0.70"] and cue.mass == 0.7
    for style, text in captions(facts).items():
        assert "chair" not in text.lower(), (style, text)
        assert set(mentioned_classes(text)) <= {"person"}, (style, text)
    assert captions(facts)["short"] == "A person is sitting."


def test_a_weak_unnamed_object_supports_nothing():
    facts = build_facts(image(), [person(), chair(0.5)], scene(), policy=POLICY)
    assert not [c for c in facts.cues if c.value == "sitting"]
    assert "sitting" not in captions(facts)["short"]


def test_a_vetoed_detection_supports_no_activity():
    vetoed = Rejected(label="bicycle", score=0.9, reason="vetoed: classifier sees motorcycle")
    below = Rejected(label="bicycle", score=0.9, reason="below the 0.95 calibrated for bicycle")
    assert hedged_activity_cues([vetoed], ["person"], POLICY) == []
    assert [c.value for c in hedged_activity_cues([below], ["person"], POLICY)] == ["cycling"]


def test_an_unnamed_object_speaks_only_for_a_named_subject():
    """A frisbee makes a dog jump, not a person; no named dog: nothing."""
    rej = [Rejected(label="frisbee", score=0.8, reason="below")]
    assert hedged_activity_cues(rej, ["person"], POLICY) == []
    assert [c.value for c in hedged_activity_cues(rej, ["dog"], POLICY)] == ["jumping"]


def test_the_shipped_policy_sets_every_new_threshold():
    assert DEFAULT_POLICY.place_word_min["water"] < DEFAULT_POLICY.place_min
    assert DEFAULT_POLICY.place_word_min["sports field"] == NEVER
    assert DEFAULT_POLICY.cue_word_min["field"] == NEVER
    assert DEFAULT_POLICY.hedged_activity_min < NEVER


# -- the CHAIR view of an activity -------------------------------------------------------------
def test_a_unicycle_is_a_bicycle_word():
    """CHAIR counts "unicycle" as a bicycle, so the writer must too: "riding a unicycle"
    from the classifier's cue is said only when a bicycle is named."""
    assert mentioned_classes("Two people are riding a unicycle.") == ["person", "bicycle"]
    facts = build_facts(image(), [person(), person(0.8)], scene(labels=[("unicycle", 0.9)]),
                        policy=POLICY)  # fmt: skip
    for style, text in captions(facts).items():
        assert "unicycle" not in text, (style, text)
        assert {c for _, c in caption_objects(text)} <= set(facts.counts), (style, text)


# -- the fits -------------------------------------------------------------------------------
def record(places, refs, detections=(("person", 0.9, 0.0),), cues=()):
    return ImageRecord(
        detections=list(detections), truth={"person"}, references=list(refs),
        scene_place=places[0] if places else None, scene_places=list(places),
        place_cues=list(cues),
    )  # fmt: skip


def test_fit_policy_learns_a_threshold_per_place_word():
    wet = ["A boy swims in the lake ."]
    dry = ["A man stands on a sidewalk ."]
    records = (
        [record([("water", 0.03)], wet) for _ in range(4)]
        + [record([("sports field", 0.8)], dry) for _ in range(4)]
        + [record([("beach", 0.9)], ["A girl on the beach ."])]
        + [record([], wet, cues=[("water", 0.1)]) for _ in range(3)]
    )  # fmt: skip
    policy = fit_policy(records, place_target=0.7)
    assert policy.place_word_min["water"] == 0.03
    assert policy.place_word_min["sports field"] == NEVER
    assert "beach" not in policy.place_word_min  # seen once: the pooled threshold
    assert policy.cue_word_min["water"] == 0.1
    off = fit_policy(records, place_target=0.7, levers=Levers(place_words=False))
    assert off.place_word_min == {} and off.cue_word_min == {}


def test_fit_policy_learns_when_an_unnamed_object_is_worth_a_posture():
    sits = ["A woman sits on a chair ."]
    stands = ["A man stands ."]
    records = [
        record([], sits, detections=[("person", 0.9, 0.0), ("chair", 0.8, 0.0)]) for _ in range(4)
    ] + [record([], stands, detections=[("person", 0.9, 0.0), ("chair", 0.4, 0.0)])
         for _ in range(4)]  # fmt: skip
    samples = hedged_samples(records, floor=0.3)
    assert sorted(samples) == [(0.4, False)] * 4 + [(0.8, True)] * 4
    policy = fit_policy(records, activity_target=0.6)
    assert policy.hedged_activity_min == 0.8
    off = fit_policy(records, levers=Levers(hedged_activities=False))
    assert off.hedged_activity_min == NEVER


def test_a_threshold_lets_every_tied_sample_through():
    """Four right at 0.8, six wrong at exactly 0.4: a 0.4 threshold lets all six through
    (precision 5/12 smoothed), so it must not be chosen from the first of them alone."""
    from captionkit.captioners.grounded.calibration import threshold_for

    samples = [(0.8, True)] * 4 + [(0.4, False)] * 6
    assert threshold_for(samples, 0.6) == 0.8
