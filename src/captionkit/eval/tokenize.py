"""The COCO caption protocol's tokeniser, in Python: Stanford PTBTokenizer 3.4.1 reproduced.

Every COCO metric is computed on captions that went through
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` (stanford-corenlp-3.4.1,
the jar pycocoevalcap ships) followed by removal of a fixed list of punctuation tokens. BLEU,
ROUGE-L and CIDEr-D are only comparable with published numbers if the tokens are the same,
and a JVM per evaluation is a heavy price for splitting words, so the lexer is re-implemented
here: hand-written because no maintained Python package reproduces this exact tokeniser (NLTK's
Treebank tokeniser differs on quotes, brackets, abbreviations and assimilations).

The lexer follows PTBLexer.flex: at each position every rule is tried and the longest match
wins (a rule's trailing context counts toward its length, as in JFlex), ties going to the rule
listed first. The rules cover what appears in captions and ordinary prose (words, clitics,
assimilations such as "gonna", abbreviations, acronyms, numbers, fractions, currency, quotes,
brackets, dashes, ellipses, URLs, e-mail addresses, SGML tags); ``tests/eval`` checks the
output against the real jar on the Flickr8k dev sample and synthetic edge cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

#: Tokens pycocoevalcap drops after tokenising (its ``PUNCTUATIONS``). The bracket tokens are
#: compared before lower-casing upstream, so "-lrb-" survives there and survives here too.
PUNCTUATIONS = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)

# --- character classes (Java's [:letter:] / [:digit:] approximated by Unicode categories) ---
# Python's \w also holds numeric characters such as superscripts and vulgar fractions, which
# Java's [:letter:] does not; they are excluded here.
_NOTLETTER = r"\W\d_\u00B2\u00B3\u00B9\u00BC-\u00BE\u2150-\u218F\u2070-\u209F\u2460-\u24FF"
_L = rf"[^{_NOTLETTER}]"  # a letter
_LD = r"(?:[^\W_]|\d)"  # a letter or digit
_MARKS = r"[\u00AD\u0300-\u036F\u0483-\u0487\u0591-\u05BD\u064B-\u065E\u0900-\u0903]"
_WORDCH = rf"(?:[^{_NOTLETTER}]|{_MARKS})"
_WORD = _WORDCH + "+"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = r"(?:['\u0092\u2019\u0091\u2018\u201B]|&apos;)"
_HYPHEN = r"[-_\u058A\u2010\u2011]"
_SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
_SPACENL = r"[ \t\u00A0\u2000-\u200A\u3000\r\n\u2028\u2029\u000B\u000C\u0085]"
_SGML = r"<\/?[A-Za-z!?][^>\r\n]*>"
_SENTEND = _SPACENL + r"(?:" + _SPACENL + r"|[A-Z]|" + _SGML + r"|$)"
_NUM = r"(?:\d*(?:[.:,\u00AD\u066B\u066C]\d+)+|\d+)"
_REDAUX = _APOS + r"(?:[msdMSD]|re|ve|ll)"
_SREDAUX = r"n" + _APOSETC + r"t"
_ACRO = (
    r"(?:[A-Za-z](?:\.[A-Za-z])+|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S"
    r"|U\.S\.-(?:U\.K|U\.S\.S\.R))"
)
_ABMONTH = r"(?i:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)"
_ABDAYS = r"(?i:Mon|Tue|Tues|Wed|Thu|Thurs|Fri)"
_ABSTATE = (
    r"(?:(?i:Ala|Ariz)|[A](?i:rk)|(?i:Calif|Colo|Conn|Dak|Del|Fla|Ga)|[I](?i:ll)|"
    r"(?i:Ind|Kans?|Ky|La)|[M](?i:ass)|(?i:Md|Mich|Minn)|[M](?i:iss)|(?i:Mo|Mont|Neb|Nev|Okla)|"
    r"[O](?i:re)|(?i:Pa|Penn|Tenn|Tex|Va|Vt)|[W](?i:ash)|(?i:Wisc?|Wyo))"
)
_ABTITLE = (
    r"(?:(?i:Mr|Mrs|Ms)|[M](?i:iss)|(?i:Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|"
    r"Adm|Rev|Maj|Sgt|Cpl|Pvt|Mt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det))"
)
_ABPTIT = r"(?i:Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq)"
_ABCOMP = r"(?i:Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys)"
_ABCOMP2 = r"(?i:Invt|Elec|Natl|M[ft]g)"
_ABNUM = r"(?i:Nos?|Prop|Ph|tel|est|ext|sq|ft)"
_ABBREV1 = (
    r"(?:"
    + "|".join([_ABMONTH, _ABDAYS, _ABSTATE, _ABCOMP, _ABNUM, _ABPTIT])
    + r"|(?i:etc|al|seq))\."
)
# Alternatives longest first: Python's regex takes the first that matches, JFlex the longest.
_ABBREV4 = r"(?:" + _ACRO + r"|" + _ABTITLE + r"|(?i:vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS)|"
_ABBREV4 += _ABCOMP2 + r"|[A-Za-z])"
_THING_PART = r"(?:[dDoOlL]" + _APOSETC + _LD + r")?" + _LD + r"+"
_THING = _THING_PART + r"(?:" + _HYPHEN + _THING_PART + r")*"
_HTHING = r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|" + _ACRO + r"\.))+"
_INSENTP = r"[,;:\u3001]"
# Words after which an acronym's or a single letter's period is taken as a sentence end.
_SENT_STARTERS = (
    r"(?:About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It"
    r"|Last|Many|More|Mr\.|Ms\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then"
    r"|There|These|They|This|We|When|While|What|Yet|You)"
)
_URLCH = r"[^ \t\n\f\r\"<>|()]"
_URLEND = r"[^ \t\n\f\r\"<>|.!?(){},-]"
_MISC = (
    r"[+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7"
    r"\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u2100-\u214F"
    r"\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]"
)


def _latex_quote(tok: str, left: bool) -> str:
    out = re.sub(r"&apos;|'", "`" if left else "'", tok)
    out = re.sub(r"\"|&quot;", "``" if left else "''", out)
    out = re.sub("[\u0091\u2018\u201b\u2039]", "`", out)
    out = re.sub("[\u0092\u2019\u203a]", "'", out)
    out = re.sub("[\u0093\u201c\u00ab]", "``", out)
    return re.sub("[\u0094\u201d\u00bb]", "''", out)


def _currency(tok: str) -> str:
    tok = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", tok)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}

# An action maps the matched text to (token or None to drop it, characters to push back).
Action = Callable[[str], tuple[str | None, int]]


def _keep(tok: str) -> tuple[str | None, int]:
    return tok.replace("\u00ad", "") or "-", 0


def _const(value: str) -> Action:
    return lambda tok: (value, 0)


def _quote(left: bool) -> Action:
    return lambda tok: (_latex_quote(tok, left), 0)


def _drop(tok: str) -> tuple[str | None, int]:
    return None, 0


# (pattern, trailing context or None, action), in PTBLexer.flex's order.
_RULES: list[tuple[str, str | None, Action]] = [
    (r"(?i:cannot|gonna|gotta|lemme|gimme|wanna)", None, lambda t: (t[:3], len(t) - 3)),
    (_SGML, None, _keep),
    (r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, _const("--")),
    (r"&amp;", None, _const("&")),
    (r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _keep),
    (_WORD, _REDAUX, _keep),
    (r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*", _SREDAUX, _keep),
    (_WORD, None, _keep),
    (_WORD + r"(?:\." + _WORD + r")+", None, _keep),
    (
        _APOS
        + r"n"
        + _APOS
        + r"?|[lLdDjJ]"
        + _APOS
        + r"|(?i:Dunkin)"
        + _APOS
        + r"|(?i:somethin)"
        + _APOS
        + r"|(?i:ol)"
        + _APOS
        + r"|"
        + _APOS
        + r"(?i:em)"
        + r"|[A-HJ-XZn]"
        + _APOSETC
        + _L
        + r"{2}"
        + _L
        + r"*|"
        + _APOS
        + r"[2-9]0s|"
        + _APOS
        + r"(?i:till?)|"
        + _L
        + r"+[aeiouyAEIOUY]"
        + _APOSETC
        + r"[aeiouA-Z]"
        + _L
        + r"*|"
        + _APOS
        + r"(?i:cause)|(?i:cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry"
        + r"|li'l|nat'l)",
        None,
        _keep,
    ),
    (r"y" + _APOS, _L, _keep),
    (r"https?://" + _URLCH + r"+" + _URLEND, None, _keep),
    (
        r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
        r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?:com|net|org|edu)))"
        r"(?:/" + _URLCH + r"+" + _URLEND + r")?",
        None,
        _keep,
    ),
    (
        r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0]*@(?:[^ \t\n\f\r\"<>|().\u00A0]+\.)*"
        r"[^ \t\n\f\r\"<>|().\u00A0]+",
        None,
        _keep,
    ),
    (r"@[a-zA-Z_][a-zA-Z_0-9]*|#" + _WORD, None, _keep),
    (_REDAUX, r"[^A-Za-z]|$", _quote(False)),
    (_SREDAUX, None, _quote(False)),
    (r"\d{1,2}[\-/]\d{1,2}[\-/]\d{2,4}", None, _keep),
    (r"[\-+]?" + _NUM, None, _keep),
    (
        r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)",
        None,
        _keep,
    ),
    (r"(?:\d{1,4}[- \u00A0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", None, _keep),
    (r"[\u00BC\u00BD\u00BE\u2153-\u215E]", None, lambda t: (_FRACTIONS.get(t, t), 0)),
    (
        r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|(?i:pro|anti)-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls"
        r"|(?i:Cap)" + _APOS + r"n|(?i:c)" + _APOS + r"(?i:est)",
        None,
        _keep,
    ),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _keep),
    (r"[A-Z]*\$|#", None, _keep),
    (
        r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
        None,
        lambda t: (_currency(t), 0),
    ),
    (_ACRO + r"\.", _SPACENL + r"+" + _SENT_STARTERS + _SPACENL, _keep),
    # A single letter's period ends the sentence before these words (the jar splits "x." there).
    (r"[A-Za-z]\.", _SPACENL + r"+" + _SENT_STARTERS + _SPACENL, lambda t: (t[:-1], 1)),
    (_ABBREV1, _SENTEND, _keep),
    (_ABBREV1, None, _keep),
    (_ABBREV4 + r"\.", None, _keep),
    (_ABBREV4, _SPACE, _keep),
    (_ACRO, _SPACENL, _keep),
    (_APOS + r"[0-9][0-9]", _SPACENL, _keep),
    (_WORD + r"\.", _INSENTP, _keep),
    (
        r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
        r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\."
        r"[0-9]{3,5}",
        None,
        lambda t: (t.replace("(", "-LRB-").replace(")", "-RRB-"), 0),
    ),
    (r"\"|&quot;", r"[A-Za-z0-9$]", _quote(True)),
    (r"\"|&quot;", None, _quote(False)),
    (r"\[", None, _const("-LSB-")),
    (r"\]", None, _const("-RSB-")),
    (r"\{", None, _const("-LCB-")),
    (r"\}", None, _const("-RCB-")),
    (r"\(", None, _const("-LRB-")),
    (r"\)", None, _const("-RRB-")),
    (r"-+", None, lambda t: ("--" if 3 <= len(t) <= 4 else t, 0)),
    (r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]", None, _const("...")),
    (r"@+|#+|_+", None, _keep),
    (r"\*+|(?:\\\*){1,3}", None, _keep),
    (_INSENTP, None, _keep),
    (r"[?!]+", None, _keep),
    (r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _keep),
    (r"=", None, _keep),
    (r"/", None, _keep),
    (_HTHING + r"\.", _INSENTP, _keep),
    (_HTHING, None, _keep),
    (_THING + r"\.", _INSENTP, _keep),
    (_THING, None, _keep),
    (r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+\.", _INSENTP, lambda t: (t.replace("&amp;", "&"), 0)),
    (r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+", None, lambda t: (t.replace("&amp;", "&"), 0)),
    (r"'", r"[A-Za-z][^ \t\n\r\u00A0]", _quote(True)),
    (_REDAUX, None, _quote(False)),
    (
        r"''|&apos;|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F"
        r"\u2039\u203A\u00AB\u00BB]{1,2}|['\u0092\u2019]",
        None,
        _quote(False),
    ),
    (r"<<|>>", None, _keep),
    (r"[<\[]|&lt;", None, _keep),
    (r"[>\]]|&gt;", None, _keep),
    (_MISC, None, _keep),
]

_COMPILED = [
    (re.compile(pat + (f"(?=({ctx}))" if ctx else "")), action) for pat, ctx, action in _RULES
]
_SKIP = re.compile(r"[ \t\u00A0\u2000-\u200B\u200E\u200F\u3000\uFEFF\x00\r\n\u2028\u2029\x0b\x0c]+")
_SIMPLE = re.compile(r"[a-z]+(?: [a-z]+)*")
_ASSIMILATED = re.compile(r"\b(?:cannot|gonna|gotta|lemme|gimme|wanna)\b")


def _lex(text: str) -> Iterable[tuple[int, str]]:
    pos, end = 0, len(text)
    while pos < end:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
            continue
        best_len, best_total, best_action = 0, 0, None
        for regex, action in _COMPILED:
            m = regex.match(text, pos)
            if m is None or m.end() == pos:
                continue
            ctx = m.group(1) if regex.groups else None
            total = m.end() - pos + (len(ctx) if ctx else 0)
            if total > best_total:
                best_len, best_total, best_action = m.end() - pos, total, action
        if best_action is None:  # untokenizable character: the jar deletes it
            pos += 1
            continue
        token, pushback = best_action(text[pos : pos + best_len])
        if token:
            yield pos, token
        pos += best_len - pushback


# Captions reach the jar as one file, a line each, so a token can depend on the next line: only
# a single letter + period before a sentence starter ("by x. The") looks past the newline.
_NEEDS_NEXT = re.compile(r"[A-Za-z]\.")


@lru_cache(maxsize=200_000)
def ptb_tokenize_one(text: str, following: str = "") -> str:
    """One caption -> its lower-cased PTB tokens without punctuation, joined by spaces.

    ``following`` is the text of the next captions in the same batch (it only matters when
    this one ends in a single letter and a period, see :func:`ptb_tokenize`).
    """
    text = text.replace("\n", " ")
    # Fast path (most generated captions): plain lower-case words need no lexer.
    if _SIMPLE.fullmatch(text) and not _ASSIMILATED.search(text):
        return text
    end = len(text)
    if following:
        text = text + "\n" + following
    # Upstream compares with PUNCTUATIONS after the jar lower-cased, so "-lrb-" is kept.
    lowered = (tok.lower() for pos, tok in _lex(text) if pos < end)
    return " ".join(tok for tok in lowered if tok not in PUNCTUATIONS)


def ptb_tokenize(texts: Iterable[str]) -> list[str]:
    """Tokenise captions exactly as pycocoevalcap's ``PTBTokenizer`` does (Java-free).

    Each text becomes one line of lower-cased tokens separated by single spaces, with the
    protocol's punctuation tokens removed; an empty or all-punctuation text becomes "".
    Like upstream, the texts are read as consecutive lines of one document.
    """
    items = [t if isinstance(t, str) else str(t) for t in texts]
    out = []
    for i, text in enumerate(items):
        following = ""
        if i + 1 < len(items) and _NEEDS_NEXT.search(text):
            following = "\n".join(t.replace("\n", " ") for t in items[i + 1 : i + 4])[:64]
            following = following or "\n"  # a next line exists even when it is empty
        out.append(ptb_tokenize_one(text, following))
    return out


def ptb_tokenize_refs(references: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Tokenise every image's references as one document, in order, as pycocoevalcap does."""
    flat = ptb_tokenize([r for refs in references.values() for r in refs])
    out, start = {}, 0
    for key, refs in references.items():
        out[key] = flat[start : start + len(refs)]
        start += len(refs)
    return out
