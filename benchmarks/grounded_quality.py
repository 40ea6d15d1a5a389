"""Cross-validated caption quality of the grounded backend's precision levers (issue #18).

The detector and the scene classifier run once per photo; their raw outputs (every
detection down to 0.1, the classifier's guess) are cached under /tmp, so fitting thresholds
and writing captions for every fold and lever afterwards costs seconds. Folds are by image
(5 folds of the 150 Flickr8k dev photos, fixed seed); each lever's thresholds are fitted on
the training folds only (``captionkit.captioners.grounded.calibration``) and every figure is
the mean over the held-out folds, never one measured on photos a threshold was chosen on.
The shipped row ("targets by nested CV") also chooses its precision targets inside each
training split, by an inner 4-fold CV (``select_targets``). "probe:" rows rewrite the new
default's held-out captions with wordings that are measured but not shipped.
Scores: CIDEr-D and BLEU-4 (``captionkit.eval``, document frequencies from all 150 photos'
references), CHAIR-i/CHAIR-s against the references, words per caption, place precision
(the share of stated places a reference supports). img/s is measured end to end through
``captionkit.api.caption`` for today's default and the new one.

    python benchmarks/grounded_quality.py [--folds 5] [--fit-all] [--speed] [--show 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "flickr8k-dev"
CACHE = Path("/tmp/captionkit-grounded-cache")
YOLOX = REPO / ".." / "shared" / "models" / "yolox_nano.onnx"
#: Today's detector floor (GroundedOptions.conf) and the floor the cache keeps.
FLOOR, CACHE_FLOOR = 0.3, 0.1
#: The row that is the shipped default.
NEW = "all six, targets by nested CV"


@dataclass
class Photo:
    name: str
    array: Any
    scale: float
    size: tuple[int, int]
    detections: list[Any]
    scene: Any


def load_photos(data: Path, detector: str = "ssd") -> list[Photo]:
    """Photos with their raw model outputs, from the cache or by running the models once."""
    from captionkit.captioners.grounded.detectors import Detection
    from captionkit.captioners.grounded.scene import SceneGuess
    from captionkit.captioners.registry import create
    from captionkit.inputs.decode import decode_image
    from captionkit.types import CaptionRequest

    names = sorted(json.loads((data / "references.json").read_text()))
    key = hashlib.sha1(f"{detector}|{CACHE_FLOOR}|{'|'.join(names)}|3".encode()).hexdigest()[:12]
    path = CACHE / f"{detector}-{key}.json"
    weights = str(YOLOX) if detector == "yolox" else None
    cap: Any = create("grounded", detector=detector, detector_weights=weights, conf=CACHE_FLOOR,
                      max_objects=30)  # fmt: skip
    raw = json.loads(path.read_text()) if path.is_file() else {}
    photos = []
    for name in names:
        p = cap.preprocess(decode_image((data / "images" / name).read_bytes()), CaptionRequest())
        if name not in raw:
            dets = cap.detector.detect_batch([p.array])[0]
            guess = cap.scene_classifier.classify_batch([p.array])[0]
            raw[name] = {"dets": [(d.label, d.score, list(d.box)) for d in dets],
                         "scene": asdict(guess)}  # fmt: skip
        r = raw[name]
        dets = [Detection(lb, float(s), tuple(b)) for lb, s, b in r["dets"]]
        scene = SceneGuess(**{k: v for k, v in r["scene"].items()})
        photos.append(Photo(name, p.array, p.scale, p.size, dets, scene))
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return photos


def caption_photo(photo: Photo, policy: Any, style: str = "short", floor: float = FLOOR) -> tuple:
    """(caption, facts) exactly as the pipeline writes it, from the cached model outputs."""
    from captionkit.captioners.grounded.facts import build_facts
    from captionkit.captioners.grounded.rerank import rerank
    from captionkit.captioners.grounded.writers import TemplateWriter

    dets = [d for d in photo.detections if d.score >= floor]
    facts = build_facts(photo.array, dets, photo.scene, scale=photo.scale, size=photo.size,
                        policy=policy)  # fmt: skip
    texts = TemplateWriter().write(facts, style, 1)
    return rerank(texts, facts, style)[0].text, facts


def records(photos: list[Photo], references: dict[str, list[str]]) -> dict[str, Any]:
    """Calibration records per photo (see ``calibration.ImageRecord``)."""
    from captionkit.captioners.grounded.calibration import ImageRecord
    from captionkit.captioners.grounded.facts import build_facts
    from captionkit.captioners.grounded.precision import classifier_mass, pooled_cues
    from captionkit.eval.chair import caption_objects

    out = {}
    for ph in photos:
        mass = classifier_mass(ph.scene)
        best: dict[str, float] = {}
        for d in ph.detections:
            best[d.label] = max(best.get(d.label, 0.0), d.score)
        facts = build_facts(ph.array, [d for d in ph.detections if d.score >= FLOOR], ph.scene)
        labels = facts.scene.labels if facts.scene else []
        places = ph.scene.places or []
        out[ph.name] = ImageRecord(
            detections=[(lb, s, mass.get(lb, 0.0)) for lb, s in best.items()],
            truth={c for r in references[ph.name] for _, c in caption_objects(r)},
            references=references[ph.name],
            scene_place=(places[0][0], places[0][1]) if places else None,
            scene_places=list(facts.scene.places) if facts.scene else [],
            place_cues=[(c.value, c.mass) for c in pooled_cues(labels, 2, 0.0)],
            activity_cues=[(c.value, c.mass) for c in pooled_cues(labels, 1, 0.0)],
            surface=facts.surface,
        )
    return out


def score(captions: dict[str, str], facts: dict[str, Any], refs: dict, scorer: Any) -> dict:
    from captionkit.captioners.grounded.calibration import supported
    from captionkit.captioners.grounded.writers import place_word
    from captionkit.eval.bleu import bleu
    from captionkit.eval.chair import chair

    cider, _ = scorer.score(captions)
    b, _ = bleu(captions, {k: refs[k] for k in captions})
    ch = chair(captions, refs)
    words = {k: place_word(f) for k, f in facts.items()}
    places = [supported(w, refs[k]) for k, w in words.items() if w]
    return {
        "CIDEr-D": cider, "BLEU-4": b[3], "CHAIR-i": ch.chair_i, "CHAIR-s": ch.chair_s,
        "words": statistics.mean(len(c.split()) for c in captions.values()),
        "place-prec": statistics.mean(places) if places else float("nan"),
        "hallucinated": ch.most_hallucinated,
    }  # fmt: skip


def folds_of(photos: list[Photo], folds: int) -> dict[str, int]:
    """Image -> fold, fixed by a seed so every lever sees the same split."""
    order = [p.name for p in photos]
    random.Random(18).shuffle(order)
    return {name: i % folds for i, name in enumerate(order)}


def cross_validate(
    photos: list[Photo],
    refs: dict,
    recs: dict,
    make_policy: Callable[..., Any] | None,
    folds: int,
    scorer: Any,
    style: str = "short",
    post: Callable[[str], str] | None = None,
) -> tuple[dict[str, float], dict[str, str], list[Any]]:
    """Mean over held-out folds; ``make_policy(train records, train photos)`` is fitted per fold.

    ``post`` rewrites each caption (the probes: wordings measured, not shipped)."""
    fold_of = folds_of(photos, folds)
    rows, held_out, policies = [], {}, []
    for k in range(folds):
        train = [p for p in photos if fold_of[p.name] != k]
        policy = make_policy([recs[p.name] for p in train], train) if make_policy else None
        policies.append(policy)
        caps, fs = {}, {}
        for ph in photos:
            if fold_of[ph.name] == k:
                caps[ph.name], fs[ph.name] = caption_photo(ph, policy, style)
                if post:
                    caps[ph.name] = post(caps[ph.name])
        held_out.update(caps)
        rows.append(score(caps, fs, refs, scorer))
    keys = [k for k in rows[0] if k != "hallucinated"]
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
    mean["CIDEr-D sd"] = statistics.stdev(r["CIDEr-D"] for r in rows)
    return mean, held_out, policies


#: Targets the nested selection may choose from (object, place, activity), and the
#: hallucination budget (the issue's CHAIR-i 0.05 / CHAIR-s 0.10) it must keep.
GRID = [(0.9, p, a) for p in (0.3, 0.4, 0.5, 0.7) for a in (0.4, 0.5, 0.6)]
BUDGET = (0.05, 0.10)
#: Stated places a reference supports, at least (the v5 default's held-out share, 0.65).
PLACE_PRECISION = 0.65
#: Inner folds of the nested selection.
INNER = 4


def select_targets(refs: dict, scorer: Any, levers: Any = None) -> Callable[..., Any]:
    """A policy factory that picks its targets by an inner cross-validation of the training
    photos: each grid point is fitted on inner training folds and scored on the inner
    held-out fold; the best CIDEr-D within the CHAIR budget wins (none within it: the
    lowest CHAIR-i), then the policy is refitted on all training photos with those targets.

    Scoring a grid point on the photos its thresholds were fitted on (v5 did) favours the
    strictest targets: per-word place thresholds are always right in-sample.
    """
    from captionkit.captioners.grounded.calibration import fit_policy

    def make(train_recs: list, train: list[Photo]) -> Any:
        order = [p.name for p in train]
        random.Random(7).shuffle(order)
        fold = {name: i % INNER for i, name in enumerate(order)}
        rec = {p.name: r for p, r in zip(train, train_recs, strict=True)}
        ranked = []
        for target, place, act in GRID:
            caps, fs = {}, {}
            for j in range(INNER):
                inner = [rec[p.name] for p in train if fold[p.name] != j]
                policy = fit_policy(inner, target=target, place_target=place,
                                    activity_target=act, levers=levers)  # fmt: skip
                for ph in train:
                    if fold[ph.name] == j:
                        caps[ph.name], fs[ph.name] = caption_photo(ph, policy)
            m = score(caps, fs, refs, scorer)
            ok = m["CHAIR-i"] <= BUDGET[0] and m["CHAIR-s"] <= BUDGET[1]
            ok = ok and not m["place-prec"] < PLACE_PRECISION  # NaN (no place stated): ok
            ranked.append(
                ((not ok, 0.0 if ok else m["CHAIR-i"], -m["CIDEr-D"]), (target, place, act))
            )
        target, place, act = min(ranked)[1]
        return fit_policy(train_recs, target=target, place_target=place, activity_target=act,
                          levers=levers)  # fmt: skip

    return make


@contextmanager
def memo_colours() -> Iterator[None]:
    """Colour measurements of the cached photos computed once per box, for the fits.

    Every lever and grid point rebuilds facts for the same photos and boxes; only the
    policy changes which boxes are kept, so a box's colours never differ between calls.
    Not used while measuring speed.
    """
    from captionkit.captioners.grounded import colours

    saved = colours.dominant_colours, colours.ground_colour
    memo: dict[tuple, Any] = {}

    def keyed(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
        def call(image: Any, boxes: Any, *a: Any, **kw: Any) -> Any:
            key = (tag, id(image), repr(boxes), a, tuple(sorted(kw.items())))
            if key not in memo:
                memo[key] = fn(image, boxes, *a, **kw)
            return memo[key]

        return call

    colours.dominant_colours = keyed(saved[0], "box")
    colours.ground_colour = keyed(saved[1], "ground")
    try:
        yield
    finally:
        colours.dominant_colours, colours.ground_colour = saved


def speed(data: Path, names: list[str], precision: bool) -> float:
    from captionkit.api import caption

    paths = [str(data / "images" / n) for n in names]
    start = time.perf_counter()
    results = caption(paths, model="grounded", store=False, precision=precision)
    if not all(r.ok for r in results):
        raise SystemExit("some images failed")
    return len(paths) / (time.perf_counter() - start)


def probe_man(caption: str) -> str:
    """ "A man" for one person: the references' commonest subject, and a guess about who
    someone is that no model here can make. Measured to size the gap, never shipped."""
    return "A man" + caption[len("A person") :] if caption.startswith("A person") else caption


def probe_no_standing(caption: str) -> str:
    """The default "is/are standing" (said when nothing more is known) left out."""
    return caption.replace(" is standing", "").replace(" are standing", "")


def main() -> None:
    from captionkit.captioners.grounded.calibration import Levers, fit_policy
    from captionkit.eval.cider import CiderD

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--detector", default="ssd", help="ssd or yolox (../shared weights)")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--show", type=int, default=0, help="print held-out captions")
    parser.add_argument("--fit-all", action="store_true", help="print the policy fitted on all")
    parser.add_argument("--only-fit", action="store_true", help="with --fit-all: skip the table")
    parser.add_argument("--speed", action="store_true", help="also measure img/s end to end")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.data / "references.json").is_file():
        sys.exit(f"no references.json under {args.data}")
    refs = json.loads((args.data / "references.json").read_text())
    start = time.perf_counter()
    photos = load_photos(args.data, args.detector)
    print(f"models/cache: {time.perf_counter() - start:.1f}s for {len(photos)} photos", flush=True)
    recs = records(photos, refs)
    scorer = CiderD(refs)
    if args.only_fit:
        args.fit_all = True

    def fitted(**kw: Any) -> Callable[..., Any]:
        target = kw.pop("target", args.target)
        return lambda train, _photos: fit_policy(train, target=target, levers=Levers(**kw))

    off = {"thresholds": False, "classifier": False, "places": False, "activities": False,
           "place_words": False, "hedged_activities": False}  # fmt: skip
    v5 = {"place_words": False, "hedged_activities": False}
    new_default = select_targets(refs, scorer)
    Variant = tuple[Callable[..., Any] | None, Callable[[str], str] | None]
    variants: dict[str, Variant] = {
        "today (no precision stage)": (None, None),
        "+ per-class thresholds": (fitted(**{**off, "thresholds": True}), None),
        "+ classifier confirm/veto": (fitted(**{**off, "classifier": True}), None),
        "+ calibrated places": (fitted(**{**off, "places": True}), None),
        "+ calibrated activity cues": (fitted(**{**off, "activities": True}), None),
        "+ per-word place thresholds": (
            fitted(**{**off, "places": True, "place_words": True}),
            None,
        ),
        "+ activities of unnamed objects": (fitted(**{**off, "hedged_activities": True}), None),
        "thresholds + classifier": (
            fitted(**{**off, "thresholds": True, "classifier": True}),
            None,
        ),
        "v5: all four, fixed targets": (fitted(**v5), None),
        "v5 + generic words": (fitted(**v5, generic=True), None),
        "v5, targets by nested CV": (select_targets(refs, scorer, Levers(**v5)), None),
        "all six, fixed targets": (fitted(), None),
        NEW: (new_default, None),
        # Probes: wordings measured on the new default's facts, not shipped (see README).
        "probe: 'a man' for one person": (new_default, probe_man),
        "probe: no default 'standing'": (new_default, probe_no_standing),
    }
    if args.only_fit:
        variants = {}
    head = f"{'variant':32} {'CIDEr-D':>8} {'±sd':>6} {'BLEU-4':>7} {'CHAIR-i':>8} {'CHAIR-s':>8}"
    print(f"{args.folds}-fold CV by image, mean over held-out folds\n{head} words  place-prec")
    table = []
    with memo_colours():
        for name, (make, post) in variants.items():
            m, held, policies = cross_validate(photos, refs, recs, make, args.folds, scorer,
                                               post=post)  # fmt: skip
            print(
                f"{name:32} {m['CIDEr-D']:8.3f} {m['CIDEr-D sd']:6.3f} {m['BLEU-4']:7.3f} "
                f"{m['CHAIR-i']:8.3f} {m['CHAIR-s']:8.3f} {m['words']:5.1f}  {m['place-prec']:.2f}",
                flush=True,
            )
            table.append({"variant": name, **m})
            if name == NEW:
                chosen = [(p.place_min, p.cue_min, p.activity_min, p.hedged_activity_min)
                          for p in policies]  # fmt: skip
                print(f"    per-fold (place_min, cue_min, activity_min, hedged_min): {chosen}")
            for key in list(held)[: args.show]:
                print(f"    {held[key]}   | ref: {refs[key][0]}")
        for style in ("alt-text", "detailed", "social") if variants else ():
            for name, make in (("today", None), ("new default", new_default)):
                m, _, _ = cross_validate(photos, refs, recs, make, args.folds, scorer, style)
                print(f"  {style:9} {name:12} CHAIR-i {m['CHAIR-i']:.3f} CHAIR-s "
                      f"{m['CHAIR-s']:.3f} words {m['words']:.1f}")  # fmt: skip
        policy = None
        if args.fit_all:  # the shipped DEFAULT_POLICY: the same selection, on all photos
            policy = new_default(list(recs.values()), photos)
    if args.speed:
        names = [p.name for p in photos]
        for label, flag in (("today", False), ("new default", True)):
            print(f"img/s end to end ({label}): {speed(args.data, names, flag):.2f}", flush=True)
    if policy is not None:
        print(policy.model_dump_json(indent=1, exclude={"name"}))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2, default=str))


if __name__ == "__main__":
    main()
