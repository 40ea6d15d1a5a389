"""Score caption candidates by how well they agree with the facts, and order them.

A cheap stand-in for CLIP re-ranking that needs no model: a candidate earns points for each
detected object class it names (weighted by detection confidence), loses more for each COCO
object it names that was not detected (the hallucinations CHAIR counts), and loses a little
when it is too short to say anything or long enough to ramble.
"""

from __future__ import annotations

from captionkit.captioners.grounded.coco_words import mentioned_classes
from captionkit.captioners.grounded.facts import Facts
from captionkit.types import Candidate

MENTION_REWARD = 1.0
HALLUCINATION_PENALTY = 2.0
LENGTH_PENALTY = 0.5

#: Word counts that read as a caption for each style; outside them the length penalty applies.
LENGTH_RANGE: dict[str, tuple[int, int]] = {
    "short": (5, 20),
    "alt-text": (4, 22),
    "detailed": (15, 120),
    "social": (6, 60),
    "training": (3, 60),
}


def hallucinated(text: str, facts: Facts) -> list[str]:
    """COCO classes the text names that the facts do not contain."""
    return [c for c in mentioned_classes(text) if c not in facts.counts]


def score_text(text: str, facts: Facts, style: str = "short") -> float:
    """Agreement of one candidate with the facts (higher is better)."""
    mentioned = mentioned_classes(text)
    best_score = {o.label: 0.0 for o in facts.objects}
    for o in facts.objects:
        best_score[o.label] = max(best_score[o.label], o.score)
    score = 0.0
    for cls in mentioned:
        if cls in best_score:
            score += MENTION_REWARD * best_score[cls]
        else:
            score -= HALLUCINATION_PENALTY
    lo, hi = LENGTH_RANGE.get(style, (3, 60))
    words = len(text.split())
    if words < lo:
        score -= LENGTH_PENALTY * (lo - words) / lo
    elif words > hi:
        score -= LENGTH_PENALTY * (words - hi) / hi
    return round(score, 4)


def rerank(texts: list[str], facts: Facts, style: str = "short") -> list[Candidate]:
    """Candidates best first, ``Candidate.score`` set; ties keep the writer's order."""
    unique = list(dict.fromkeys(t for t in texts if t))
    scored = [Candidate(text=t, score=score_text(t, facts, style)) for t in unique]
    order = sorted(range(len(scored)), key=lambda i: (-(scored[i].score or 0.0), i))
    return [scored[i] for i in order]
