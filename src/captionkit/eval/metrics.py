"""The COCO caption metrics behind one import, and :func:`score_all` for a whole system.

BLEU, ROUGE-L and CIDEr-D are pure Python and always available; METEOR and SPICE need Java
and pycocoevalcap (:mod:`captionkit.eval.java`) and are skipped with a one-line reason when
either is missing, so an evaluation never fails for want of a JVM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from captionkit.errors import ConfigError
from captionkit.eval.bleu import bleu
from captionkit.eval.cider import CiderD, cider_d
from captionkit.eval.rouge import rouge_l
from captionkit.eval.tokenize import PUNCTUATIONS, ptb_tokenize, ptb_tokenize_refs

__all__ = [
    "COCO_METRICS",
    "PUNCTUATIONS",
    "CiderD",
    "MetricResult",
    "bleu",
    "cider_d",
    "ptb_tokenize",
    "rouge_l",
    "score_all",
]

#: Metric names in the order reports show them (pycocoevalcap's names).
COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")
#: What ``--metrics`` accepts for the COCO family, mapped to the names above.
METRIC_GROUPS = {
    "bleu": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "meteor": ("METEOR",),
    "rouge": ("ROUGE-L",),
    "cider": ("CIDEr-D",),
    "spice": ("SPICE",),
}
DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")


@dataclass
class MetricResult:
    """Corpus scores by metric name, per-image scores, and why a metric was skipped."""

    corpus: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def score_all(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    warn: Callable[[str], None] | None = None,
) -> MetricResult:
    """Score one system's captions against references with the COCO protocol.

    Captions are PTB-tokenised once and shared by every metric. ``metrics`` names groups
    from :data:`METRIC_GROUPS`; Java-backed ones that cannot run are listed in
    ``result.skipped`` (and passed to ``warn``) instead of raising.
    """
    unknown = [m for m in metrics if m not in METRIC_GROUPS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_GROUPS)}")
    keys = list(candidates)
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ConfigError(f"no references for {len(missing)} image(s), e.g. {missing[0]!r}")
    cand_tok = dict(zip(keys, ptb_tokenize([candidates[k] for k in keys]), strict=True))
    refs_tok = ptb_tokenize_refs({k: list(references[k]) for k in keys})
    out = MetricResult(per_image={k: {} for k in keys})

    def put(name: str, corpus: float, per: Mapping[str, float]) -> None:
        out.corpus[name] = float(corpus)
        for k, v in per.items():
            out.per_image[k][name] = float(v)

    if "bleu" in metrics:
        corpus, per = bleu(cand_tok, refs_tok, tokenized=True)
        for i in range(4):
            put(f"BLEU-{i + 1}", corpus[i], {k: v[i] for k, v in per.items()})
    if "rouge" in metrics:
        put("ROUGE-L", *rouge_l(cand_tok, refs_tok, tokenized=True))
    if "cider" in metrics:
        put("CIDEr-D", *cider_d(cand_tok, refs_tok, tokenized=True))
    for name, group in (("meteor", "METEOR"), ("spice", "SPICE")):
        if name not in metrics:
            continue
        from captionkit.eval import java

        try:
            fn = java.meteor if name == "meteor" else java.spice
            put(group, *fn(cand_tok, refs_tok))
        except java.JavaMetricUnavailable as exc:
            out.skipped[group] = str(exc)
            if warn:
                warn(f"{group} skipped: {exc}")
    ordered = {m: out.corpus[m] for m in COCO_METRICS if m in out.corpus}
    out.corpus = ordered
    return out
