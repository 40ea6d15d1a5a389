"""Caption QA (``--qa``): check every caption, record why it looks wrong, retry or fail it.

Users report 1.5-3% glitched captions silently poisoning training sets; this is the guard.
Each caption gets ``CaptionOutput.extra["qa"]`` = ``{"passed", "flags", "details",
"clipscore", "unseen_objects", "seen_objects", "attempts", ...}`` and the run's summary counts
each flag (:meth:`QACaptioner.stats`). The checks, each a flag:

* ``empty``: no letter or digit at all.
* ``cut_off``: the text stops where no caption ends (:func:`cut_off`): on a separator
  (``,`` ``;`` ``:`` ``-`` ``(``, an open quote) or a trailing ellipsis (not in ``social``);
  on a word no English sentence ends with (an article, a conjunction, a preposition such as
  "of"/"with", a possessive, "is"); or without closing punctuation at its length limit (at
  least 85% of the style's character cap, or of ``max_new_tokens`` at ~4 characters per
  token, for prose styles), or where the backend reports it stopped at the token limit
  (``extra["finish_reason"]`` ``length``/``max_tokens`` or ``extra["truncated"]``). A word
  cut in half cannot be told from a real one without a dictionary; the length rule catches
  it where it happens (at the limit).
* ``repetition``: a generation loop (:func:`repetition`): one word three times in a row, a
  phrase of 2-12 words twice in a row ("the sky is a canvas, the sky is a canvas"), a run of
  8 or more words said twice anywhere, or the same sentence twice.
* ``refusal``: "I'm sorry", "I cannot", "As an AI", "unable to see the image" in the opening.
* ``preamble``: the answer opens with chatter instead of the caption: "The image shows",
  "This image depicts", "In this picture", "Sure! Here", "Here is", "Caption:"; and for
  ``alt-text``, "Image of"/"Picture of" (the style forbids them).
* ``low_clipscore``: CLIPScore (Hessel et al., 2.5 * max(cos, 0); a SigLIP model's match
  probability) below ``min_clipscore``. The score is recorded whenever ``clipscore`` is on.
* ``unseen_objects``: the caption names COCO objects (CHAIR's synonym table) the grounded
  object detector does not see: the grounded backend's own facts when it wrote the caption,
  else the detector run on the image (SSD at confidence 0.1: a low threshold, because the
  question is "is it there at all"). On the 150 dev photos' human captions it flags 94% of
  objects borrowed from another photo's captions but also 9% of objects people agree are
  there (at confidence 0.3: 97% and 17%): the detector misses small and unusual objects, so
  this flag has false alarms; ``objects=False`` turns the check off.

A caption passes with no flag. Among several candidates the first that passes is promoted
to the front. ``retry=N`` regenerates a failing caption up to N times with sampling and a new
seed (seed + attempt; temperature 0.7 unless the request samples already) and keeps the first
passing one, or else the best (fewest flags, then highest CLIPScore); a backend that gives the
same text again is not asked further. ``action="fail"`` turns a caption that still fails into
a failed image (``CaptionOutput.error``, retried by the next run), ``"mark"`` only records.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from captionkit.captioners.rerank import (
    Held,
    ImageWrapper,
    ObjectSeer,
    Scorers,
    named_objects,
)
from captionkit.errors import ConfigError
from captionkit.eval.clipscore import DEFAULT_CLIP
from captionkit.styles import STYLES
from captionkit.types import CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from captionkit.captioners.base import Captioner
    from captionkit.eval.clipscore import ClipScorer

#: Bump when a check changes (part of the store key: results are re-checked, not reused).
QA_VERSION = "1"
#: Every flag, in the order the summary prints them.
FLAGS = (
    "empty", "cut_off", "repetition", "refusal", "preamble", "low_clipscore", "unseen_objects",
)  # fmt: skip


class QAOptions(BaseModel):
    """What ``--qa`` checks and does with a failing caption."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    clipscore: bool = Field(default=True, description="score each caption with a CLIP model")
    clip_model: str = Field(default=DEFAULT_CLIP, description="HF CLIP/SigLIP id or folder")
    min_clipscore: float | None = Field(
        default=None, ge=0.0, description="flag (or fail) captions scoring below this"
    )
    retry: int = Field(default=0, ge=0, le=20, description="regenerate a failing caption N times")
    action: Literal["mark", "fail"] = "mark"
    objects: bool = Field(default=True, description="flag objects the detector does not see")
    detector: str = "ssd"
    detector_weights: str | None = None
    detector_conf: float = Field(default=0.1, ge=0.0, le=1.0)
    device: str = Field(default="auto", description="where the CLIP model runs")

    @model_validator(mode="after")
    def _threshold_needs_score(self) -> QAOptions:
        if self.min_clipscore is not None and not self.clipscore:
            raise ValueError("--qa-min-clipscore needs the CLIPScore check")
        return self

    @classmethod
    def build(cls, **values: Any) -> QAOptions:
        """Validated options from flags; a bad value is one ``ConfigError`` line."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            what = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"--qa: {where + ': ' if where else ''}{what}") from None


# -- the text checks ------------------------------------------------------------------------
_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CLOSERS = ".!?\"')]}»”’…"
_OPEN_ENDS = (",", ";", ":", "-", "–", "—", "(", "[", "/", "&", "“", "‘")
#: Words no English sentence (or tag) ends with: articles, conjunctions, prepositions that
#: need an object, possessives, auxiliaries.
_DANGLING = frozenset(
    "a an the and or but nor of with to from into onto at by for as than that whose which "
    "his her their its my your our this these those is are was were being "
    "very some several each every while because although".split()
)
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|as an ai\b|as a language model"
    r"|i (?:cannot|can't|can not|won't|will not|am unable to|am not able to)"
    r"|i'm (?:unable|not able) to"
    r"|(?:unable|not able) to (?:see|view|access|process|describe|open|identify|help)"
    r"|there is no image|no image (?:was|is|has been) (?:provided|attached|shared))",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|okay|absolutely)\b[,.!]?"
    r"|here(?:'s| is| are)\b"
    r"|caption\s*:"
    r"|(?:the|this) (?:image|picture|photo|photograph|pic|scene)"
    r"(?: (?:shows|depicts|features|captures|displays|presents|showcases|contains|is of))"
    r"|this is an? (?:image|picture|photo|photograph)\b"
    r"|in (?:the|this) (?:image|picture|photo|photograph)\b)",
    re.IGNORECASE,
)
_ALT_PREAMBLE = re.compile(r"^\W*(?:an? )?(?:image|picture|photo|photograph) of\b", re.I)
#: Prose styles, whose captions end like sentences (tags and tag-like styles do not).
_PROSE = ("short", "detailed", "alt-text", "social")
CHARS_PER_TOKEN = 4.0
LIMIT_SHARE = 0.85


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def empty(text: str) -> bool:
    return not any(ch.isalnum() for ch in text)


def cut_off(
    text: str,
    style: str = "short",
    max_new_tokens: int | None = None,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Why ``text`` looks cut off (see the module docstring), or None."""
    extra = extra or {}
    if str(extra.get("finish_reason", "")).lower() in ("length", "max_tokens") or extra.get(
        "truncated"
    ):
        return "the backend stopped at its token limit"
    body = _normalise(text).rstrip()
    if not body or empty(body):
        return None
    if body.endswith(_OPEN_ENDS):
        return f"ends on {body[-1]!r}"
    if style != "social" and (body.endswith("...") or body.endswith("…")):
        return "ends on an ellipsis"
    words = _WORDS.findall(body.lower())
    if body[-1].isalnum() and words and words[-1] in _DANGLING:
        return f"ends on {words[-1]!r}"
    if style in _PROSE and body[-1] not in _CLOSERS and not body.split()[-1].startswith("#"):
        spec = STYLES.get(style)
        if spec is not None and spec.max_chars and len(body) >= LIMIT_SHARE * spec.max_chars:
            return f"no closing punctuation at the {spec.max_chars}-character limit"
        if max_new_tokens and len(body) / CHARS_PER_TOKEN >= LIMIT_SHARE * max_new_tokens:
            return f"no closing punctuation at the {max_new_tokens}-token limit"
    return None


