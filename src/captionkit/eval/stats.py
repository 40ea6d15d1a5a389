"""Caption statistics: length, vocabulary, distinct-n and novelty.

Computed on PTB tokens (:func:`captionkit.eval.tokenize.ptb_tokenize`) so lengths and
vocabularies agree with the metrics' view of the text.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from captionkit.eval.tokenize import ptb_tokenize


@dataclass
class CaptionStats:
    """Length distribution, vocabulary size, distinct-n and share of novel captions."""

    count: int
    mean_length: float
    median_length: float
    min_length: int
    max_length: int
    vocabulary: int
    distinct: dict[int, float] = field(default_factory=dict)
    novel: float | None = None
    lengths: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in {"lengths", "distinct"}}
        out.update({f"distinct-{n}": v for n, v in self.distinct.items()})
        return out


def caption_stats(
    captions: Sequence[str],
    references: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    *,
    max_n: int = 2,
) -> CaptionStats:
    """Statistics of ``captions``; ``novel`` is the share not found verbatim among ``references``.

    Distinct-n is the number of unique n-grams over the total number of n-grams in all
    captions (Li et al., 2016); novelty compares tokenised texts, so case and punctuation do
    not count as novelty.
    """
    toks = [t.split() for t in ptb_tokenize(list(captions))]
    lengths = [len(t) for t in toks]
    distinct = {}
    for n in range(1, max_n + 1):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        distinct[n] = len(set(grams)) / len(grams) if grams else 0.0
    novel = None
    if references is not None:
        pool = references.values() if isinstance(references, Mapping) else [references]
        seen = {s for refs in pool for s in ptb_tokenize(list(refs))}
        novel = sum(" ".join(t) not in seen for t in toks) / len(toks) if toks else 0.0
    return CaptionStats(
        count=len(toks),
        mean_length=statistics.fmean(lengths) if lengths else 0.0,
        median_length=float(statistics.median(lengths)) if lengths else 0.0,
        min_length=min(lengths, default=0),
        max_length=max(lengths, default=0),
        vocabulary=len({w for t in toks for w in t}),
        distinct=distinct,
        novel=novel,
        lengths=lengths,
    )
