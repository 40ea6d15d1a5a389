"""Prompt templates: ``--prompt`` and ``--prompt-file`` with ``{variables}`` and weighted choice.

A template is rendered once per image, in the engine's prepare stage, from what is known about
that image: ``{name}`` (the file stem), ``{directory}`` (its folder's name), ``{column:NAME}``
(a column of an input table, or a video frame's ``t``/``frame``: :attr:`Source.meta`), and in a
multi-stage run ``{caption}`` (the previous stage's text) and ``{tags}`` (the tags an earlier
stage made: a tagger's ``extra["tags"]``, or a stage of style ``tags``). ``{{`` and ``}}`` are
literal braces. The rendered prompt is part of the request, so it is part of the results-store
key: the same image with a different rendered prompt is a different result.

A prompt file holds one prompt (plain text), or a JSON list of prompts, or of
``{"prompt": ..., "weight": ...}`` objects: each image gets one of them, chosen at random with
those weights but seeded by the image's content hash, so a rerun picks the same prompt for the
same image (and resumes from the store) while the data set as a whole gets variety.

Every mistake a user can make here (an unknown variable, an unbalanced brace, a bad file) is a
one-line :class:`ConfigError` raised when the run is assembled, before any model loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source
from captionkit.types import CaptionRequest

#: The variables a template may use (``column`` takes a name: ``{column:NAME}``).
VARIABLES = ("name", "directory", "tags", "caption", "column")
#: Variables whose value comes from an earlier stage of a multi-stage run.
FROM_EARLIER_STAGE = frozenset({"tags", "caption"})
_KNOWN = "{name}, {directory}, {tags}, {caption}, {column:NAME}"


class MissingValue(ValueError):
    """A variable has no value for one image (a column absent from its row, an earlier stage
    that failed on it): that image fails, the others go on."""


@dataclass(frozen=True)
class Template:
    """One parsed prompt: literal text and the variables between it, plus its weight."""

    text: str
    weight: float = 1.0
    #: (literal text, variable or "", column name or "") in order.
    parts: tuple[tuple[str, str, str], ...] = ()

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(v for _, v, _ in self.parts if v)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for _, v, c in self.parts if v == "column"))

    def render(self, values: Callable[[str, str], str]) -> str:
        """The prompt with each variable replaced by ``values(variable, column)``."""
        return "".join(lit + (values(var, col) if var else "") for lit, var, col in self.parts)


def parse_template(text: str, weight: float = 1.0, *, where: str = "--prompt") -> Template:
    """Parse ``text``; an unknown variable or a stray brace is one line naming ``where``."""
    if not text.strip():
        raise ConfigError(f"{where}: the prompt is empty")
    parts: list[tuple[str, str, str]] = []
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {exc} in {_short(text)!r}; write {{{{ and }}}} for literal braces"
        ) from None
    for literal, field, spec, conversion in pieces:
        if field is None:
            parts.append((literal, "", ""))
            continue
        column = ""
        if field == "column" and spec and not conversion:
            column = spec
        elif field not in VARIABLES or field == "column" or spec or conversion:
            shown = (
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise ConfigError(
                f"{where}: unknown variable {shown}; the variables are {_KNOWN} "
                "(write {{ and }} for literal braces)"
            )
        parts.append((literal, field, column))
    return Template(text=text, weight=weight, parts=tuple(parts))


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run (or of one stage): one, or several to choose from per image."""

    templates: tuple[Template, ...]
    #: Where they came from, for messages: ``--prompt`` or the prompt file's path.
    origin: str = "--prompt"

    @property
    def variables(self) -> frozenset[str]:
        return frozenset().union(*(t.variables for t in self.templates))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for t in self.templates for c in t.columns))

    @property
    def dynamic(self) -> bool:
        """True when the prompt differs per image (variables, or a choice): a static prompt
        is sent as typed (``{{`` undone), so its store keys are those of a plain ``--prompt``."""
        return len(self.templates) > 1 or bool(self.templates[0].variables)

    @property
    def request_prompt(self) -> str:
        """The request's prompt: the prompt itself when static (``{{`` undone), else the
        first template (it stands for the set in checks; each image gets its own)."""
        only = self.templates[0]
        return only.text if self.dynamic else only.render(_none)

    @property
    def first(self) -> str:
        """A prompt that stands for the set where one is needed before any image (checks)."""
        return self.templates[0].text

    def choose(self, sha256: str) -> Template:
        """The template for the image with this content hash: weighted, stable across runs."""
        if len(self.templates) == 1:
            return self.templates[0]
        rng = random.Random(sha256)
        return rng.choices(self.templates, weights=[t.weight for t in self.templates])[0]

    def check_stage(self, *, stage: str | None, earlier: Sequence[str] = (), tags: bool = False):
        """``{caption}``/``{tags}`` need an earlier stage (and ``{tags}`` one that makes tags)."""
        used = self.variables & FROM_EARLIER_STAGE
        if not used:
            return
        var = "{" + sorted(used)[0] + "}"
        if stage is None:
            raise ConfigError(
                f"{self.origin}: {var} is the output of an earlier stage; run several stages "
                "with --stages FILE"
            )
        if not earlier:
            raise ConfigError(
                f"stage '{stage}': {var} needs an earlier stage, and this is the first"
            )
        if "tags" in used and not tags:
            raise ConfigError(
                f"stage '{stage}': {{tags}} needs an earlier stage that makes tags "
                '(a tagger model, or style = "tags")'
            )

    def check_columns(self, columns: Sequence[str], *, what: str = "the inputs") -> None:
        """Every ``{column:NAME}`` exists in ``columns`` (a table's header, a frame's meta)."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            have = ", ".join(map(str, columns)) or "none"
            raise ConfigError(
                f"{self.origin}: {{column:{missing[0]}}}: {what} have no column '{missing[0]}' "
                f"(columns: {have})"
            )


def _none(var: str, column: str) -> str:
    return ""


def prompt_set(text: str, *, origin: str = "--prompt") -> PromptSet:
    """One prompt given inline."""
    return PromptSet((parse_template(text, where=origin),), origin)


def load_prompt_file(path: str | Path) -> PromptSet:
    """A prompt file: plain text (one prompt), or a JSON list of prompts or of
    ``{"prompt": ..., "weight": ...}`` objects (a ``.json`` file, or text starting with ``[``)."""
    file = Path(path).expanduser()
    where = f"--prompt-file {file}"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}") from None
    if file.suffix.lower() != ".json" and not text.lstrip().startswith("["):
        return PromptSet((parse_template(text.strip(), where=where),), where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    return PromptSet(tuple(_entries(data, where)), where)


def _entries(data: Any, where: str) -> list[Template]:
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: expected a prompt, or a non-empty JSON list of prompts")
    out = []
    for n, entry in enumerate(data, 1):
        at = f"{where}: entry {n}"
        weight: Any = 1.0
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"prompt", "weight"})
            if unknown:
                raise ConfigError(f"{at}: unknown key '{unknown[0]}' (keys: prompt, weight)")
            weight = entry.get("weight", 1.0)
            entry = entry.get("prompt")
        if not isinstance(entry, str):
            raise ConfigError(f'{at}: expected a prompt string or {{"prompt": ..., "weight": ...}}')
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise ConfigError(f"{at}: weight must be a positive number, got {weight!r}")
        out.append(parse_template(entry, float(weight), where=at))
    return out


def resolve(prompt: str | None, prompt_file: str | Path | None) -> PromptSet | None:
    """The run's prompts from ``--prompt`` or ``--prompt-file`` (not both), or None."""
    if prompt is not None and prompt_file is not None:
        raise ConfigError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        return load_prompt_file(prompt_file)
    if prompt is not None:
        return prompt_set(prompt)
    return None


# -- rendering, per image ------------------------------------------------------------------


@dataclass(frozen=True)
class Earlier:
    """What the earlier stages of a multi-stage run made for one image."""

    caption: str | None = None
    tags: str | None = None
    #: The earlier stage that failed on this image and why (the image fails here too).
    failed: str | None = None


def source_name(source: Source) -> str:
    """``{name}``: the file stem (a video frame: its video's; a URL: its last path part's)."""
    video = source.meta.get("video") if source.meta else None
    if video:
        return Path(str(video)).stem
    if source.path is not None:
        return source.path.stem
    if source.url:
        return PurePosixPath(urlparse(source.url).path).stem
    return PurePosixPath(source.key).stem


def source_directory(source: Source) -> str:
    """``{directory}``: the name of the folder holding the file ("" for in-memory images)."""
    video = source.meta.get("video") if source.meta else None
    if video:
        return Path(str(video)).parent.name
    if source.path is not None:
        return source.path.parent.name
    if source.url:
        return PurePosixPath(urlparse(source.url).path).parent.name
    return ""


def render_values(source: Source, earlier: Earlier | None) -> Callable[[str, str], str]:
    """The value of each variable for ``source`` (:class:`MissingValue` when it has none)."""

    def value(var: str, column: str) -> str:
        if var == "name":
            return source_name(source)
        if var == "directory":
            return source_directory(source)
        if var == "column":
            if column not in source.meta:
                have = ", ".join(map(str, source.meta)) or "none"
                raise MissingValue(f"no column '{column}' for this input (columns: {have})")
            cell = source.meta[column]
            return "" if cell is None else str(cell)
        got = getattr(earlier, var, None) if earlier is not None else None
        if got is None:
            raise MissingValue(f"no {{{var}}} from an earlier stage for this image")
        return got

    return value


#: ``render(source, sha256, request) -> (request for this image, its store fingerprint)``.
Renderer = Callable[[Source, str, CaptionRequest], tuple[CaptionRequest, str]]


def make_renderer(
    prompts: PromptSet | None,
    earlier: Callable[[Source], Earlier | None] | None = None,
) -> Renderer:
    """The engine's per-image hook: pick and render the prompt for one image.

    ``earlier`` (multi-stage runs) looks up what the earlier stages made for an image; its
    values go into the fingerprint whether or not the template uses them, so a stage's
    results are keyed by the previous stage's output and recomputed when it changes.
    """

    def render(source: Source, sha256: str, request: CaptionRequest) -> tuple[CaptionRequest, str]:
        before = earlier(source) if earlier is not None else None
        if before is not None and before.failed:
            raise MissingValue(before.failed)
        if prompts is not None:
            text = prompts.choose(sha256).render(render_values(source, before))
            request = dataclasses.replace(request, prompt=text)
        fp = request.fingerprint()
        if before is not None:
            chain = json.dumps([before.caption, before.tags], ensure_ascii=False)
            fp = f"{fp}:{hashlib.sha256(chain.encode()).hexdigest()[:16]}"
        return request, fp

    return render


def tags_text(extra: Mapping[str, Any] | None) -> str | None:
    """A backend's ``extra["tags"]`` (``[[name, score, category], ...]``, ``[name, ...]``)
    as ``name, name, ...`` in its order; None when it made no tags."""
    tags = (extra or {}).get("tags")
    if not isinstance(tags, list):
        return None
    names = [str(t[0] if isinstance(t, list | tuple) and t else t) for t in tags]
    return ", ".join(n for n in names if n)


# -- tag rules, assembled for a run ----------------------------------------------------------

#: The tag-rule flags of ``captionkit caption`` (run values) and the TagRules field each sets.
TAG_FLAGS = {
    "exclude_tags": "exclude",
    "replace_tags": "replace",
    "always_first": "always_first",
    "max_tags": "max_tags",
    "tag_separator": "separator",
    "tag_sort": "sort",
    "keep_tokens": "keep_tokens",
}


def tag_rules(table: Mapping[str, Any], flags: Mapping[str, Any], *, trigger_word: str = "") -> Any:
    """The config file's ``[tags]`` table < the tag flags, as ``captionkit.tags.TagRules``;
    None when neither sets anything (a trigger word alone is plain decoration).

    Lists may be given as ``"a, b"``, ``["a", "b"]`` or repeated flags; ``replace`` as
    ``old=new`` strings or a ``{old = "new"}`` table.
    """
    given = {f: flags[k] for k, f in TAG_FLAGS.items() if flags.get(k) not in (None, (), [])}
    if flags.get("keep_underscores"):
        given["underscores_to_spaces"] = False
    if not given and not table:
        return None
    from pydantic import ValidationError

    from captionkit.tags import TagRules, parse_replace

    merged = {**table, **given}
    for key in ("exclude", "always_first"):
        value = merged.get(key)
        if isinstance(value, str | list | tuple):
            items = [value] if isinstance(value, str) else value
            merged[key] = tuple(t.strip() for i in items for t in str(i).split(",") if t.strip())
    pairs = merged.get("replace")
    if isinstance(pairs, Mapping):
        merged["replace"] = tuple((str(k), str(v)) for k, v in pairs.items())
    elif isinstance(pairs, str):
        merged["replace"] = (parse_replace(pairs),)
    elif isinstance(pairs, list | tuple):
        merged["replace"] = tuple(
            parse_replace(p) if isinstance(p, str) else tuple(p) for p in pairs
        )
    if trigger_word:
        merged.setdefault("trigger_word", trigger_word)
    try:
        return TagRules(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "tags"
        raise ConfigError(f"tag rules: {where}: {first['msg']}") from None
    except TypeError as exc:
        raise ConfigError(f"tag rules: {exc}") from None
