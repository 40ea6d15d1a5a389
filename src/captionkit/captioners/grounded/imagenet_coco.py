"""Which ImageNet-1k classes are COCO objects or kinds of them: the classifier's second opinion.

The scene classifier already runs on every photo; many of its 1000 classes are COCO
categories or their kinds (118 dog breeds are dogs, "ice bear" is a bear, "ski" is skis). Its
probability mass per COCO category lets the pipeline confirm a detection both models agree
on and veto one the classifier contradicts (see :mod:`precision`). Classes are given by index
ranges (breeds, birds) or first synonym, so a reader can check them against the label file.
ImageNet's "kite" (index 21) is a bird of prey, not the toy: it counts as a bird here.
"""

from __future__ import annotations

from functools import lru_cache

#: COCO category -> ImageNet index ranges (0-based, end exclusive).
RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "dog": ((151, 269),),
    "cat": ((281, 286),),
    "bird": ((7, 25), (80, 101), (127, 147)),
    "bear": ((294, 298),),
}

#: COCO category -> ImageNet first synonyms.
NAMES: dict[str, tuple[str, ...]] = {
    "dog": ("dogsled",),
    "horse": ("sorrel", "horse cart"),
    "zebra": ("zebra",),
    "sheep": ("ram", "bighorn"),
    "cow": ("ox", "water buffalo", "bison", "oxcart"),
    "elephant": ("Indian elephant", "African elephant", "tusker"),
    "teddy bear": ("teddy",),
    "car": ("beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "racer",
            "sports car", "Model T", "police van", "ambulance", "go-kart", "golfcart"),
    "bus": ("school bus", "trolleybus", "minibus"),
    "truck": ("fire engine", "garbage truck", "moving van", "pickup", "tow truck",
              "trailer truck", "tractor"),
    "motorcycle": ("moped", "motor scooter"),
    "bicycle": ("mountain bike", "bicycle-built-for-two", "tricycle", "unicycle"),
    "boat": ("canoe", "catamaran", "fireboat", "gondola", "lifeboat", "speedboat", "yawl",
             "trimaran", "schooner", "pirate", "container ship", "liner", "paddlewheel"),
    "airplane": ("airliner", "warplane"),
    "train": ("bullet train", "electric locomotive", "freight car", "steam locomotive",
              "passenger car", "streetcar"),
    "sports ball": ("soccer ball", "tennis ball", "rugby ball", "basketball", "volleyball",
                    "croquet ball", "baseball", "golf ball", "ping-pong ball"),
    "skis": ("ski",),
    "umbrella": ("umbrella",),
    "backpack": ("backpack",),
    "bench": ("park bench",),
    "chair": ("barber chair", "folding chair", "rocking chair", "throne"),
    "couch": ("studio couch",),
    "laptop": ("laptop", "notebook"),
    "tv": ("television",),
    "cell phone": ("cellular telephone",),
    "tennis racket": ("racket",),
    "traffic light": ("traffic light",),
    "clock": ("analog clock", "digital clock", "wall clock"),
    "vase": ("vase",),
}  # fmt: skip


def covered() -> frozenset[str]:
    """COCO categories the classifier can speak for (confirm or veto)."""
    return frozenset(RANGES) | frozenset(NAMES)


@lru_cache(maxsize=4)
def index_table(labels: tuple[str, ...]) -> dict[int, str]:
    """ImageNet index -> COCO category, for the given label list (first synonyms)."""
    table: dict[int, str] = {}
    for category, ranges in RANGES.items():
        for lo, hi in ranges:
            for i in range(lo, min(hi, len(labels))):
                table[i] = category
    position = {name: i for i, name in enumerate(labels)}
    for category, names in NAMES.items():
        for name in names:
            if name in position and position[name] not in table:
                table[position[name]] = category
    return table


def coco_mass(probabilities: object, labels: tuple[str, ...], floor: float = 0.01) -> list:
    """``[(category, summed probability)]`` best first, masses below ``floor`` left out."""
    import numpy as np

    p = np.asarray(probabilities, dtype=np.float64)
    mass: dict[str, float] = {}
    for i, category in index_table(labels).items():
        if i < p.shape[0]:
            mass[category] = mass.get(category, 0.0) + float(p[i])
    return sorted(((c, round(m, 3)) for c, m in mass.items() if m >= floor), key=lambda kv: -kv[1])