def repetition(text: str) -> str | None:
    """The repeated phrase of a generation loop, or None (see the module docstring)."""
    words = _WORDS.findall(_normalise(text).lower())
    n_words = len(words)
    for i in range(n_words - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return " ".join(words[i : i + 3])
    for n in range(2, min(12, n_words // 2) + 1):
        for i in range(n_words - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                return " ".join(words[i : i + n])
    long_run = 8
    seen: dict[tuple[str, ...], int] = {}
    for i in range(n_words - long_run + 1):
        gram = tuple(words[i : i + long_run])
        if gram in seen and i - seen[gram] >= long_run:
            return " ".join(gram)
        seen.setdefault(gram, i)
    sentences = [
        " ".join(_WORDS.findall(s.lower())) for s in re.split(r"(?<=[.!?])\s+", _normalise(text))
    ]
    counted = Counter(s for s in sentences if s)
    repeated = [s for s, k in counted.items() if k > 1]
    return repeated[0] if repeated else None


def refusal(text: str) -> str | None:
    """The refusal phrase in the opening (first 160 characters), or None."""
    match = _REFUSAL.search(_normalise(text)[:160])
    return match.group(0) if match else None


def preamble(text: str, style: str = "short") -> str | None:
    """The chatter the text opens with, or None."""
    body = _normalise(text)
    match = _PREAMBLE.match(body) or (_ALT_PREAMBLE.match(body) if style == "alt-text" else None)
    return match.group(0).strip() if match else None


def text_flags(
    text: str,
    style: str = "short",
    max_new_tokens: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Flag -> what triggered it, for the checks that need only the text."""
    if empty(text):
        return {"empty": "no letters or digits"}
    found: dict[str, str] = {}
    checks = (
        ("cut_off", cut_off(text, style, max_new_tokens, extra)),
        ("repetition", repetition(text)),
        ("refusal", refusal(text)),
        ("preamble", preamble(text, style)),
    )
    for flag, why in checks:
        if why:
            found[flag] = why
    return found


# -- the wrapper ------------------------------------------------------------------------------
@dataclasses.dataclass
class Verdict:
    """The checks of one caption."""

    flags: dict[str, str]
    clipscore: float | None = None
    unseen: list[str] = dataclasses.field(default_factory=list)
    seen: list[str] | None = None

    @property
    def passed(self) -> bool:
        return not self.flags

    def better_than(self, other: Verdict) -> bool:
        """Fewer flags, then a higher CLIPScore."""
        mine = (len(self.flags), -(self.clipscore or 0.0))
        theirs = (len(other.flags), -(other.clipscore or 0.0))
        return mine < theirs


def retry_request(request: CaptionRequest, attempt: int) -> CaptionRequest:
    """The request of retry ``attempt`` (1, 2, ...): sampling on, a new seed per attempt."""
    dec = request.decoding
    seed = (dec.seed if dec.seed is not None else 0) + attempt
    changes: dict[str, Any] = {"do_sample": True, "seed": seed}
    if not dec.do_sample:
        changes["temperature"] = 0.7
    return dataclasses.replace(request, decoding=dec.replace(**changes))


class QACaptioner(ImageWrapper):
    """``inner``'s captions checked, retried and marked or failed (module docstring)."""

    def __init__(
        self,
        inner: Captioner,
        options: QAOptions | None = None,
        *,
        scorer: ClipScorer | None = None,
        seer: ObjectSeer | None = None,
    ) -> None:
        super().__init__(inner)
        self.qa = options or QAOptions()
        #: Shared with a ``--rerank`` wrapper of the same model (:class:`Scorers`).
        self._scorer = scorer
        self.seer = seer or ObjectSeer(
            self.qa.detector, self.qa.detector_weights, conf=self.qa.detector_conf
        )
        self.counts: Counter[str] = Counter()

    @property
    def scorer(self) -> ClipScorer:
        if self._scorer is None:
            self._scorer = Scorers.get(self.qa.clip_model, self.qa.device)
        return self._scorer

    # -- judging ------------------------------------------------------------------------------
    def judge(
        self, held: Sequence[Held], outputs: Sequence[CaptionOutput], request: CaptionRequest
    ) -> list[list[Verdict]]:
        """A verdict for every candidate of every output (an empty list for a failed one)."""
        done = [i for i, o in enumerate(outputs) if o.error is None and o.candidates]
        verdicts: list[list[Verdict]] = [[] for _ in outputs]
        images = [held[i].image for i in done]
        texts = [[c.text for c in outputs[i].candidates] for i in done]
        scores = self.scorer.score_images(images, texts) if self.qa.clipscore and done else None
        seen = self.seer.seen(images, [outputs[i].extra for i in done]) if self.qa.objects else None
        for k, i in enumerate(done):
            for j, text in enumerate(texts[k]):
                flags = text_flags(
                    text, request.style, request.decoding.max_new_tokens, outputs[i].extra
                )
                v = Verdict(flags)
                if scores is not None:
                    v.clipscore = round(float(scores[k][j]), 4)
                    low = self.qa.min_clipscore
                    if low is not None and v.clipscore < low:
                        flags["low_clipscore"] = f"{v.clipscore} < {low}"
                if seen is not None and not flags.get("empty"):
                    v.seen = sorted(seen[k])
                    v.unseen = [w for w, c in named_objects(text) if c not in seen[k]]
                    if v.unseen:
                        flags["unseen_objects"] = ", ".join(v.unseen)
                verdicts[i].append(v)
        return verdicts

    @staticmethod
    def promote(output: CaptionOutput, verdicts: list[Verdict]) -> tuple[CaptionOutput, Verdict]:
        """The output with its first passing candidate first (else unchanged), and its verdict."""
        j = next((j for j, v in enumerate(verdicts) if v.passed), 0)
        if j == 0:
            return output, verdicts[0]
        candidates = [output.candidates[j], *output.candidates[:j], *output.candidates[j + 1 :]]
        return dataclasses.replace(output, candidates=candidates), verdicts[j]

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        inner_inputs = self.inner_inputs(inputs)
        outputs = list(self.inner.caption_batch(inner_inputs, request))
        best: list[Verdict | None] = [None] * len(outputs)
        promoted = [False] * len(outputs)
        for i, vs in enumerate(self.judge(inputs, outputs, request)):
            if vs:
                outputs[i], best[i] = self.promote(outputs[i], vs)
                promoted[i] = best[i] is not vs[0]
        attempts = [1] * len(outputs)
        stuck = [False] * len(outputs)
        for attempt in range(1, self.qa.retry + 1):
            todo = [
                i for i, v in enumerate(best) if v is not None and not v.passed and not stuck[i]
            ]
            if not todo:
                break
            again = self.inner.caption_batch(
                [inner_inputs[i] for i in todo], retry_request(request, attempt)
            )
            verdicts = self.judge([inputs[i] for i in todo], again, request)
            for i, out, vs in zip(todo, again, verdicts, strict=True):
                attempts[i] += 1
                if not vs:  # the retry itself failed: keep what we have
                    continue
                if [c.text for c in out.candidates] == [c.text for c in outputs[i].candidates]:
                    stuck[i] = True  # a deterministic backend: asking again changes nothing
                    continue
                out, v = self.promote(out, vs)
                current = best[i]
                if current is not None and v.better_than(current):
                    outputs[i], best[i] = out, v
        return [
            self._finish(o, v, attempts[i], promoted[i]) if v is not None else o
            for i, (o, v) in enumerate(zip(outputs, best, strict=True))
        ]

    def _finish(
        self, output: CaptionOutput, verdict: Verdict, attempts: int, promoted: bool
    ) -> CaptionOutput:
        record: dict[str, Any] = {
            "passed": verdict.passed,
            "flags": [f for f in FLAGS if f in verdict.flags],
            "details": verdict.flags,
            "attempts": attempts,
        }
        if promoted:
            record["promoted"] = True
        if verdict.clipscore is not None:
            record["clipscore"] = verdict.clipscore
            record["clip_model"] = self.scorer.name or self.qa.clip_model
        if verdict.seen is not None:
            record["unseen_objects"] = verdict.unseen
            record["seen_objects"] = verdict.seen
        extra = {**output.extra, "qa": record}
        with self._lock:
            self.counts["qa_checked"] += 1
            self.counts.update(f"qa_{f}" for f in record["flags"])
            if not verdict.passed:
                self.counts["qa_flagged"] += 1
            if attempts > 1:
                self.counts["qa_retried"] += 1
                if verdict.passed:
                    self.counts["qa_fixed_by_retry"] += 1
            if promoted:
                self.counts["qa_promoted"] += 1
            if not verdict.passed and self.qa.action == "fail":
                self.counts["qa_failed"] += 1
        if not verdict.passed and self.qa.action == "fail":
            why = "; ".join(f"{f}: {verdict.flags[f]}" for f in record["flags"])
            return CaptionOutput(candidates=[], extra=extra, error=f"caption QA failed ({why})")
        return CaptionOutput(candidates=output.candidates, extra=extra, error=output.error)

    # -- what the engine reads ------------------------------------------------------------------
    def fingerprint(self) -> str:
        qa = self.qa.model_dump(exclude={"device"})
        if not self.qa.objects:
            for key in ("detector", "detector_weights", "detector_conf"):
                qa.pop(key)
        if not self.qa.clipscore:
            qa.pop("clip_model")
        qa["version"] = QA_VERSION
        return json.dumps({"inner": self.inner.fingerprint(), "qa": qa}, sort_keys=True)

    def stats(self) -> dict[str, Any]:
        """The inner backend's usage plus ``qa_checked``, ``qa_flagged``, one ``qa_<flag>``
        per flag raised, ``qa_retried``, ``qa_fixed_by_retry``, ``qa_promoted``, ``qa_failed``
        (captions computed in this run; ones read back from the store were checked when made)."""
        order = ["qa_checked", "qa_flagged", *(f"qa_{f}" for f in FLAGS)]
        order += ["qa_retried", "qa_fixed_by_retry", "qa_promoted", "qa_failed"]
        with self._lock:
            return {**self.inner.stats(), **{k: self.counts[k] for k in order if self.counts[k]}}



def wrap_qa(inner: Captioner, options: QAOptions | None = None) -> Captioner:
    """``inner`` with every caption checked (``extra["qa"]``), retried and marked or failed.

    An unknown detector is a one-line ``ConfigError`` here; the CLIP model and the detector
    load at the first batch.
    """
    wrapper = QACaptioner(inner, options)
    if wrapper.qa.objects:
        wrapper.seer.check()
    return wrapper
