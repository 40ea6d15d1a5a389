"""Spatial relations between detected objects, from box geometry alone.

Without depth or segmentation, boxes still say a lot: centre offsets give left/right and
above/below, containment near the top edge suggests "on top of" (a rider on a horse, a cat on
a sofa), and for overlapping boxes the lower bottom edge is closer to the camera ("in front
of"; in a ground-level photo, what stands nearer reaches lower in the frame). Each relation
carries a confidence in [0, 1] and only confident ones between the most salient objects are
kept, because a caption mentions two or three relations at most and a wrong one is worse
than none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

Box = tuple[float, float, float, float]

PREDICATES = ("left of", "right of", "above", "below", "on top of", "next to", "in front of")
#: Predicates stated the other way round: "A right of B" says the same as "B left of A".
INVERSE = {"right of": "left of", "below": "above"}
#: Predicates whose subject and object can swap without changing the meaning.
SYMMETRIC = ("next to",)


@dataclass(frozen=True)
class Relation:
    """``subject predicate object``, e.g. ``dog_1 left of person_1``, with a confidence."""

    subject: str
    predicate: str
    object: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Relation:
        return cls(**data)

    def text(self) -> str:
        return f"{self.subject} is {self.predicate} {self.object}"


def relation_key(subject: str, predicate: str, obj: str) -> tuple[str, str, str]:
    """One key per statement a caption can make about two *kinds* of object.

    Captions name classes, not instances, so ``person_1 right of boat_1`` and ``person_2
    right of boat_3`` both read "The person is to the right of the boat", and ``boat_1 left
    of person_1`` says it again the other way round; for two objects of one class, "left of"
    and "right of" are the same sentence ("One person is to the left of another"). Relations
    with equal keys are duplicates for anyone who reads the caption.
    """
    if predicate in INVERSE:
        subject, predicate, obj = obj, INVERSE[predicate], subject
    if predicate in SYMMETRIC and obj < subject:
        subject, obj = obj, subject
    return subject, predicate, obj


def _clip01(x: float) -> float:
    return max(0.0, min(1.0, x))


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _intersection(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _on_top_of(a: Box, b: Box) -> float:
    """How much ``a`` seems to rest on ``b``: bottom edge in b's upper part, centred over b."""
    aw, ah = a[2] - a[0], a[3] - a[1]
    bh = b[3] - b[1]
    acx, acy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    if not (b[0] <= acx <= b[2]) or acy >= (b[1] + b[3]) / 2 or aw <= 0 or ah <= 0 or bh <= 0:
        return 0.0
    x_inside = (min(a[2], b[2]) - max(a[0], b[0])) / aw
    # where a's bottom lands, as a fraction of b's height from b's top (0 = on b's top edge)
    landing = (a[3] - b[1]) / bh
    if landing < -0.1 or landing > 0.6 or a[1] > b[1] + 0.3 * bh:
        return 0.0
    return _clip01((x_inside - 0.5) / 0.4) * _clip01(1.0 - abs(landing - 0.2) / 0.5)


def spatial_relation(a: Box, b: Box) -> tuple[str, float] | None:
    """The most fitting predicate for ``a ? b`` and its confidence, or None.

    Boxes are (x1, y1, x2, y2) in pixels, y growing downwards.
    """
    aw, ah, bw, bh = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    if min(aw, ah, bw, bh) <= 0:
        return None
    inter = _intersection(a, b)
    smaller = min(_area(a), _area(b))
    overlap = inter / smaller if smaller else 0.0

    top = _on_top_of(a, b)
    if top >= 0.5:
        return "on top of", round(top, 3)

    if overlap >= 0.3:
        # a reaches lower in the frame than b: nearer to the camera
        depth = (a[3] - b[3]) / max(ah, bh)
        if depth > 0.08:
            return "in front of", round(_clip01(depth / 0.25) * _clip01(overlap / 0.6), 3)
        return None

    dx = ((a[0] + a[2]) - (b[0] + b[2])) / 2
    dy = ((a[1] + a[3]) - (b[1] + b[3])) / 2
    dxn, dyn = abs(dx) / ((aw + bw) / 2), abs(dy) / ((ah + bh) / 2)
    if dxn >= dyn:
        dominance = _clip01((dxn / (dxn + dyn) - 0.5) / 0.3)
        separation = _clip01((dxn - 0.5) / 0.5)
        gap = (abs(dx) - (aw + bw) / 2) / ((aw + bw) / 2)
        v_overlap = (min(a[3], b[3]) - max(a[1], b[1])) / min(ah, bh)
        if -0.1 <= gap <= 0.15 and v_overlap >= 0.5:
            return "next to", round(_clip01(v_overlap) * dominance, 3)
        return ("left of" if dx < 0 else "right of"), round(dominance * separation, 3)
    dominance = _clip01((dyn / (dxn + dyn) - 0.5) / 0.3)
    separation = _clip01((dyn - 0.5) / 0.5)
    return ("above" if dy < 0 else "below"), round(dominance * separation, 3)


def salience_order(objects: Sequence[tuple[str, str, Box]]) -> list[int]:
    """Indices of ``(id, label, box)`` by salience: people first, then larger boxes."""
    return sorted(
        range(len(objects)),
        key=lambda i: (objects[i][1] != "person", -_area(objects[i][2])),
    )


def salient_relations(
    objects: Sequence[tuple[str, str, Box]],
    max_relations: int = 3,
    min_confidence: float = 0.5,
    top_objects: int = 4,
) -> list[Relation]:
    """Confident relations among the ``top_objects`` most salient objects, best first.

    ``objects`` are ``(id, label, box)``. The more salient object is the subject, except for
    "on top of" and "in front of", which are tried both ways since they are not symmetric.
    A relation that says what an earlier one already said about the same classes (see
    :func:`relation_key`) is skipped, so the ``max_relations`` slots hold distinct statements.
    """
    order = salience_order(objects)[:top_objects]
    found: list[tuple[int, float, Relation]] = []
    for rank, (i, j) in enumerate(combinations(order, 2)):
        a, b = objects[i], objects[j]
        best = spatial_relation(a[2], b[2])
        reverse = spatial_relation(b[2], a[2])
        if (
            reverse
            and reverse[0] in ("on top of", "in front of")
            and (
                best is None or best[0] not in ("on top of", "in front of") or reverse[1] > best[1]
            )
        ):
            a, b, best = b, a, reverse
        if best is None or best[1] < min_confidence:
            continue
        found.append((rank, best[1], Relation(a[0], best[0], b[0], best[1])))
    found.sort(key=lambda t: (t[0], -t[1]))
    label = {o[0]: o[1] for o in objects}
    kept: dict[tuple[str, str, str], Relation] = {}
    for _, _, r in found:
        kept.setdefault(relation_key(label[r.subject], r.predicate, label[r.object]), r)
    return list(kept.values())[:max_relations]
