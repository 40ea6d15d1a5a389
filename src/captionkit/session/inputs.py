"""The run's inputs: checked before any model loads, and streamed lazily once it has.

:func:`check_inputs` turns a wrong path or filter into one line instead of a successful run of
nothing; :func:`sources` is the one lazy walk every driver reads; :func:`skipped_text` words
what the walk passed over, for the summary and for the "no images found" error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captionkit.errors import InputError

if TYPE_CHECKING:
    from captionkit.engine.sinks import Sink
    from captionkit.inputs.sources import Source
    from captionkit.session.spec import RunSpec


def check_inputs(run: RunSpec) -> None:
    """Every local path exists, and the files and folders named hold at least one image.

    Folders with nothing to caption are almost always a wrong path or filter, so this is an
    error rather than a successful run of nothing. Finding the first image ends the check.
    URLs and a list on stdin are not walked: those cannot be looked at twice.
    """
    from captionkit.inputs.sources import iter_sources
    from captionkit.inputs.tables import classify, is_table_like

    if is_table_like(run.inputs.items):
        if run.cluster is None:
            raise InputError(
                "tables, hf: datasets and WebDataset shards are captioned with --ray "
                "(--ray local runs them on this machine)"
            )
        return  # Ray Data reads them (the driver checks paths and columns)
    for item in run.inputs.items:
        if item == "-" or item.startswith(("http://", "https://")):
            continue
        if classify(item).kind != "files":
            continue
        if not Path(item).expanduser().exists():
            raise InputError(f"{_plain(item)}: no such file or folder")
    if run.inputs.streamed or not run.inputs.items:
        return
    skipped: Counter[str] = Counter()
    walk = run.inputs.walk()
    found = iter_sources(list(run.inputs.items), skipped=skipped, **walk)
    first = next(iter(found), None)
    if first is not None:
        if run.prompts is not None:  # {column:NAME}: the first input shows the columns
            run.prompts.check_columns(list(first.meta), what=_plain(first.key))
        return
    where = ", ".join(_plain(i) for i in run.inputs.items)
    seen = skipped_text(skipped, every=True)
    narrowed = [
        flag
        for flag, on in (
            ("--include", walk["include"]),
            ("--exclude", walk["exclude"]),
            ("--no-recursive", not walk["recursive"]),
        )
        if on
    ]
    hint = f"; check {', '.join(narrowed)}" if narrowed else ""
    raise InputError(f"no images found in {where}" + (f" ({seen})" if seen else "") + hint)


#: How each reason the folder walk counts is named (one, several).
SKIP_REASONS = {
    "hidden": ("hidden file", "hidden files"),
    "broken symlink": ("broken symlink", "broken symlinks"),
    "not an image": ("file that is not an image", "files that are not images"),
}


def skipped_text(skipped: Counter[str], *, every: bool = False) -> str:
    """``2 hidden files, 1 broken symlink``; files that are not images (sidecars, mostly)
    are named only when ``every`` is set, as when no image was found at all."""
    parts = []
    for reason, n in skipped.items():
        if not n or (reason == "not an image" and not every):
            continue
        one, many = SKIP_REASONS.get(reason, (reason, reason))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts)


def _plain(text: object) -> str:
    """A path as printable text (undecodable bytes as ``\\xNN``); see ``cli.display.plain``."""
    s = str(text)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def sources(
    run: RunSpec,
    *,
    stdin: Iterable[str] | None = None,
    skipped: Counter[str] | None = None,
    sinks: Sequence[Sink] | None = None,
) -> Iterator[Source]:
    """The run's sources, lazily; ``skipped`` counts what the folder walk passed over.
    ``sinks``: the run's sinks, so a video they all hold already is skipped undecoded."""
    from captionkit.engine.video_sink import video_done
    from captionkit.inputs.sources import iter_sources

    done = video_done(sinks) if sinks and run.inputs.video is not None else None
    return iter(
        iter_sources(
            list(run.inputs.items),
            stdin=stdin,
            skipped=skipped,
            video_done=done,
            **run.inputs.walk(),
        )
    )
