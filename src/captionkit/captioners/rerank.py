"""Re-rank a backend's N candidates by how well each matches the image (``--rerank clip``).

Any backend's ``--num-captions N`` candidates are scored against the image by a CLIP-like
model (an HF CLIP or SigLIP id or a local folder: ``clip``, ``clip:MODEL``) and put best first,
each :class:`Candidate` carrying its score. The score of candidate ``c`` is

    score(c) = (1 - w) * sim(c) + w * agreement(c)

* ``sim``: the image-text similarity on a 0..1 scale: max(cos, 0) for CLIP (CLIP-S / 2.5,
  Hessel et al.'s CLIPScore without its 2.5 stretch), the sigmoid match probability for SigLIP;
* ``agreement``: the share of the COCO objects the caption names (CHAIR's synonym table,
  :func:`named_objects`) that the object detector sees in the image; a caption naming no
  object scores 1 when the detector saw nothing and 0.5 when it saw something (not wrong,
  but silent about what is there);
* ``w`` (``--rerank-facts-weight``): by default 0.5 over the ``grounded`` backend, whose facts
  come free with each output, and 0 over any other backend (no detector runs); any value in
  [0, 1] may be given, and above 0 over another backend the grounded detector (SSD at
  confidence 0.1: the question is whether an object is there at all) runs on the image.

``CaptionOutput.extra["rerank"]`` records the model, the final scores in the new order, the
raw similarity (CLIP-S or SigLIP probability), the agreement and the backend's own scores.

Backends that cannot return N candidates (``multiple_candidates`` False) are refused with one
line when N > 1, as the engine refuses them without ``--rerank``: calling a backend N times with
new seeds would multiply its cost and, for a deterministic one, give N copies of one caption.

The wrapper needs the image, so :meth:`ImageWrapper.preprocess` keeps it (shrunk to at most
:data:`KEEP_SIDE` pixels) beside the inner backend's own input (:class:`Held`); stacked
wrappers (``--rerank`` under ``--qa``) share one copy. :class:`ObjectSeer` and
:func:`named_objects` are shared with :mod:`captionkit.captioners.qa`.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from captionkit.captioners.base import Captioner
from captionkit.errors import ConfigError
from captionkit.eval.clipscore import DEFAULT_CLIP
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL.Image import Image

    from captionkit.eval.clipscore import ClipScorer

#: Bump when re-ranking changes what it writes for the same candidates (part of the store key).
RERANK_VERSION = "1"
#: The image kept beside the backend's input is shrunk to this longest side (CLIP sees 224 px,
#: the SSD detector 300 px: more only costs memory while images wait for the model).
KEEP_SIDE = 640
#: The facts weight over the grounded backend when none is given.
GROUNDED_FACTS_WEIGHT = 0.5


class Held(NamedTuple):
    """A preprocessed input and the image it came from (what the wrappers need to judge)."""

    input: Any
    image: Any


def keep_image(image: Image) -> Image:
    """A copy small enough to hold while the image waits for the model."""
    if max(image.size) <= KEEP_SIDE:
        return image
    small = image.copy()
    small.thumbnail((KEEP_SIDE, KEEP_SIDE))
    return small


class ImageWrapper(Captioner):
    """A backend around another one that also needs the image: delegates everything the
    engine reads (name, model label, capabilities, version, batch size, estimate, stats,
    close) to ``inner`` and keeps the image beside its input."""

    def __init__(self, inner: Captioner) -> None:
        super().__init__(inner.model, inner.options)
        self.inner = inner
        # Instance attributes mirror the inner backend's class-level declarations, so the
        # store key's backend name and every capability check read the real backend's.
        for attr in (
            "name", "extra", "description", "default_batch_size", "version", "thread_safe",
            "accepts_prompt", "multiple_candidates", "hosted",
        ):  # fmt: skip
            setattr(self, attr, getattr(inner, attr))
        self._lock = threading.Lock()
        #: The shared CLIP scorer a subclass took from :class:`Scorers` (released at close).
        self._scorer: Any = None

    @property
    def model_label(self) -> str:
        return self.inner.model_label

    def preprocess(self, image: Image, request: CaptionRequest) -> Held:
        prepared = self.inner.preprocess(image, request)
        if isinstance(self.inner, ImageWrapper):
            return prepared  # already a Held with the image: one copy for the whole stack
        return Held(prepared, keep_image(image))

    def inner_inputs(self, inputs: Sequence[Held]) -> list[Any]:
        """What the inner backend's caption_batch takes."""
        if isinstance(self.inner, ImageWrapper):
            return list(inputs)
        return [h.input for h in inputs]

    @property
    def decode_size(self) -> int | None:
        """The inner model's draft side, but never below what the CLIP copy needs."""
        side = self.inner.decode_size
        return None if side is None else max(side, 384)  # SigLIP-384 at most

    def estimate(
        self, sizes: list[tuple[int, int]], request: CaptionRequest | None = None
    ) -> dict[str, Any] | None:
        return self.inner.estimate(sizes, request)

    def stats(self) -> dict[str, Any]:
        return dict(self.inner.stats())

    def close(self) -> None:
        try:
            if self._scorer is not None:
                Scorers.release(self._scorer)
                self._scorer = None
        finally:
            self.inner.close()


