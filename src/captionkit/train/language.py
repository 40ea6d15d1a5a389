"""A cheap "is this caption in the expected language?" heuristic, on purpose.

Two signals, no model: the share of letters that are Latin (for Latin-script languages), and
how many words are common words (function words plus frequent caption words) of the
expected language versus of other known ones. Good enough to catch a German or Chinese
caption in an English set; not a language identifier (a short caption with no common words
passes; so do proper-noun lists).
"""

from __future__ import annotations

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "a an the of in on at with and or is are was were be to for from by his her their its "
        "this that these those two three near while into onto over under up down out some "
        "another other man woman people dog boy girl child children kids young little small large "
        "playing plays running runs sitting standing wearing group person white black red blue "
        "green water street grass".split()
    ),
    "de": frozenset(
        "der die das ein eine einer einem einen und ist sind mit auf im in am von zu den dem "
        "des nicht zwei drei mann frau hund über unter vor neben".split()
    ),
    "fr": frozenset(
        "le la les un une des et est sont avec sur dans du de au aux en par pour deux trois "
        "qui noir "
        "homme femme chien sous devant".split()
    ),
    "es": frozenset(
        "el la los las un una unos unas y es son con en sobre del de al por para dos tres "
        "hombre mujer perro bajo frente".split()
    ),
    "it": frozenset(
        "il lo la gli le un una uno e è sono con su nel nella del della di da per due tre "
        "uomo donna cane sotto davanti".split()
    ),
    "nl": frozenset(
        "de het een en is zijn met op in van naar voor twee drie man vrouw hond onder".split()
    ),
    "pt": frozenset(
        "o a os as um uma e é são com em no na do da de por para dois três homem mulher "
        "cachorro sob".split()
    ),
}
LATIN = frozenset(STOPWORDS)


def language_problem(text: str, expected: str = "en", *, min_ascii: float = 0.8) -> str | None:
    """Why ``text`` looks not to be in ``expected`` (None when it looks fine or cannot tell)."""
    expected = expected.lower()
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "no letters"
    if expected in LATIN:
        latin = sum(c.isascii() or "\u00c0" <= c <= "\u024f" for c in letters) / len(letters)
        if latin < min_ascii:
            return f"{latin:.0%} Latin letters"
    if expected not in STOPWORDS:
        return None
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    words = [w for w in words if w]
    mine_set = STOPWORDS[expected]
    mine = sum(w in mine_set for w in words)
    if len(words) >= 6 and mine == 0:
        return f"no common '{expected}' words"
    # other languages score only on words the expected one does not share ("a", "in", "de")
    rates = {
        lang: sum(w in sw and w not in mine_set for w in words)
        for lang, sw in STOPWORDS.items()
        if lang != expected
    }
    other, hits = max(rates.items(), key=lambda kv: kv[1])
    if hits >= 2 and hits > 1.5 * mine:
        return f"looks like '{other}' ({hits} of {len(words)} words are common '{other}' words)"
    return None
