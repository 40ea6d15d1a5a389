"""CIDEr-D as the COCO caption protocol computes it (pycocoevalcap's ``Cider``).

Hand-written rather than calling pycocoevalcap because self-critical training scores
thousands of sampled captions per step: :class:`CiderD` tokenises the references and builds
their document frequencies and TF-IDF vectors once, where pycocoevalcap rebuilds everything
per call. The arithmetic (including upstream's quirks) is kept so results equal
pycocoevalcap's to 1e-6:

* document frequencies and ``log(#images)`` come from the references being scored;
* the length penalty uses the number of *bigrams* of each sentence (upstream counts lengths
  at n-gram index 1), i.e. ``max(len - 1, 0)``;
* candidate weights are clipped at the reference weight, sigma = 6, scores are x10.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from captionkit.errors import ConfigError
from captionkit.eval.tokenize import ptb_tokenize, ptb_tokenize_refs

_N = 4
_SIGMA = 6.0


def _ngrams(sentence: str, n: int = _N) -> Counter:
    words = sentence.split()
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


class _Vec:
    """TF-IDF vectors per n-gram order, their norms and the bigram count."""

    __slots__ = ("length", "norms", "vecs")

    def __init__(self, counts: Counter, df: Mapping[tuple, float], log_n: float, n: int) -> None:
        self.vecs: list[dict[tuple, float]] = [{} for _ in range(n)]
        sq = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            value = float(tf) * (log_n - math.log(max(1.0, df.get(gram, 0.0))))
            self.vecs[k][gram] = value
            sq[k] += value * value
            if k == 1:
                length += tf
        self.norms = [math.sqrt(s) for s in sq]
        self.length = length


def _sim(hyp: _Vec, ref: _Vec, n: int, sigma: float) -> float:
    delta = float(hyp.length - ref.length)
    penalty = math.exp(-(delta**2) / (2 * sigma**2))
    total = 0.0
    for k in range(n):
        rv = ref.vecs[k]
        val = 0.0
        for gram, hv in hyp.vecs[k].items():
            r = rv.get(gram, 0.0)
            val += min(hv, r) * r
        if hyp.norms[k] != 0 and ref.norms[k] != 0:
            val /= hyp.norms[k] * ref.norms[k]
        total += val * penalty
    return total


class CiderD:
    """CIDEr-D against fixed references: document frequencies are computed once.

    ``references`` maps an image key to its reference captions. Pass ``tokenized=True`` when
    captions are already PTB-tokenised (lower-case tokens separated by spaces). Scoring a
    subset of the keys keeps the document frequencies of the whole reference set, as
    self-critical training does with its training corpus; :func:`cider_d` restricts the
    references to the candidates' keys, as the COCO protocol does.
    """

    def __init__(
        self,
        references: Mapping[str, Sequence[str]],
        *,
        tokenized: bool = False,
        n: int = _N,
        sigma: float = _SIGMA,
    ) -> None:
        if not references:
            raise ConfigError("CIDEr-D needs at least one image with reference captions")
        self.n, self.sigma, self.tokenized = n, sigma, tokenized
        ref_counts: dict[str, list[Counter]] = {}
        df: Counter = Counter()
        empty = [k for k, refs in references.items() if not refs]
        if empty:
            raise ConfigError(f"image {empty[0]!r} has no reference captions")
        if not tokenized:
            references = ptb_tokenize_refs(references)
        for key, toks in references.items():
            counts = [_ngrams(r, n) for r in toks]
            ref_counts[key] = counts
            df.update({g for c in counts for g in c})
        self.document_frequency = df
        self.log_n = math.log(float(len(ref_counts)))
        self._refs = {
            key: [_Vec(c, df, self.log_n, n) for c in counts] for key, counts in ref_counts.items()
        }

    def score_one(self, key: str, candidate: str) -> float:
        """CIDEr-D of one (already tokenised if ``tokenized``) candidate for image ``key``."""
        refs = self._refs.get(key)
        if refs is None:
            raise ConfigError(f"no references for image {key!r}")
        text = candidate if self.tokenized else ptb_tokenize([candidate])[0]
        hyp = _Vec(_ngrams(text, self.n), self.document_frequency, self.log_n, self.n)
        total = sum(_sim(hyp, ref, self.n, self.sigma) for ref in refs)
        return total / self.n / len(refs) * 10.0

    def score(self, candidates: Mapping[str, str]) -> tuple[float, dict[str, float]]:
        """Mean CIDEr-D over ``candidates`` (key -> caption) and the per-image scores."""
        if not candidates:
            return 0.0, {}
        keys = list(candidates)
        texts = [candidates[k] for k in keys]
        if not self.tokenized:
            texts = ptb_tokenize(texts)
        per: dict[str, float] = {}
        for key, text in zip(keys, texts, strict=True):
            refs = self._refs.get(key)
            if refs is None:
                raise ConfigError(f"no references for image {key!r}")
            hyp = _Vec(_ngrams(text, self.n), self.document_frequency, self.log_n, self.n)
            total = sum(_sim(hyp, ref, self.n, self.sigma) for ref in refs)
            per[key] = total / self.n / len(refs) * 10.0
        return sum(per.values()) / len(per), per


def cider_d(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    tokenized: bool = False,
) -> tuple[float, dict[str, float]]:
    """Corpus CIDEr-D (the COCO protocol's "CIDEr") and per-image scores.

    Document frequencies come from the references of exactly the images in ``candidates``.
    """
    missing = [k for k in candidates if k not in references]
    if missing:
        raise ConfigError(f"no references for {len(missing)} image(s), e.g. {missing[0]!r}")
    scorer = CiderD({k: references[k] for k in candidates}, tokenized=tokenized)
    return scorer.score(candidates)