# -- objects the caption names, objects the detector sees ------------------------------------
#: "orange" alone is usually the colour ("an orange kite"); "oranges" still counts, as in the
#: grounded writer's own word list (captioners/grounded/coco_words.py).
_COLOUR_ORANGE = re.compile(r"\borange\b", re.IGNORECASE)


def named_objects(text: str) -> list[tuple[str, str]]:
    """``(word, COCO category)`` for each object the caption names, each category once, by
    CHAIR's synonym table (:func:`captionkit.eval.chair.caption_objects`)."""
    from captionkit.eval.chair import caption_objects

    found: dict[str, str] = {}
    for word, category in caption_objects(_COLOUR_ORANGE.sub(" ", text)):
        found.setdefault(category, word)
    return [(word, category) for category, word in found.items()]


def agreement(text: str, seen: set[str]) -> float:
    """Share of the caption's named COCO objects in ``seen`` (see the module docstring for a
    caption naming none)."""
    named = [category for _, category in named_objects(text)]
    if not named:
        return 1.0 if not seen else 0.5
    return sum(c in seen for c in named) / len(named)


def facts_seen(extra: dict[str, Any]) -> set[str] | None:
    """The classes the grounded backend's detector saw, from its ``extra["facts"]``: the ones
    its caption may state and the ones its precision stage held back. None without facts."""
    facts = extra.get("facts")
    if not isinstance(facts, dict):
        return None
    seen = set(facts.get("counts") or {})
    seen.update(o.get("label") for o in facts.get("objects") or [] if o.get("label"))
    seen.update(r.get("label") for r in facts.get("rejected") or [] if r.get("label"))
    return seen


