"""Tag rules: one post-processing of tag captions, the same for every source of tags.

A WD-style tagger, the grounded backend's ``--style tags`` and a VLM asked for comma-separated
tags all end here, so ``--exclude-tags`` or ``--max-tags`` mean the same thing whichever model
produced the list. The conventions follow the tools training sets are made with:

* underscores become spaces except in kaomoji (``^_^``, ``>_<``): SmilingWolf's ``wd-tagger``
  space keeps a list of them, kohya-ss sd-scripts ``tag_images_by_wd14_tagger.py
  --remove_underscore`` keeps every tag of three characters or fewer; both are honoured here;
* ``separator`` is kohya's ``caption_separator`` (default ``", "``);
* ``keep_tokens`` is kohya's training option of that name: the first K tags of the caption
  keep their place (so a trainer run with ``keep_tokens=K`` and ``shuffle_caption`` sees the
  same fixed head), only the tags after them are sorted and cut;
* ``always_first`` is kohya's ``--always_first_tags`` (moved to the front only when present,
  here in the order given).

Order of the rules in :meth:`TagRules.apply`, each step on the output of the one before:

1. tidy each tag (strip, collapse blanks, underscores to spaces unless kept); drop empties;
2. ``replace``: a tag equal to ``old`` (case-insensitive, ``_`` = space) becomes ``new``;
   an empty ``new`` removes the tag;
3. de-duplicate (case-insensitive, ``_`` = space; the first spelling stays, the best score);
4. ``exclude``: drop tags matching an entry; ``*`` in an entry matches any run of characters
   (``*_background``, ``rating:*``), nothing else is special, case-insensitive, ``_`` = space;
5. the head: the trigger word (verbatim, underscores kept; a tag equal to it is dropped
   from the list), then the first ``keep_tokens`` tags in their order (the
   trigger counts as one of them), then the ``always_first`` tags that are present;
6. the rest sorted (``score``: best first, unscored tags keep their order after the scored
   ones; ``alpha``; ``none``: as given) and cut so the whole list has at most ``max_tags``
   (the head is never cut).

Floor 2: imports only :mod:`captionkit.errors` (and pydantic).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from captionkit.errors import ConfigError

__all__ = ["KAOMOJIS", "TagRules", "is_kaomoji", "parse_replace", "split_tags", "tag_key"]

#: Kaomoji tags whose underscores are part of the face, as listed in SmilingWolf's wd-tagger
#: space (app.py, ``kaomojis``); shorter ones are caught by kohya's three-character rule.
KAOMOJIS = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3",
        "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    }
)  # fmt: skip

_BLANKS = re.compile(r"\s+")


def is_kaomoji(tag: str) -> bool:
    """A tag whose underscores are drawing, not word breaks (``^_^``, ``<o>_<o>``)."""
    tag = tag.strip()
    return tag in KAOMOJIS or ("_" in tag and len(tag) <= 3)


def _tidy(tag: str, underscores_to_spaces: bool) -> str:
    tag = _BLANKS.sub(" ", tag.strip())
    if underscores_to_spaces and not is_kaomoji(tag):
        tag = _BLANKS.sub(" ", tag.replace("_", " ")).strip()
    return tag


def tag_key(tag: str) -> str:
    """What two spellings of one tag share: ``Red_Dress`` and ``red dress`` are the same tag."""
    tag = tag.strip()
    if not is_kaomoji(tag):
        tag = tag.replace("_", " ")
    return _BLANKS.sub(" ", tag).strip().casefold()


def _pattern(entry: str) -> re.Pattern[str]:
    """An exclude entry as a regex over tag keys: ``*`` is any run, the rest is literal."""
    entry = entry.strip()
    if not is_kaomoji(entry):
        entry = entry.replace("_", " ")
    entry = _BLANKS.sub(" ", entry).casefold()
    return re.compile(".*".join(re.escape(part) for part in entry.split("*")), re.DOTALL)


def parse_replace(pair: str) -> tuple[str, str]:
    """``"old=new"`` -> ``("old", "new")``; ``\\=`` is a literal ``=`` (kaomoji ``=_=``).

    An empty ``new`` (``"watermark="``) removes the tag; an empty ``old`` or no ``=`` is a
    one-line :class:`ConfigError`.
    """
    match = re.search(r"(?<!\\)=", pair)
    if match is None:
        raise ConfigError(f"--replace-tags '{pair}': write OLD=NEW (\\= for a literal '=')")
    old = pair[: match.start()].replace("\\=", "=").strip()
    new = pair[match.end() :].replace("\\=", "=").strip()
    if not old:
        raise ConfigError(f"--replace-tags '{pair}': the tag before '=' is empty")
    return old, new


def split_tags(text: str, separator: str = ", ") -> list[str]:
    """A tag caption's tags: split on commas and on ``separator`` (a blank-only separator
    splits on blanks when the text has no comma)."""
    sep = separator.strip()
    if sep and sep != ",":
        parts = [p for chunk in text.split(sep) for p in chunk.split(",")]
    elif sep == "," or "," in text:
        parts = text.split(",")
    else:
        parts = text.split() if separator else [text]
    return [p.strip() for p in parts if p.strip()]


class TagRules(BaseModel):
    """The tag rules of one run (``--exclude-tags`` ... ``--keep-tokens``); see the module doc
    for the order they apply in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exclude: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    always_first: tuple[str, ...] = ()
    max_tags: int | None = Field(default=None, ge=1)
    separator: str = ", "
    underscores_to_spaces: bool = True
    sort: Literal["score", "alpha", "none"] = "score"
    keep_tokens: int = Field(default=0, ge=0)
    trigger_word: str = ""

    @property
    def active(self) -> bool:
        """Whether any rule differs from the defaults (the defaults still tidy a tag list)."""
        return self != TagRules()

    def apply(self, tags: Sequence[tuple[str, float | None]]) -> list[str]:
        """Ranked ``(tag, score)`` pairs (score ``None`` when unknown) -> the final tag list."""
        u2s = self.underscores_to_spaces
        replace = {tag_key(old): _tidy(new, u2s) for old, new in self.replace}
        merged: dict[str, list[Any]] = {}  # key -> [spelling, score, first position]
        for position, (raw, score) in enumerate(tags):
            tag = _tidy(str(raw), u2s)
            tag = replace.get(tag_key(tag), tag) if tag else tag
            if not tag:
                continue
            key = tag_key(tag)
            if key in merged:
                best = merged[key][1]
                if score is not None and (best is None or score > best):
                    merged[key][1] = score
                continue
            merged[key] = [tag, score, position]
        patterns = [_pattern(e) for e in self.exclude if e.strip()]
        trigger = _tidy(self.trigger_word, False)  # the user's token, verbatim
        trigger_key = tag_key(trigger) if trigger else None
        items = [
            (key, value)
            for key, value in merged.items()
            if key != trigger_key and not any(p.fullmatch(key) for p in patterns)
        ]
        head = [trigger] if trigger else []
        keep = max(0, self.keep_tokens - len(head))
        head += [value[0] for _, value in items[:keep]]
        rest = items[keep:]
        first = {tag_key(t): i for i, t in enumerate(self.always_first) if t.strip()}
        promoted = sorted((it for it in rest if it[0] in first), key=lambda it: first[it[0]])
        head += [value[0] for _, value in promoted]
        rest = [it for it in rest if it[0] not in first]
        if self.sort == "score":
            rest.sort(key=lambda it: (it[1][1] is None, -(it[1][1] or 0.0), it[1][2]))
        elif self.sort == "alpha":
            rest.sort(key=lambda it: it[0])
        if self.max_tags is not None:
            rest = rest[: max(0, self.max_tags - len(head))]
        return head + [value[0] for _, value in rest]

    def join(self, tags: Sequence[str]) -> str:
        """Tags -> one caption with the run's separator."""
        return self.separator.join(tags)

    def apply_text(self, text: str) -> str:
        """Apply the rules to a tag caption (tags split on the separator and on commas).

        Each non-empty line is one caption (multi-caption sidecars keep their lines); a
        caption's tags carry no scores, so ``sort="score"`` keeps their order.
        """
        lines = [line for line in text.splitlines() if line.strip()] or [""]
        done = [
            self.join(self.apply([(t, None) for t in split_tags(line, self.separator)]))
            for line in lines
        ]
        return "\n".join(done)

    def apply_ranked(self, ranked: Sequence[Sequence[Any]], shown: str | None = None) -> str:
        """A tagger's ``extra["tags"]`` rows (``[name, score, category]``) -> the caption.

        Works on the model's own names and scores, so ``underscores_to_spaces=False`` and
        ``sort="score"`` mean what they say even after the backend tidied its text. With
        ``shown`` (the backend's caption) only the rows whose tag appears in it are used, so
        a rating kept out of the text stays out.
        """
        rows = [(str(r[0]), None if r[1] is None else float(r[1])) for r in ranked]
        if shown is not None:
            visible = {tag_key(t) for t in split_tags(shown, ", ")}
            rows = [r for r in rows if tag_key(r[0]) in visible]
        return self.join(self.apply(rows))
