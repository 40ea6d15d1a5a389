"""What the grounded pipeline knows about one image, as typed, JSON-serialisable facts.

Detections, scene guess and OCR text arrive from separate models; :func:`build_facts` turns
them into one ``Facts`` record: named instances (``dog_1``), colours, counts, confident
relations, the setting (with confidences, so writers can hedge) and any text read. Writers
only ever see ``Facts``, which keeps them testable without a model and lets ``captionkit
facts`` show a person exactly what the caption was written from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, Field

from captionkit.captioners.grounded.coco_words import display_name
from captionkit.captioners.grounded.grammar import counted, join_list
from captionkit.captioners.grounded.precision import (
    CueFact,
    PlaceFact,
    Policy,
    Rejected,
    apply_policy,
    choose_place,
    hedged_activity_cues,
    pooled_cues,
)
from captionkit.captioners.grounded.relations import Relation, salient_relations
from captionkit.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from captionkit.captioners.grounded.colours import Palette

#: Scene confidences below this are not stated at all; between it and SURE they are hedged.
SCENE_MIN = 0.25
SCENE_SURE = 0.6
#: Classifier labels kept in the facts (the writer's cues need more, see phrasebook).
LABEL_MIN = 0.05

#: What the ground's colour suggests. Deliberately few and common: a wrong surface is a
#: visible error, so ambiguous colours (grey, brown, black) suggest nothing.
SURFACES: dict[str, str] = {
    "green": "grass",
    "dark green": "grass",
    "light green": "grass",
    "white": "snow",
    "blue": "water",
    "light blue": "water",
    "light brown": "sand",
}


class ObjectFact(BaseModel):
    id: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    colours: list[str] = Field(default_factory=list)
    #: Share of the image the box covers, 0-1 (salience for writers).
    area: float = 0.0
    #: "detector", or "classifier" when the scene classifier's breed labels named (or
    #: corrected) the animal; a classifier-only object's box is the whole image.
    source: str = "detector"
    #: Why the precision stage let this object be named (empty for facts built without one).
    evidence: str = ""

    @property
    def name(self) -> str:
        return display_name(self.label)

    @property
    def colour(self) -> str | None:
        return self.colours[0] if self.colours else None


class SceneFact(BaseModel):
    indoor: bool | None = None
    indoor_confidence: float = 0.0
    place: str | None = None
    place_confidence: float = 0.0
    time_of_day: str | None = None
    lighting: str | None = None
    #: Place words and classifier labels with their probabilities, best first.
    places: list[tuple[str, float]] = Field(default_factory=list)
    labels: list[tuple[str, float]] = Field(default_factory=list)
    #: The classifier's probability mass per COCO category (its second opinion on objects).
    objects: list[tuple[str, float]] = Field(default_factory=list)

    @property
    def hedged(self) -> bool:
        return self.place_confidence < SCENE_SURE


class TextFact(BaseModel):
    text: str
    score: float


class Facts(BaseModel):
    width: int
    height: int
    objects: list[ObjectFact] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    relations: list[Relation] = Field(default_factory=list)
    scene: SceneFact | None = None
    texts: list[TextFact] = Field(default_factory=list)
    #: Main colours of the whole image; filled when nothing was detected.
    image_colours: list[str] = Field(default_factory=list)
    #: Colour of the lower band of the image outside the boxes, and the surface it suggests
    #: ("grass", "snow", "water", "sand"): a cheap cue for where things happen.
    ground_colour: str | None = None
    surface: str | None = None
    #: The precision policy these facts passed (None: built without one, as before v4),
    #: what it left out and why, the one place a caption may state, and activity cues.
    precision: str | None = None
    rejected: list[Rejected] = Field(default_factory=list)
    place: PlaceFact | None = None
    cues: list[CueFact] = Field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Facts:
        return cls.model_validate(data)

    def by_id(self, object_id: str) -> ObjectFact | None:
        return next((o for o in self.objects if o.id == object_id), None)

    def count_phrases(self) -> list[str]:
        """ "a black dog", "two people", "a group of people", most frequent class first."""
        phrases = []
        for label, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            first = next((o for o in self.objects if o.label == label), None)
            colour = first.colour if first and label != "person" else None
            phrases.append(counted(display_name(label), n, colour or ""))
        return phrases


def _scene_fact(guess: Any) -> SceneFact:
    """Map helper A's ``SceneGuess`` (duck-typed) to the facts' own record."""
    places = [(str(p).replace("_", " "), round(float(c), 3)) for p, c in guess.places or []]
    labels: dict[str, float] = {}
    for lb, c in guess.labels or []:  # ImageNet repeats some names ("maillot"): keep the best
        if c >= LABEL_MIN and str(lb) not in labels:
            labels[str(lb)] = round(float(c), 3)
    place, place_conf = places[0] if places else (None, 0.0)
    return SceneFact(
        indoor=guess.indoor,
        indoor_confidence=round(float(guess.indoor_confidence or 0.0), 3),
        place=place if place_conf >= SCENE_MIN else None,
        place_confidence=place_conf if place_conf >= SCENE_MIN else 0.0,
        time_of_day=guess.time_of_day,
        lighting=guess.lighting,
        places=places[:3],
        labels=list(labels.items())[:5],
        objects=[(str(c), round(float(m), 3)) for c, m in getattr(guess, "objects", None) or []],
    )


#: ImageNet index ranges (0-based, end exclusive) of breeds of a COCO animal.
BREED_RANGES = {"dog": (151, 269), "cat": (281, 286)}
#: Detector labels a small detector gives to dogs and cats it does not recognise.
CONFUSABLE = ("sheep", "cow", "bear", "horse", "cat", "dog", "teddy bear")
BREED_RELABEL = 0.3
BREED_ADD = 0.5


def breed_names() -> dict[str, str]:
    """ImageNet first-synonym -> COCO animal for dog and cat breeds ({} without the labels).

    Only "the scene model is not installed" means "no breeds": any other failure (an
    unreadable file) is raised, and nothing but a success is cached, so one bad moment
    cannot switch breed fusion off for the rest of the process.
    """
    try:
        return _read_breed_names()
    except (MissingDependencyError, ModelLoadError):  # no scene model: nothing to fuse
        return {}


@lru_cache(maxsize=1)
def _read_breed_names() -> dict[str, str]:
    from captionkit.captioners.grounded.scene import LABEL_FILE
    from captionkit.captioners.grounded.weights import pibo_model_path

    lines = pibo_model_path(LABEL_FILE).read_text().splitlines()
    return {
        lines[i].split(",")[0].strip(): animal
        for animal, (lo, hi) in BREED_RANGES.items()
        for i in range(lo, min(hi, len(lines)))
    }


def _fuse_breeds(detections: list[Any], scene: SceneFact | None, size: tuple[int, int]) -> list:
    """Use the classifier's breed labels to correct or add a dog or cat.

    A nano detector often calls a dog a sheep or a bear while the ImageNet classifier, which
    knows 118 dog breeds, is sure it is a dog: relabel such detections, and when nothing
    animal-like was detected but the classifier is very sure, add the animal (whole-image box).
    """
    if scene is None or not scene.labels:
        return list(detections)
    names = breed_names()
    mass: dict[str, float] = {}
    for label, p in scene.labels:
        if label in names:
            mass[names[label]] = mass.get(names[label], 0.0) + p
    if not mass:
        return list(detections)
    animal, p = max(mass.items(), key=lambda kv: kv[1])
    out = []
    relabelled = False
    for d in detections:
        if d.label in CONFUSABLE and d.label != animal and p >= BREED_RELABEL:
            d = _Relabelled(animal, d.score, tuple(d.box), "classifier")
            relabelled = True
        out.append(d)
    if relabelled:
        out = _drop_duplicates(out)
    if not relabelled and p >= BREED_ADD and not any(d.label == animal for d in out):
        out.append(_Relabelled(animal, p, (0.0, 0.0, float(size[0]), float(size[1])), "classifier"))
    return out


def _whole_image(det: Any, width: int) -> bool:
    """An animal the classifier added without a location (its box spans the image)."""
    box = tuple(det.box)
    return getattr(det, "source", "detector") == "classifier" and box[2] - box[0] >= width * 0.99


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = _box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _box_area(a) + _box_area(b) - inter
    return inter / union if union > 0 else 0.0


#: Same-label boxes overlapping this much after relabelling are one animal seen twice.
DUPLICATE_IOU = 0.6


def _drop_duplicates(detections: list[Any]) -> list[Any]:
    """Per-class suppression after relabelling.

    The detector often reports one animal twice under two labels (a dog and a sheep on the
    same box); once the classifier relabels the sheep as a dog, both would be counted and
    the caption would say "two dogs" for one. Keep the best-scored box of each overlap.
    """
    kept: list[Any] = []
    for d in sorted(detections, key=lambda d: -float(d.score)):
        box = tuple(float(v) for v in d.box)
        if not any(
            k.label == d.label and _iou(box, tuple(float(v) for v in k.box)) >= DUPLICATE_IOU
            for k in kept
        ):
            kept.append(d)
    return kept


@dataclass
class _Relabelled:
    label: str
    score: float
    box: tuple[float, ...]
    source: str = "detector"


def _box4(values: Iterable[float]) -> tuple[float, float, float, float]:
    """A box as the 4-tuple the type says it is (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = values
    return (x1, y1, x2, y2)


def build_facts(
    image: np.ndarray,
    detections: list[Any],
    scene: Any | None = None,
    texts: list[Any] | None = None,
    *,
    colours: bool = True,
    palette: Palette = "coarse",
    max_objects: int = 10,
    max_relations: int = 3,
    min_text_score: float = 0.6,
    scale: float = 1.0,
    size: tuple[int, int] | None = None,
    policy: Policy | None = None,
) -> Facts:
    """Turn one image's detections, scene guess and OCR spans into :class:`Facts`.

    ``image`` is the RGB array the models saw; ``scale`` maps its pixel coordinates back
    to the original image's (the pipeline may shrink large photos before detection), whose
    ``size`` (width, height) is then recorded exactly. With a ``policy`` (the pipeline's
    default), detections and places pass the precision stage (:mod:`precision`) first.
    """
    from captionkit.captioners.grounded.colours import (
        dominant_colours,
        ground_colour,
        image_colours,
    )

    h, w = image.shape[:2]
    scene_fact = _scene_fact(scene) if scene is not None else None
    detections = _fuse_breeds(detections, scene_fact, (w, h))
    rejected: list[Rejected] = []
    if policy is not None:
        detections, rejected = apply_policy(detections, scene_fact, policy)
    dets = sorted(detections, key=lambda d: -float(d.score))[:max_objects]
    numbering: Counter[str] = Counter()
    objects: list[ObjectFact] = []
    for det in dets:
        numbering[det.label] += 1
        box = _box4(float(v) for v in det.box)
        source = getattr(det, "source", "detector")
        measure = colours and not (source == "classifier" and box[2] - box[0] >= w * 0.99)
        names = [c.name for c in dominant_colours(image, box, palette=palette)] if measure else []
        area = _box_area(box) / float(w * h) if w and h else 0.0
        objects.append(
            ObjectFact(
                id=f"{det.label.replace(' ', '_')}_{numbering[det.label]}",
                label=det.label,
                score=round(float(det.score), 3),
                box=_box4(round(v * scale, 1) for v in box),
                colours=names[:2],
                area=round(area, 4),
                source=source,
                evidence=getattr(det, "evidence", ""),
            )
        )
    relations = salient_relations(
        [(o.id, o.label, o.box) for o in objects], max_relations=max_relations
    )
    spans = [
        TextFact(text=" ".join(str(t.text).split()), score=round(float(t.score), 3))
        for t in (texts or [])
        if float(t.score) >= min_text_score and str(t.text).strip()
    ]
    # A classifier-only animal's box is the whole image: masking it would hide the ground
    # it stands on, so only boxes that locate something take part.
    located = [_box4(d.box) for d in dets if not _whole_image(d, w)]
    ground = ground_colour(image, located) if colours else None
    surface = SURFACES.get(ground or "")
    place: PlaceFact | None = None
    cues: list[CueFact] = []
    if policy is not None:
        labels = scene_fact.labels if scene_fact else []
        place = choose_place(
            scene_fact, pooled_cues(labels, 2, policy.cue_floor), [o.label for o in objects],
            surface, ground, policy,
        )  # fmt: skip
        cues = pooled_cues(labels, 1, policy.activity_min)
        cues += hedged_activity_cues(rejected, list(dict.fromkeys(o.label for o in objects)),
                                     policy)  # fmt: skip
        if (
            scene_fact is not None
            and scene_fact.place
            and (scene_fact.place_confidence < policy.place_threshold(scene_fact.place))
        ):
            scene_fact.place, scene_fact.place_confidence = None, 0.0
        if surface not in policy.surfaces:
            surface = None
    return Facts(
        width=size[0] if size else round(w * scale),
        height=size[1] if size else round(h * scale),
        objects=objects,
        counts=dict(Counter(o.label for o in objects)),
        relations=relations,
        scene=scene_fact,
        texts=spans,
        image_colours=image_colours(image, palette=palette) if not objects and colours else [],
        ground_colour=ground,
        surface=surface,
        precision=policy.name if policy is not None else None,
        rejected=rejected,
        place=place,
        cues=cues,
    )


def _box_area(b: tuple[float, ...]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


class SettingPart(NamedTuple):
    """One claim about the setting and the hedge its confidence calls for.

    Kept apart so each reader composes the hedge once: a list of facts says "probably
    indoors", a sentence must not wrap that in another hedge ("appears to be probably").
    """

    kind: str  # "where", "place", "time" or "lighting"
    text: str  # "indoors", "beach", "daytime", "bright light"
    hedge: str = ""  # "", "probably" or "possibly"

    def __str__(self) -> str:
        return f"{self.hedge} {self.text}".strip()


def setting_parts(scene: SceneFact | None) -> list[SettingPart]:
    """Indoor/outdoor, place, time and lighting, each hedged by its own confidence."""
    if scene is None:
        return []
    parts = []
    if scene.indoor is not None and scene.indoor_confidence >= SCENE_MIN:
        where = "indoors" if scene.indoor else "outdoors"
        sure = scene.indoor_confidence >= SCENE_SURE
        parts.append(SettingPart("where", where, "" if sure else "probably"))
    if scene.place:
        parts.append(SettingPart("place", scene.place, "possibly" if scene.hedged else ""))
    if scene.time_of_day:
        parts.append(SettingPart("time", scene.time_of_day))
    if scene.lighting:
        light = scene.lighting if "light" in scene.lighting else f"{scene.lighting} light"
        parts.append(SettingPart("lighting", light))
    return parts


def setting_text(scene: SceneFact | None) -> str:
    """ "outdoors, possibly beach, daytime, natural light" (each part hedged once)."""
    return ", ".join(str(p) for p in setting_parts(scene))


def facts_to_text(facts: Facts) -> str:
    """The input block of an LLM writer's prompt: objects, counts, relations, setting, text."""
    lines = []
    if facts.objects:
        items = []
        for o in facts.objects:
            colour = f", colour: {join_list(o.colours)}" if o.colours else ""
            items.append(f"{o.id} ({o.name}, confidence {o.score:.2f}{colour})")
        lines.append(f"Objects: {', '.join(items)}.")
        lines.append(f"Counts: {join_list(facts.count_phrases())}.")
    else:
        lines.append("Objects: none detected.")
        if facts.image_colours:
            lines.append(f"Main colours of the image: {join_list(facts.image_colours)}.")
    if facts.relations:
        lines.append(f"Relationships: {'; '.join(r.text() for r in facts.relations)}.")
    setting = setting_text(facts.scene)
    if setting:
        lines.append(f"Setting: {setting}.")
    if facts.texts:
        quoted = ", ".join(f"'{t.text}'" for t in facts.texts[:3])
        lines.append(f"Text in the image: {quoted}.")
    return "\n".join(lines)
