"""Colour naming on synthetic images whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from captionkit.captioners.grounded.colours import (
    centre_weights,
    dominant_colours,
    ground_colour,
    image_colours,
    name_colour,
    srgb_to_lab,
)


def canvas(h: int = 200, w: int = 300, colour=(235, 235, 235)) -> np.ndarray:
    return np.full((h, w, 3), colour, dtype=np.uint8)


def red_square_blue_circle() -> np.ndarray:
    img = canvas()
    img[50:150, 20:120] = (220, 20, 20)
    yy, xx = np.mgrid[:200, :300]
    img[(yy - 100) ** 2 + (xx - 220) ** 2 < 50**2] = (20, 40, 210)
    return img


def test_red_square_reads_red_and_blue_circle_reads_blue():
    img = red_square_blue_circle()
    assert [c.name for c in dominant_colours(img, (20, 50, 120, 150))] == ["red"]
    circle = dominant_colours(img, (170, 50, 270, 150))
    assert circle[0].name == "blue"
    assert circle[0].fraction > 0.8  # the white corners are down-weighted


def test_centre_weighting_ignores_background_at_the_box_edges():
    img = canvas(colour=(40, 150, 50))  # grass
    img[70:130, 110:190] = (20, 20, 20)  # a black object, box drawn loosely around it
    loose = (90, 50, 210, 150)
    assert dominant_colours(img, loose)[0].name == "black"
    flat = dominant_colours(img, loose, centre_weighted=False)
    assert {c.name for c in flat} >= {"black", "green"}


def test_css_palette_gives_css_names():
    img = red_square_blue_circle()
    assert dominant_colours(img, (20, 50, 120, 150), palette="css")[0].name in {
        "crimson",
        "red",
        "firebrick",
    }
    assert name_colour((0, 0, 128), "css") == "navy"


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((0, 0, 0), "black"),
        ((255, 255, 255), "white"),
        ((128, 128, 128), "grey"),
        ((255, 0, 0), "red"),
        ((0, 128, 0), "green"),
        ((255, 165, 0), "orange"),
        ((139, 69, 19), "brown"),
        ((135, 206, 235), "light blue"),
        ((0, 0, 90), "dark blue"),
    ],
)
def test_coarse_names(rgb, name):
    assert name_colour(rgb) == name


def test_lab_of_white_and_black():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0]]))
    assert lab[0] == pytest.approx([100, 0, 0], abs=0.05)
    assert lab[1] == pytest.approx([0, 0, 0], abs=0.05)


def test_image_fallback_finds_the_three_main_colours():
    img = canvas(90, 90, (220, 20, 20))
    img[:, 30:60] = (40, 150, 50)
    img[:, 60:] = (20, 40, 210)
    assert sorted(image_colours(img)) == ["blue", "green", "red"]


def test_ground_colour_masks_boxes_and_reads_the_lower_band():
    img = canvas(100, 100, (130, 180, 230))  # sky
    img[70:] = (245, 245, 245)  # snow
    img[50:100, 40:60] = (20, 20, 20)  # a person standing in it
    assert ground_colour(img, [(40, 50, 60, 100)]) == "white"
    assert ground_colour(img, [(0, 0, 100, 100)]) is None  # all hidden: no evidence


def test_empty_box_and_weights_shape():
    assert dominant_colours(canvas(), (10, 10, 10, 10)) == []
    w = centre_weights(5, 7)
    assert w.shape == (5, 7) and w[2, 3] == pytest.approx(w.max())
