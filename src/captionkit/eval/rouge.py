"""ROUGE-L exactly as pycocoevalcap computes it (beta = 1.2, best precision and recall).

Hand-written for the same reasons as :mod:`captionkit.eval.bleu`: no Java, per-image dicts.
Upstream splits tokens on a single space, so an empty caption is one empty token; kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from captionkit.eval.bleu import _prepare


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    beta: float = 1.2,
    tokenized: bool = False,
) -> tuple[float, dict[str, float]]:
    """Mean ROUGE-L (F with beta = 1.2, best precision and recall over references) per image."""
    keys, cands, refs = _prepare(candidates, references, tokenized)
    per: dict[str, float] = {}
    for key, cand, ref_list in zip(keys, cands, refs, strict=True):
        tc = cand.split(" ")  # upstream splits on " ", so "" is one empty token
        prec: list[float] = []
        rec: list[float] = []
        for r in ref_list:
            tr = r.split(" ")
            lcs = _lcs(tr, tc)
            prec.append(lcs / float(len(tc)))
            rec.append(lcs / float(len(tr)))
        p, rc = max(prec), max(rec)
        per[key] = ((1 + beta**2) * p * rc) / float(rc + beta**2 * p) if p != 0 and rc != 0 else 0.0
    return (sum(per.values()) / len(per) if per else 0.0), per
