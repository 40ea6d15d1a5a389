"""Just enough English for template captions: articles, number words, counted nouns, lists.

Hand-written because the needs are tiny and fixed (a/an, numbers up to twelve, "a and b")
and an NLP dependency such as `inflect` would be a large install for four functions.
"""

from __future__ import annotations

import re

from captionkit.captioners.grounded.coco_words import pluralise

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six",
    "seven", "eight", "nine", "ten", "eleven", "twelve",
)  # fmt: skip

#: Words starting with a vowel letter but a consonant sound, and the reverse.
_CONSONANT_SOUND = ("uni", "use", "user", "one", "euro", "ufo")
_VOWEL_SOUND = ("hour", "honest", "honour", "heir")

#: From this many on, a group is "a group of ..." rather than a number: a small detector's
#: counts of three or more are often off by one, and captions say "a group" for them anyway.
GROUP_FROM = 3


def article(phrase: str) -> str:
    """ "a" or "an" for the phrase's first word, by sound where the spelling misleads."""
    word = phrase.strip().lower()
    if word.startswith(_VOWEL_SOUND):
        return "an"
    if word.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def counted(noun: str, n: int, adjective: str = "") -> str:
    """ "a black dog", "two dogs", "a group of people" (n >= GROUP_FROM).

    The adjective (a colour) is kept only for a single object: "two black dogs" would claim
    both are black when only the first was measured.
    """
    if n <= 1:
        return with_article(f"{adjective} {noun}".strip())
    if n >= GROUP_FROM:
        return f"a group of {pluralise(noun)}"
    return f"{number_word(n)} {pluralise(noun)}"


def join_list(items: list[str], conjunction: str = "and") -> str:
    """ "a", "a and b", "a, b and c" (no Oxford comma, as in most caption corpora)."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return items[0] if items else ""
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


#: Hedging verbs and adverbs. One hedge per claim reads as honest uncertainty; two stacked
#: on one claim ("appears to be probably indoors") read as a machine unsure of its grammar.
HEDGE_VERBS = (
    r"(?:appears?|seems?|looks?) to be|(?:appears?|seems?|looks?) like|"
    r"(?:may|might|could) (?:well )?be"
)
HEDGE_ADVERBS = r"probably|possibly|maybe|perhaps|likely|apparently|presumably|seemingly"
_STACKED = re.compile(
    rf"\b(?P<first>{HEDGE_VERBS}|{HEDGE_ADVERBS}),?\s+(?:{HEDGE_ADVERBS})\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])(\s+)")


def collapse_hedges(text: str) -> str:
    """Keep the first of two stacked hedges: "appears to be probably indoors" -> "appears to
    be indoors", "probably maybe" -> "probably". For text we do not compose ourselves (an
    LLM's), where the hedge cannot be fixed where it is made."""
    previous = None
    while previous != text:  # "seems to be probably possibly x": one hedge per pass
        previous = text
        text = _STACKED.sub(lambda m: m.group("first"), text)
    return text


def dedupe_sentences(text: str) -> str:
    """Drop a sentence that repeats an earlier one (case and spacing aside); the spacing
    between the sentences kept is left as it was."""
    pieces = _SENTENCE_END.split(text.strip())  # sentence, gap, sentence, gap, ...
    seen: set[str] = set()
    out: list[str] = []
    for i in range(0, len(pieces), 2):
        key = " ".join(pieces[i].lower().split())
        if key and key not in seen:
            seen.add(key)
            out += [pieces[i - 1] if out else "", pieces[i]]
    return "".join(out)