class ObjectSeer:
    """What the object detector sees in each image: read from the grounded backend's facts
    when an output carries them, else found by running a grounded detector (built on first
    use with :func:`captionkit.captioners.grounded.detectors.load_detector`)."""

    def __init__(
        self,
        detector: str = "ssd",
        weights: str | None = None,
        conf: float = 0.1,
        threads: int | None = None,
        device: str = "auto",
    ) -> None:
        self.kind = detector
        self.weights = weights
        self.conf = conf
        self.threads = threads
        self.device = device
        #: The detector (anything with ``detect_batch(arrays)``); tests may set a fake one.
        self.detector: Any = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """An unknown detector name fails now, in one line, not at the first batch."""
        from captionkit.captioners.grounded.detectors import check_detector

        check_detector(self.kind)

    def key(self) -> dict[str, Any]:
        return {"detector": self.kind, "weights": self.weights, "conf": self.conf}

    def _detector(self) -> Any:
        with self._lock:
            if self.detector is None:
                from captionkit.captioners.grounded.detectors import load_detector

                try:
                    self.detector = load_detector(
                        self.kind, self.weights, conf=self.conf, threads=self.threads,
                        device=self.device,
                    )  # fmt: skip
                except ModuleNotFoundError as exc:
                    from captionkit.errors import MissingDependencyError

                    package = (exc.name or "a module").split(".")[0]
                    raise MissingDependencyError(package, "grounded", "the object check") from exc
            return self.detector

    def seen(self, images: Sequence[Image], extras: Sequence[dict[str, Any]]) -> list[set[str]]:
        """One set of COCO classes per image; the detector runs only where no facts are."""
        import numpy as np

        found: list[set[str] | None] = [facts_seen(e) for e in extras]
        todo = [i for i, s in enumerate(found) if s is None]
        if todo:
            arrays = [np.asarray(images[i].convert("RGB")) for i in todo]
            for i, detections in zip(todo, self._detector().detect_batch(arrays), strict=True):
                found[i] = {d.label for d in detections}
        return [s or set() for s in found]


# -- the re-ranker ----------------------------------------------------------------------------
def parse_spec(spec: str) -> str:
    """``clip`` -> the default CLIP; ``clip:MODEL`` -> MODEL (HF CLIP/SigLIP id or folder)."""
    kind, _, model = (spec or "").strip().partition(":")
    if kind != "clip" or (":" in spec and not model.strip()):
        raise ConfigError(
            f"--rerank takes clip or clip:MODEL (an HF CLIP or SigLIP id or folder), not {spec!r}"
        )
    return model.strip() or DEFAULT_CLIP


def check_rerank(spec: str, num_captions: int, weight_facts: float | None = None) -> str:
    """Run assembly's check before any model loads (the CLIP model id is returned): the spec,
    the weight, and that there are candidates to choose from."""
    model = parse_spec(spec)
    if weight_facts is not None and not 0.0 <= weight_facts <= 1.0:
        raise ConfigError(f"--rerank-facts-weight must be in [0, 1], not {weight_facts}")
    if num_captions < 2:
        raise ConfigError("--rerank chooses among candidates: add --num-captions N (2 or more)")
    return model


class Scorers:
    """CLIP scorers loaded once per (model, device) and shared by the wrappers of one process
    (``--rerank clip --qa`` load one CLIP)."""

    _loaded: ClassVar[dict[tuple[str, str], ClipScorer]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls, model: str, device: str = "auto") -> ClipScorer:
        with cls._lock:
            if (model, device) not in cls._loaded:
                from captionkit.eval.clipscore import ClipScorer

                cls._loaded[(model, device)] = ClipScorer.load(model, device=device)
            return cls._loaded[(model, device)]

    @classmethod
    def release(cls, scorer: ClipScorer) -> None:
        with cls._lock:
            for key, value in list(cls._loaded.items()):
                if value is scorer:
                    del cls._loaded[key]


