"""Caption styles: what each asks a model for, and how its output is finished.

A style is data, not code in each backend: every backend (a chat VLM, an API, the grounded
writer, a rewriter) reads the same instruction and the same finishing rules, so "alt-text"
means the same thing whichever model writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from captionkit.errors import ConfigError


@dataclass(frozen=True)
class Style:
    name: str
    #: Instruction for instruction-following models (chat VLMs, APIs, LLM writers).
    instruction: str
    #: One line a human reads in ``--help`` and ``captionkit styles``.
    summary: str
    #: Upper bound on characters; longer outputs are cut at a word boundary.
    max_chars: int | None = None
    #: Keep only the first sentence of the output.
    one_sentence: bool = False
    #: Florence-2-style task token that best matches this style.
    florence_task: str = "<CAPTION>"


STYLES: dict[str, Style] = {
    s.name: s
    for s in [
        Style(
            "short",
            "Write one short caption for this image: a single plain sentence naming the main "
            "subject and what it is doing. No preamble.",
            "one plain sentence (the default)",
            max_chars=200,
            one_sentence=True,
            florence_task="<CAPTION>",
        ),
        Style(
            "detailed",
            "Describe this image in detail in one paragraph: the main subjects, their colours, "
            "positions and actions, the setting, lighting and any visible text. Mention only "
            "what is visible.",
            "a paragraph with subjects, colours, positions, setting",
            florence_task="<MORE_DETAILED_CAPTION>",
        ),
        Style(
            "alt-text",
            "Write alt text for this image for a screen-reader user: under 125 characters, "
            "the essential content first, no 'image of' or 'picture of'.",
            "accessible alt text under 125 characters",
            max_chars=125,
            florence_task="<CAPTION>",
        ),
        Style(
            "social",
            "Write an engaging social-media caption for this image: one or two lively sentences "
            "followed by three to five relevant hashtags.",
            "a social-media post with hashtags",
            max_chars=400,
            florence_task="<DETAILED_CAPTION>",
        ),
        Style(
            "training",
            "Write a caption for a text-to-image training set: a comma-separated list of the "
            "subject, its attributes, the setting and the photographic style; no full sentences.",
            "comma-separated tags for LoRA/diffusion training sets",
            max_chars=300,
            florence_task="<DETAILED_CAPTION>",
        ),
        Style(
            "tags",
            "List comma-separated tags for this image, most important first: the subjects, "
            "their attributes and clothing, actions, the setting, colours, lighting and style. "
            "Lowercase tags of one to three words; no sentences, no numbering, no preamble.",
            "comma-separated tags (taggers, tag rules: --exclude-tags, --max-tags...)",
            florence_task="<CAPTION>",
        ),
    ]
}

#: A "Tags:" label or list markers a chat model puts around a tag list.
_TAG_LABEL = re.compile(r"^[^\n,:]*\b(?:tags?|keywords?)\b[^\n,:]*:\s*", re.IGNORECASE)
_TAG_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


def finish_tags(text: str) -> str:
    """A model's tag list as ``a, b, c``: one per line or comma-separated, list markers and a
    ``Tags:`` label dropped, commas kept (tag rules split on them later), case kept."""
    text = _TAG_LABEL.sub("", text.replace("\u200b", " ").strip())
    items = []
    for line in text.splitlines():
        line = _TAG_MARKER.sub("", line)
        items += [" ".join(t.split()).strip("\"'.") for t in line.split(",")]
    return ", ".join(t for t in items if t)


_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|of course)[,!.]\s+|"
    r"(?:here is|here's|sure[,!.]?|certainly[,!.]?)[^:\n]*:\s*|"
    r"(?:this|the) (?:image|picture|photo)(?:(?: shows| depicts| features)\s*:?|\s*:)\s+(?=[a-z]))",
    re.IGNORECASE,
)
#: Words ending in "." that do not end a sentence.
_ABBREVIATIONS = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)
_ALT_LEAD = re.compile(r"^(?:an? )?(?:image|picture|photo|photograph) of\s+", re.IGNORECASE)


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ConfigError(f"unknown style '{name}'; choose one of: {', '.join(STYLES)}") from None


def first_sentence(text: str) -> str:
    for match in re.finditer(r"(?<=[.!?])\s+(?=[A-Z\"'])", text):
        if not _ABBREVIATIONS.search(text[: match.start()]):
            return text[: match.start()]
    return text


def truncate_words(text: str, max_chars: int) -> str:
    """Cut at the last word boundary within ``max_chars`` (hard cut for one long token)."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    cut = head.rsplit(" ", 1)[0].rstrip(",;:-") if " " in head else ""
    return cut if cut else text[:max_chars]


_HASHTAG = re.compile(r"#\w+")


def tidy_hashtags(text: str, max_tags: int = 5) -> str:
    """Small models repeat hashtags ("#snow #snow #snow"): keep each once, at most
    ``max_tags``, gathered at the end where social posts put them."""
    seen: dict[str, str] = {}
    for tag in _HASHTAG.findall(text):
        seen.setdefault(tag.lower(), tag)
    body = " ".join(_HASHTAG.sub("", text).split())
    tags = " ".join(list(seen.values())[:max_tags])
    return f"{body} {tags}".strip()


def finish(text: str, style: str) -> str:
    """Clean a model's raw output for ``style``: preamble, quotes, spacing, length."""
    spec = get_style(style)
    if style == "tags":
        return finish_tags(text)
    text = " ".join(text.replace("\u200b", " ").split())
    for _ in range(2):  # "Sure! Here is a caption: ..." has two
        text = _PREAMBLE.sub("", text, count=1)
    text = text.strip().strip('"').strip("'").strip()
    if style == "alt-text":
        text = _ALT_LEAD.sub("", text)
    if style == "social":
        text = tidy_hashtags(text)
    if spec.one_sentence:
        text = first_sentence(text)
    if spec.max_chars:
        text = truncate_words(text, spec.max_chars)
    if text and text[0].islower() and style != "training":
        text = text[0].upper() + text[1:]
    return text


def decorate(text: str, prefix: str = "", suffix: str = "", trigger_word: str = "") -> str:
    """Add the user's trigger word, prefix and suffix (dataset-labelling conventions).

    The trigger word leads, separated by a comma, as LoRA training scripts expect; prefix and
    suffix are joined verbatim so the user controls their own separators.
    """
    if trigger_word and not re.match(rf"{re.escape(trigger_word)}\b", text):
        text = f"{trigger_word}, {text}" if text else trigger_word
    return f"{prefix}{text}{suffix}"
