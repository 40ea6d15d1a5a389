"""CHAIR-i / CHAIR-s object hallucination (Rohrbach et al., 2018), without NLTK.

A caption "hallucinates" when it mentions a COCO object (any synonym or plural, after
upstream's two-word and "baby animal" rules) that the image does not contain. What the image
contains comes from its reference captions (objects the humans mentioned), from detections
(COCO labels per image), or both, as in the paper. CHAIR-i is the share of mentioned objects
that are hallucinated, CHAIR-s the share of captions with at least one.

Upstream tokenises with NLTK and singularises with ``pattern``; those are heavy for one
lookup table, so words are split on letters and singularised by rules checked against the
object vocabulary (which only has to get the 80 categories' words right).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from captionkit.eval.coco_objects import ANIMAL_WORDS, DOUBLE_WORDS, VEHICLE_WORDS, word_to_category

_IRREGULAR = {
    "men": "man", "women": "woman", "children": "children", "mice": "mouse", "geese": "goose",
    "knives": "knife", "oxen": "oxen", "people": "people", "teeth": "tooth", "feet": "foot",
    "sheep": "sheep", "skis": "skis", "scissors": "scissors", "calves": "calf",
    "policemen": "policeman", "gentlemen": "gentleman", "servicemen": "serviceman",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
    words = word_to_category()
    double = {w: w for w in DOUBLE_WORDS}
    for animal in ANIMAL_WORDS:
        double[f"baby {animal}"] = animal
        double[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        double[f"passenger {vehicle}"] = vehicle
    double["bow tie"] = "tie"
    double["toilet seat"] = "toilet"
    vocab = frozenset(w for phrase in list(words) + list(double) for w in phrase.split())
    return words, double, vocab


def singularize(word: str) -> str:
    """Singular form of an English noun, preferring forms in the COCO object vocabulary."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    _, _, vocab = _tables()
    if word in vocab:
        return word
    options = []
    if word.endswith("ies") and len(word) > 4:
        options.append(word[:-3] + "y")
    if word.endswith("ves"):
        options += [word[:-3] + "f", word[:-3] + "fe"]
    if re.search(r"(ses|xes|zes|ches|shes)$", word):
        options.append(word[:-2])
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        options.append(word[:-1])
    for option in options:
        if option in vocab:
            return option
    return options[0] if options else word


def caption_objects(caption: str) -> list[tuple[str, str]]:
    """``(word as written after singularising, COCO category)`` for each object mentioned."""
    words_to_cat, double, _ = _tables()
    words = [singularize(w) for w in _WORD.findall(caption.lower())]
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i : i + 2])
        if pair in double:
            merged.append(double[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:
        merged = [w for w in merged if w != "seat"]
    return [(w, words_to_cat[w]) for w in merged if w in words_to_cat]


@dataclass
class ChairResult:
    """Corpus CHAIR-i / CHAIR-s, per-image details, and the most hallucinated objects."""

    chair_i: float
    chair_s: float
    per_image: dict[str, dict] = field(default_factory=dict)
    most_hallucinated: list[tuple[str, int]] = field(default_factory=list)
    ground_truth: str = "references"


def chair(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]] | None = None,
    detections: Mapping[str, Sequence[str]] | None = None,
    *,
    top: int = 10,
) -> ChairResult:
    """Score ``candidates`` against objects from ``references`` and/or ``detections``.

    ``detections`` maps an image key to COCO category names (or synonyms) found in it.
    """
    if references is None and detections is None:
        raise ValueError("CHAIR needs reference captions or detections as ground truth")
    words_to_cat, _, _ = _tables()
    mentioned_total = hallucinated_total = captions_with = 0
    counts: Counter = Counter()
    per: dict[str, dict] = {}
    for key, caption in candidates.items():
        truth: set[str] = set()
        for ref in (references or {}).get(key, ()):
            truth.update(cat for _, cat in caption_objects(ref))
        for label in (detections or {}).get(key, ()):
            truth.add(words_to_cat.get(label.lower(), label.lower()))
        objects = caption_objects(caption)
        bad = [(w, c) for w, c in objects if c not in truth]
        mentioned_total += len(objects)
        hallucinated_total += len(bad)
        captions_with += bool(bad)
        counts.update(c for _, c in bad)
        per[key] = {
            "mentioned": [c for _, c in objects],
            "hallucinated": [c for _, c in bad],
            "chair_i": len(bad) / len(objects) if objects else 0.0,
            "ground_truth": sorted(truth),
        }
    source = "+".join(n for n, v in (("references", references), ("detections", detections)) if v)
    return ChairResult(
        chair_i=hallucinated_total / mentioned_total if mentioned_total else 0.0,
        chair_s=captions_with / len(candidates) if candidates else 0.0,
        per_image=per,
        most_hallucinated=counts.most_common(top),
        ground_truth=source,
    )
