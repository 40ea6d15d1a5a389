"""Dominant colours of an object (or of the whole image) and their everyday names.

Pixels are clustered in CIELAB, where straight-line distance roughly follows perceived
difference, and each cluster centre is named by the nearest palette entry, also in CIELAB.
Two palettes: a coarse one of words people actually write in captions ("red", "dark blue",
"light brown") by default, and the 147 CSS colour names (via ``webcolors``) for those who want
"midnightblue". The object's box is weighted towards its centre, because a detector's box
always includes some background at the edges (grass around a dog, sky around a kite).

Only numpy is used (no OpenCV): the sRGB->Lab formula and a weighted k-means on a few
thousand pixels are each a dozen lines, and numpy keeps this module cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Palette = Literal["coarse", "css"]

#: Words people write in captions, each with a representative sRGB value. Several entries
#: per word family (a light and a dark blue) keep naming stable under lighting changes.
COARSE_PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (20, 20, 20)),
    ("dark grey", (70, 70, 70)),
    ("grey", (128, 128, 128)),
    ("light grey", (190, 190, 190)),
    ("white", (245, 245, 245)),
    ("red", (200, 30, 30)),
    ("dark red", (120, 20, 25)),
    ("pink", (240, 150, 180)),
    ("orange", (240, 130, 20)),
    ("yellow", (240, 220, 40)),
    ("light brown", (190, 150, 100)),
    ("brown", (130, 85, 45)),
    ("dark brown", (75, 50, 30)),
    ("green", (40, 150, 50)),
    ("dark green", (25, 80, 30)),
    ("light green", (150, 210, 110)),
    ("blue", (30, 80, 200)),
    ("dark blue", (20, 30, 100)),
    ("light blue", (130, 180, 230)),
    ("purple", (120, 50, 150)),
)


@dataclass(frozen=True)
class ColourShare:
    """One dominant colour: its name, its mean sRGB value and the share of weighted pixels."""

    name: str
    rgb: tuple[int, int, int]
    fraction: float


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or 0-255 floats, shape (..., 3)) to CIELAB under D65."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375],
         [0.2126729, 0.7151522, 0.0721750],
         [0.0193339, 0.1191920, 0.9503041]]
    )  # fmt: skip
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab_l = 116 * f[..., 1] - 16
    lab_a = 500 * (f[..., 0] - f[..., 1])
    lab_b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lab_l, lab_a, lab_b], axis=-1)


@lru_cache(maxsize=2)
def _palette(palette: Palette) -> tuple[tuple[str, ...], np.ndarray]:
    if palette == "coarse":
        names = tuple(n for n, _ in COARSE_PALETTE)
        rgbs = np.array([c for _, c in COARSE_PALETTE], dtype=np.float64)
    elif palette == "css":
        from captionkit.errors import require

        webcolors = require("webcolors", "grounded", "CSS colour names")
        names = tuple(webcolors.names("css3"))
        rgbs = np.array([tuple(webcolors.name_to_rgb(n)) for n in names], dtype=np.float64)
    else:
        from captionkit.errors import ConfigError

        raise ConfigError(f"unknown palette '{palette}'; choose 'coarse' or 'css'")
    return names, srgb_to_lab(rgbs)


def name_colour(rgb: tuple[int, int, int] | np.ndarray, palette: Palette = "coarse") -> str:
    """The palette name nearest to one sRGB colour in CIELAB (CIE76 distance)."""
    names, labs = _palette(palette)
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(1, 3))
    return names[int(np.argmin(((labs - lab) ** 2).sum(axis=1)))]


def centre_weights(h: int, w: int, sigma: float = 0.35) -> np.ndarray:
    """A Gaussian mask over a box, 1 at the centre, ~0.2 at the edge midpoints.

    Down-weights the background a detector box always contains near its borders.
    """
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))


def _weighted_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, iters: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (k-means++ start, fixed seed so results are reproducible)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    p = w / w.sum()
    centres = [x[rng.choice(len(x), p=p)]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1) * w
        if d.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.array(centres)
    for _ in range(iters):
        assign = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        new = np.array(
            [
                np.average(x[assign == j], axis=0, weights=w[assign == j])
                if w[assign == j].sum() > 0
                else c[j]
                for j in range(len(c))
            ]
        )
        if np.allclose(new, c, atol=0.5):
            c = new
            break
        c = new
    assign = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    return c, assign


def _sample(region: np.ndarray, max_side: int = 48) -> np.ndarray:
    """Subsample large regions by striding: colour statistics need few thousand pixels."""
    h, w = region.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    return region[::step, ::step]


def dominant_colours(
    image: np.ndarray,
    box: tuple[float, float, float, float] | None = None,
    k: int = 3,
    palette: Palette = "coarse",
    centre_weighted: bool = True,
    min_fraction: float = 0.15,
) -> list[ColourShare]:
    """Dominant colours of ``image`` (RGB uint8 HxWx3) inside ``box``, largest share first.

    Clusters whose centres get the same palette name are merged, and shares below
    ``min_fraction`` are dropped, so a red square reads just ``[red]``.
    """
    arr = np.asarray(image)
    if box is not None:
        h, w = arr.shape[:2]
        x1, y1, x2, y2 = box
        x1, x2 = int(max(0, np.floor(x1))), int(min(w, np.ceil(x2)))
        y1, y2 = int(max(0, np.floor(y1))), int(min(h, np.ceil(y2)))
        arr = arr[y1:y2, x1:x2]
    if arr.size == 0:
        return []
    region = _sample(arr[..., :3])
    rh, rw = region.shape[:2]
    weights = centre_weights(rh, rw) if centre_weighted else np.ones((rh, rw))
    rgb = region.reshape(-1, 3).astype(np.float64)
    lab = srgb_to_lab(rgb)
    wflat = weights.reshape(-1)
    centres, assign = _weighted_kmeans(lab, wflat, k)
    total = wflat.sum()
    merged: dict[str, list[float]] = {}
    for j in range(len(centres)):
        mask = assign == j
        share = float(wflat[mask].sum() / total)
        if share == 0:
            continue
        mean_rgb = np.average(rgb[mask], axis=0, weights=wflat[mask])
        name = name_colour(mean_rgb, palette)
        acc = merged.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        acc[0] += share
        acc[1:] = [a + share * v for a, v in zip(acc[1:], mean_rgb, strict=True)]
    shares = [
        ColourShare(name, (round(acc[1] / s), round(acc[2] / s), round(acc[3] / s)), round(s, 3))
        for name, acc in merged.items()
        for s in [acc[0]]
    ]
    shares.sort(key=lambda c: -c.fraction)
    kept = [c for c in shares if c.fraction >= min_fraction]
    return kept or shares[:1]


def image_colours(image: np.ndarray, k: int = 3, palette: Palette = "coarse") -> list[str]:
    """The main colours of the whole image (the fallback when nothing is detected)."""
    shares = dominant_colours(image, None, k=k, palette=palette, centre_weighted=False,
                              min_fraction=0.1)  # fmt: skip
    return [c.name for c in shares]


def ground_colour(
    image: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    band: float = 0.3,
    min_free: float = 0.2,
    min_share: float = 0.45,
) -> str | None:
    """The colour of the ground: the lower ``band`` of the image with the boxes masked out.

    Returns None when the boxes hide most of the band or no colour dominates it, since then
    the cue says nothing reliable.
    """
    arr = np.asarray(image)[..., :3]
    h, w = arr.shape[:2]
    top = int(h * (1 - band))
    free = np.ones((h - top, w), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        ya, yb = max(0, int(y1) - top), max(0, int(np.ceil(y2)) - top)
        free[ya:yb, max(0, int(x1)) : int(np.ceil(x2))] = False
    step = max(1, int(np.ceil(max(h - top, w) / 64)))
    pixels = arr[top:][::step, ::step][free[::step, ::step]]
    if len(pixels) < min_free * free[::step, ::step].size or len(pixels) == 0:
        return None
    lab = srgb_to_lab(pixels.astype(np.float64))
    centres, assign = _weighted_kmeans(lab, np.ones(len(lab)), 3)
    counts = np.bincount(assign, minlength=len(centres)) / len(assign)
    best = int(np.argmax(counts))
    if counts[best] < min_share:
        return None
    return name_colour(pixels[assign == best].mean(axis=0))
