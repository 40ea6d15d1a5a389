"""The public Python API: :func:`load_captioner` and :func:`caption`.

Both are thin faces on run assembly (:mod:`captionkit.session`) and the engine, the same flow
the CLI drives: a caption made from Python honours the config file (top-level settings and
``[backends.NAME]`` tables) and ``CAPTIONKIT_*`` exactly as the command line does, and is
stored, cached and reused like one made there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.captioners.base import Captioner
from captionkit.inputs.sources import Source, is_url, iter_sources
from captionkit.session import build_run, execute, load, open_store
from captionkit.types import CaptionResult, Decoding

if TYPE_CHECKING:
    from PIL.Image import Image

    from captionkit.tags import TagRules

__all__ = ["caption", "load_captioner", "open_store"]

_DEFAULT: Any = object()


def load_captioner(
    spec: str | None = None,
    *,
    rewrite: str | None = None,
    rewrite_options: dict[str, Any] | None = None,
    config: str | Path | None = None,
    **options: Any,
) -> Captioner:
    """Build the backend that ``spec`` names (``hf:ORG/NAME``, ``grounded``, ``openai:MODEL``...).

    ``spec`` defaults to the config file's ``model`` (else ``grounded``). ``options`` go on top
    of the config file's ``[backends.NAME]`` table and are validated against the backend's
    ``Options``. ``rewrite`` names a text LLM (``smollm2``, ``hf:...``,
    ``openai-compatible:NAME``) that rewrites each description into the requested style;
    ``rewrite_options`` (``base_url``, ``api_key``...) go to that LLM.
    """
    run = build_run(
        config=config,
        model=spec,
        options=options,
        rewrite=rewrite,
        rewrite_options=rewrite_options,
    )
    return load(run)


def _sources(inputs: Any, video: Any = None) -> Iterator[Source]:
    """Images, paths and URLs as sources; ``video``: how video files are sampled (None:
    videos are not inputs)."""
    from PIL.Image import Image

    if isinstance(inputs, (str, Path, Image)):
        inputs = [inputs]
    for n, item in enumerate(inputs):
        if isinstance(item, Image):
            yield Source(key=f"<image {n}>", image=item)
        elif not is_url(str(item)) and not Path(item).expanduser().exists():
            # A missing path fails alone (its result carries the error), like a bad image.
            yield Source(key=str(item), path=Path(item).expanduser())
        else:
            yield from iter_sources([str(item)], video=video)


def caption(
    inputs: str | Path | Image | Iterable[str | Path | Image],
    model: str | Captioner | None = None,
    *,
    style: str | None = None,
    prompt: str | None = None,
    prompt_file: str | Path | None = None,
    num_captions: int = 1,
    decoding: Decoding | None = None,
    batch_size: int | None = None,
    store: str | Path | bool | None = _DEFAULT,
    force: bool = False,
    progress: bool = False,
    prefix: str | None = None,
    suffix: str | None = None,
    trigger_word: str | None = None,
    tags: TagRules | dict[str, Any] | None = None,
    config: str | Path | None = None,
    **options: Any,
) -> list[CaptionResult]:
    """Caption files, folders, URLs or ``PIL.Image`` objects; results in input order.

    Arguments left out come from the config file and ``CAPTIONKIT_*`` (``model`` defaults to
    ``grounded``, ``style`` to ``short``, the store to the user cache dir); ``options`` are
    backend options on top of the file's ``[backends.NAME]`` table. A failed image has
    ``result.error`` set instead of raising, so one bad file never costs the others. Pass a
    loaded :class:`Captioner` as ``model`` to reuse it across calls (it is left open).

    ``prompt`` (or ``prompt_file``: one prompt, or a JSON list with weights) may use
    ``{name}``, ``{directory}`` and ``{column:NAME}``; ``tags`` (a
    :class:`captionkit.tags.TagRules` or its fields as a dict) are the tag rules for tag
    captions. Several stages (describe -> shorten -> tag) are
    :func:`captionkit.multistage.caption_stages`.
    """
    from captionkit.engine.progress import make_progress

    loaded = model if isinstance(model, Captioner) else None
    run = build_run(
        config=config,
        options=options,
        captioner=type(loaded) if loaded is not None else None,
        model=None if loaded is not None else model,
        style=style,
        prompt=prompt,
        prompt_file=prompt_file,
        num_captions=num_captions,
        decoding=decoding,
        batch_size=batch_size,
        store=_store_setting(store),
        force=force,
        prefix=prefix,
        suffix=suffix,
        trigger_word=trigger_word,
        tags=tags,
    )
    outcome = execute(
        run,
        _sources(inputs, run.inputs.video),
        sinks=[],
        captioner=loaded,
        progress=make_progress(progress),
        collect=True,
    )
    if outcome.summary.interrupted:
        raise KeyboardInterrupt
    return outcome.summary.results


def _store_setting(store: Any) -> str | None:
    """The API's ``store`` as a setting: left out or True -> not given (the config's, else the
    user cache dir); False -> "none"; a path -> that path."""
    if store is _DEFAULT or store is None or store is True:
        return None
    if store is False:
        return "none"
    return str(store)
