"""BLEU-1..4 exactly as pycocoevalcap computes it.

Hand-written (a few dozen lines) so the default path needs neither Java nor pycocoevalcap,
and so scores come back per image as a dict. Upstream's conventions are kept: corpus BLEU with
the "closest" reference length and per-image BLEU with the same smoothing constants.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from captionkit.errors import ConfigError
from captionkit.eval.tokenize import ptb_tokenize, ptb_tokenize_refs

_SMALL = 1e-9
_TINY = 1e-15


def _prepare(
    candidates: Mapping[str, str], references: Mapping[str, Sequence[str]], tokenized: bool
) -> tuple[list[str], list[str], list[list[str]]]:
    keys = list(candidates)
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ConfigError(f"no references for {len(missing)} image(s), e.g. {missing[0]!r}")
    cands = [candidates[k] for k in keys]
    refs = [list(references[k]) for k in keys]
    if not tokenized:
        cands = ptb_tokenize(cands)
        refs = list(ptb_tokenize_refs(dict(zip(keys, refs, strict=True))).values())
    return keys, cands, refs


def _ngram_counts(words: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def bleu(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    n: int = 4,
    tokenized: bool = False,
) -> tuple[list[float], dict[str, list[float]]]:
    """Corpus BLEU-1..n and, per image, its own BLEU-1..n (pycocoevalcap's ``Bleu``)."""
    keys, cands, refs = _prepare(candidates, references, tokenized)
    total_guess, total_correct = [0] * n, [0] * n
    total_test, total_ref = 0, 0.0
    per: dict[str, list[float]] = {}
    for key, cand, ref_list in zip(keys, cands, refs, strict=True):
        maxcounts: dict[tuple, int] = {}
        ref_lens = []
        for r in ref_list:
            words = r.split()
            ref_lens.append(len(words))
            for gram, c in _ngram_counts(words, n).items():
                if c > maxcounts.get(gram, 0):
                    maxcounts[gram] = c
        words = cand.split()
        testlen = len(words)
        reflen = min((abs(rl - testlen), rl) for rl in ref_lens)[1]  # "closest"
        guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, c in _ngram_counts(words, n).items():
            correct[len(gram) - 1] += min(maxcounts.get(gram, 0), c)
        total_test += testlen
        total_ref += reflen
        scores, prod = [], 1.0
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            prod *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
            scores.append(prod ** (1.0 / (k + 1)))
        ratio = (testlen + _TINY) / (reflen + _SMALL)
        if ratio < 1:
            scores = [s * math.exp(1 - 1 / ratio) for s in scores]
        per[key] = scores
    corpus, prod = [], 1.0
    for k in range(n):
        prod *= float(total_correct[k] + _TINY) / (total_guess[k] + _SMALL)
        corpus.append(prod ** (1.0 / (k + 1)))
    ratio = (total_test + _TINY) / (total_ref + _SMALL)
    if ratio < 1:
        corpus = [s * math.exp(1 - 1 / ratio) for s in corpus]
    return corpus, per
