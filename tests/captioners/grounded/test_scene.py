"""Scene: the ImageNet place table, image statistics, and the real classifier on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from captionkit.captioners.grounded.scene import (
    ImageStats,
    SceneGuess,
    image_stats,
    time_and_lighting,
)
from captionkit.captioners.grounded.scene_labels import SCENE_INDEX
from captionkit.captioners.grounded.weights import pibo_model_path

# Picked from references.json: every reference caption names the setting.
OUTDOOR = {
    "1332823164_c70a5d930e.jpg": "beach",  # "A girl standing in the ocean"
    "2053733930_e245615ad4.jpg": "snow",  # "Mountain climbing gear on a mountain" (snowfield)
    "1428578577_82864facae.jpg": "mountain",  # "Two hikers ... rest on a snow covered peak"
    "1449370354_380c4123c9.jpg": None,  # "Kids running across the grass"
    "2090997177_76d482b158.jpg": None,  # "A black dog bounds across the sand"
}
BATHTUB = "1579798212_d30844b4c5.jpg"  # "a child is laying in a bubble bath ..."


def test_every_table_entry_is_an_imagenet_label():
    names = pibo_model_path("efficientnet_labels.txt").read_text().splitlines()
    first = {n.split(",")[0].strip() for n in names}
    assert len(names) == 1000
    assert sorted(set(SCENE_INDEX) - first) == []


def test_image_stats_see_sky_vegetation_and_darkness():
    scene = np.zeros((90, 120, 3), np.uint8)
    scene[:30] = (110, 160, 235)  # blue sky across the top third
    scene[30:] = (60, 140, 50)  # grass
    stats = image_stats(scene)
    assert stats.sky_fraction > 0.9 and stats.vegetation_fraction > 0.6
    assert stats.dark_fraction == 0.0
    dark = image_stats(np.full((50, 50, 3), 12, np.uint8))
    assert dark.luminance < 0.06 and dark.dark_fraction == 1.0 and dark.sky_fraction == 0.0


def _stats(**kw: float) -> ImageStats:
    base = dict(luminance=0.45, dark_fraction=0.1, sky_fraction=0.0, vegetation_fraction=0.0,
                top_warmth=0.0, top_luminance=0.45)  # fmt: skip
    return ImageStats(**{**base, **kw})


def test_time_and_lighting_rules():
    assert time_and_lighting(_stats(), None) == (None, None)  # nothing distinctive: silence
    night = _stats(luminance=0.05, dark_fraction=0.95, top_luminance=0.03)
    assert time_and_lighting(night, None) == ("night", "dim")
    assert time_and_lighting(night, True) == (None, "dim")  # a dark room is not night
    day = _stats(sky_fraction=0.5, top_luminance=0.7, luminance=0.6)
    assert time_and_lighting(day, False) == ("daytime", "bright")
    assert time_and_lighting(day, None) == (None, None)  # daytime only when outdoors
    sunset = _stats(top_warmth=0.4, top_luminance=0.6)
    assert time_and_lighting(sunset, False) == ("dusk", "golden")
    assert time_and_lighting(sunset, True) == (None, None)  # an orange wall indoors
    silhouette = _stats(dark_fraction=0.55, sky_fraction=0.7, top_luminance=0.8)
    assert time_and_lighting(silhouette, None)[1] == "backlit"


def test_outdoor_photos_are_called_outdoor(scene_classifier, load_photo, photo_references):
    names = list(OUTDOOR)
    guesses = scene_classifier.classify_batch([load_photo(n) for n in names])
    for name, guess in zip(names, guesses, strict=True):
        refs = " ".join(photo_references[name])
        assert isinstance(guess, SceneGuess)
        assert guess.indoor is False, (name, refs, guess)
        assert guess.indoor_confidence >= 0.6, (name, guess)
        place = OUTDOOR[name]
        if place is not None:
            assert guess.places and guess.places[0][0] == place, (name, guess.places)
            assert guess.places[0][1] >= 0.3
        assert 1 <= len(guess.labels) <= 5 and all(0 < s <= 1 for _, s in guess.labels)
    snowy = guesses[names.index("2053733930_e245615ad4.jpg")]
    assert snowy.time_of_day == "daytime" and snowy.lighting == "bright"


def test_bathtub_photo_is_indoors_in_a_bathroom(scene_classifier, load_photo):
    guess = scene_classifier.classify_batch([load_photo(BATHTUB)])[0]
    assert guess.indoor is True and guess.indoor_confidence >= 0.6
    assert guess.places[0][0] == "bathroom"
    assert guess.time_of_day is None  # time of day is not claimed indoors


def test_dark_synthetic_image_is_night_and_dim(scene_classifier):
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 25, size=(240, 320, 3), dtype=np.uint8)
    guess = scene_classifier.classify_batch([dark])[0]
    assert guess.lighting == "dim"
    assert guess.indoor is not True and guess.time_of_day == "night"


def test_batch_matches_single_and_empty(scene_classifier, load_photo):
    image = load_photo(BATHTUB)
    grey = image.mean(axis=2).astype(np.uint8)
    one, two = scene_classifier.classify_batch([image, grey])
    assert one == scene_classifier.classify_batch([image])[0]
    assert isinstance(two, SceneGuess)
    assert scene_classifier.classify_batch([]) == []
    probs = scene_classifier.probabilities([image])
    assert probs.shape == (1, 1000) and probs.sum() == pytest.approx(1.0, abs=1e-3)
