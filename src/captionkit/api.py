"""The public Python API: :func:`load_captioner` and :func:`caption`.

Both are thin faces on the engine (``captionkit.engine.runner``), the same flow the CLI
drives, so a caption made from Python is stored, cached and reused exactly like one made
from the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.captioners import registry
from captionkit.captioners.base import Captioner
from captionkit.engine.runner import Runner, RunOptions
from captionkit.engine.store import ResultStore, default_store_path
from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source, is_url, iter_sources
from captionkit.types import CaptionRequest, CaptionResult, Decoding

if TYPE_CHECKING:
    from PIL.Image import Image

_DEFAULT = object()


def load_captioner(
    spec: str = "grounded",
    *,
    rewrite: str | None = None,
    rewrite_options: dict[str, Any] | None = None,
    **options: Any,
) -> Captioner:
    """Build the backend that ``spec`` names (``hf:ORG/NAME``, ``grounded``, ``openai:MODEL``...).

    ``options`` are validated against the backend's ``Options`` model. ``rewrite`` names a
    text LLM (``smollm2``, ``hf:...``, ``openai-compatible:NAME``) that rewrites each
    description into the requested style; ``rewrite_options`` (``base_url``, ``api_key``...)
    go to that LLM.
    """
    captioner = registry.create(spec, **options)
    if rewrite:
        from captionkit.captioners.rewrite import RewriteCaptioner
        from captionkit.llm import load_llm

        captioner = RewriteCaptioner(captioner, load_llm(rewrite, **(rewrite_options or {})))
    return captioner


def _sources(inputs: Any) -> Iterator[Source]:
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
            yield from iter_sources([str(item)])


def open_store(store: Any) -> ResultStore | None:
    """``None``/default -> the user-cache store; ``False`` or ``"none"`` -> no store."""
    if store is False or (isinstance(store, str) and store.lower() == "none"):
        return None
    if store is None or store is True or store is _DEFAULT:
        return ResultStore(default_store_path())
    return ResultStore(store)


def caption(
    inputs: str | Path | Image | Iterable[str | Path | Image],
    model: str | Captioner = "grounded",
    *,
    style: str = "short",
    prompt: str | None = None,
    num_captions: int = 1,
    decoding: Decoding | None = None,
    batch_size: int | None = None,
    store: str | Path | bool | None = _DEFAULT,  # type: ignore[assignment]
    force: bool = False,
    progress: bool = False,
    prefix: str = "",
    suffix: str = "",
    trigger_word: str = "",
    **options: Any,
) -> list[CaptionResult]:
    """Caption files, folders, URLs or ``PIL.Image`` objects; results in input order.

    A failed image has ``result.error`` set instead of raising, so one bad file never costs
    the others. Pass a loaded :class:`Captioner` as ``model`` to reuse it across calls.
    """
    from captionkit.engine.progress import make_progress
    from captionkit.styles import get_style

    get_style(style)
    if num_captions < 1:
        raise ConfigError("num_captions must be at least 1")
    request = CaptionRequest(
        style=style, prompt=prompt, num_captions=num_captions, decoding=decoding or Decoding()
    )
    results_store = open_store(store)
    try:
        captioner = model if isinstance(model, Captioner) else load_captioner(model, **options)
    except BaseException:
        if results_store is not None:
            results_store.close()
        raise
    runner = Runner(
        captioner,
        request,
        store=results_store,
        options=RunOptions(
            batch_size=batch_size,
            force=force,
            collect=True,
            prefix=prefix,
            suffix=suffix,
            trigger_word=trigger_word,
        ),
        progress=make_progress(progress),
    )
    try:
        summary = runner.run(_sources(inputs))
    finally:
        if results_store is not None:
            results_store.close()
        if not isinstance(model, Captioner):
            captioner.close()
    if summary.interrupted:
        raise KeyboardInterrupt
    return summary.results