class RerankCaptioner(ImageWrapper):
    """``inner``'s candidates re-ordered by CLIP similarity (and facts agreement); see the
    module docstring for the score."""

    def __init__(
        self,
        inner: Captioner,
        spec: str = "clip",
        weight_facts: float | None = None,
        *,
        device: str = "auto",
        scorer: ClipScorer | None = None,
        seer: ObjectSeer | None = None,
    ) -> None:
        super().__init__(inner)
        self.spec = spec
        self.clip_model = parse_spec(spec)
        if weight_facts is None:
            weight_facts = GROUNDED_FACTS_WEIGHT if inner.name == "grounded" else 0.0
        if not 0.0 <= weight_facts <= 1.0:
            raise ConfigError(f"--rerank-facts-weight must be in [0, 1], not {weight_facts}")
        self.weight_facts = float(weight_facts)
        self.device = device
        self._scorer = scorer
        self.seer = seer or ObjectSeer()
        self.counts: Counter[str] = Counter()

    @property
    def scorer(self) -> ClipScorer:
        """The CLIP model, loaded on first use (a bad id fails the run in one line)."""
        if self._scorer is None:
            self._scorer = Scorers.get(self.clip_model, self.device)
        return self._scorer

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        if request.num_captions > 1 and not self.inner.multiple_candidates:
            raise ConfigError(
                f"backend '{self.inner.name}' returns one caption per image, so --rerank has "
                "nothing to choose from; drop --num-captions or pick a backend with candidates"
            )
        outputs = self.inner.caption_batch(self.inner_inputs(inputs), request)
        done = [i for i, o in enumerate(outputs) if o.error is None and o.candidates]
        if not done:
            return outputs
        images = [inputs[i].image for i in done]
        texts = [[c.text for c in outputs[i].candidates] for i in done]
        sims = self.scorer.score_images(images, texts)
        seen: list[set[str]] | None = None
        if self.weight_facts > 0:
            seen = self.seer.seen(images, [outputs[i].extra for i in done])
        result = list(outputs)
        for k, i in enumerate(done):
            result[i] = self._ranked(outputs[i], sims[k], seen[k] if seen is not None else None)
        with self._lock:
            self.counts["reranked"] += len(done)
            self.counts["rerank_changed_best"] += sum(
                result[i].candidates[0].text != outputs[i].candidates[0].text for i in done
            )
        return result

    def _ranked(self, output: CaptionOutput, sims: Any, seen: set[str] | None) -> CaptionOutput:
        w = self.weight_facts
        top = self.scorer.max_score
        raw = [float(s) for s in sims]
        agree = [agreement(c.text, seen) for c in output.candidates] if seen is not None else None
        combined = [
            (1 - w) * (s / top) + (w * agree[j] if agree is not None else 0.0)
            for j, s in enumerate(raw)
        ]
        order = sorted(range(len(raw)), key=lambda j: (-combined[j], j))  # ties: backend order
        record: dict[str, Any] = {
            "model": self.scorer.name or self.clip_model,
            "kind": self.scorer.kind,
            "scores": [round(combined[j], 4) for j in order],
            "similarity": [round(raw[j], 4) for j in order],
            "weight_facts": w,
            "inner_scores": [output.candidates[j].score for j in order],
        }
        if agree is not None:
            record["agreement"] = [round(agree[j], 4) for j in order]
        extra = dict(output.extra)
        extra["rerank"] = record
        candidates = [Candidate(output.candidates[j].text, round(combined[j], 4)) for j in order]
        return CaptionOutput(candidates=candidates, extra=extra, error=output.error)

    def fingerprint(self) -> str:
        rerank: dict[str, Any] = {
            "model": self.clip_model,
            "weight_facts": self.weight_facts,
            "version": RERANK_VERSION,
        }
        if self.weight_facts > 0:
            rerank["objects"] = self.seer.key()
        return json.dumps({"inner": self.inner.fingerprint(), "rerank": rerank}, sort_keys=True)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.inner.stats(), **self.counts}



def wrap_rerank(
    inner: Captioner,
    spec: str = "clip",
    weight_facts: float | None = None,
    *,
    device: str = "auto",
) -> Captioner:
    """``inner`` with its candidates re-ranked by ``spec`` (``clip`` or ``clip:MODEL``).

    ``weight_facts``: the facts-agreement weight ``w`` (None: 0.5 over ``grounded``, else 0).
    Bad values are one-line ``ConfigError``s here, before any model loads; the CLIP model
    itself loads at the first batch.
    """
    wrapper = RerankCaptioner(inner, spec, weight_facts, device=device)
    if wrapper.weight_facts > 0:
        wrapper.seer.check()
    return wrapper
