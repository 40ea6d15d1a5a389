"""Loading and running: the captioner a run names (with its rewrite, re-rank and QA
wrappers, in that order), the engine's options, the streaming driver, and the dry-run estimate.

Faces call :func:`execute` (or, for the server and the cluster, :func:`load` and
:func:`run_options` around their own drivers), so a model is loaded only after every check
passed, and whatever :func:`execute` opened it also closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.errors import ConfigError
from captionkit.session.outputs import check_outputs, make_sinks, open_store

if TYPE_CHECKING:
    from captionkit.captioners.base import Captioner
    from captionkit.engine.progress import Progress
    from captionkit.engine.runner import RunSummary
    from captionkit.engine.sinks import Sink
    from captionkit.engine.stages import RunOptions
    from captionkit.inputs.sources import Source
    from captionkit.session.spec import RunSpec


def load_backend(
    spec: str,
    *,
    rewrite: str | None = None,
    rewrite_options: Mapping[str, Any] | None = None,
    rerank: str | None = None,
    rerank_facts_weight: float | None = None,
    qa: Any = None,
    **options: Any,
) -> Captioner:
    """Build the captioner ``spec`` names (options validated by its Options model), wrapped
    in the ``rewrite`` text LLM, the ``rerank`` scorer and the ``qa`` checker when asked for.

    The order matters: a rewritten caption is what gets re-ranked, and a caption QA
    regenerates is re-ranked again before it is checked."""
    from captionkit.captioners import registry

    captioner = registry.create(spec, **options)
    if rewrite:
        from captionkit.captioners.rewrite import RewriteCaptioner
        from captionkit.llm import load_llm
        from captionkit.llm.openai_compat import hosted_llm_options

        captioner = RewriteCaptioner(
            captioner,
            load_llm(
                rewrite,
                **hosted_llm_options(rewrite, rewrite_options, key_source="--rewrite-api-key"),
            ),
        )
    if rerank:
        from captionkit.captioners.rerank import wrap_rerank

        device = str(options.get("device") or "auto")
        captioner = wrap_rerank(captioner, rerank, rerank_facts_weight, device=device)
    if qa is not None:
        from captionkit.captioners.qa import wrap_qa

        captioner = wrap_qa(captioner, qa)
    return captioner


def load(run: RunSpec) -> Captioner:
    """The run's captioner, loaded."""
    return load_backend(
        run.backend,
        rewrite=run.rewrite,
        rewrite_options=run.rewrite_options,
        rerank=run.rerank,
        rerank_facts_weight=run.rerank_facts_weight,
        qa=run.qa,
        **run.options,
    )


@dataclass
class Outcome:
    """What a face reports after a run: the engine's summary plus the backend's usage."""

    summary: RunSummary
    usage: dict[str, Any] = field(default_factory=dict)
    store_path: Path | None = None


def execute(
    run: RunSpec,
    items: Iterable[Source],
    *,
    sinks: Sequence[Sink] | None = None,
    captioner: Captioner | None = None,
    progress: Progress | None = None,
    collect: bool = False,
) -> Outcome:
    """Check the outputs, open the store, load the model (unless given) and run the streaming
    driver over ``items``. A captioner passed in is left open; one loaded here is closed."""
    from captionkit import session  # load is looked up there: patching session.load reaches it
    from captionkit.engine.runner import Runner

    if run.cluster is not None:  # never a silent single-machine run of a cluster job
        raise ConfigError("a --ray run is driven by captionkit.cluster.driver.execute()")
    sinks = make_sinks(run) if sinks is None else list(sinks)
    check_outputs(run, sinks)
    store = open_store(run.store)
    try:
        model = captioner if captioner is not None else session.load(run)
    except BaseException:
        if store is not None:
            store.close()
        raise
    runner = Runner(
        model,
        run.request,
        store=store,
        sinks=list(sinks),
        progress=progress,
        options=run_options(run, collect=collect),
    )
    try:
        summary = runner.run(items)
    finally:
        if captioner is None:
            model.close()
        if store is not None:
            store.close()
    return Outcome(summary, model.stats(), store.path if store is not None else None)


def run_options(run: RunSpec, *, collect: bool = False) -> RunOptions:
    """The engine's options for ``run`` (the streaming driver and every cluster actor)."""
    from captionkit.engine.stages import RunOptions
    from captionkit.inputs.decode import DecodeLimits
    from captionkit.inputs.fetch import FetchLimits
    from captionkit.prompts import make_renderer

    limits = run.limits
    return RunOptions(
        batch_size=run.control.batch_size,
        workers=run.control.workers,
        force=run.control.force,
        decode=DecodeLimits(max_pixels=limits.max_pixels),
        fetch=FetchLimits(max_bytes=int(limits.max_file_mb * 1024 * 1024), timeout=limits.timeout),
        prefix=run.decoration.prefix,
        suffix=run.decoration.suffix,
        trigger_word=run.decoration.trigger_word,
        collect=collect,
        render=make_renderer(run.prompts) if run.prompts is not None else None,
        tags=run.tags,
        finish_candidates=run.sinks.layout != "first",
    )


@dataclass
class Estimate:
    """A dry run: images counted from their headers, and the backend's token/cost estimate
    (None for a local backend: no token cost)."""

    images: int
    uncounted: int
    backend: str
    tokens: dict[str, Any] | None


def estimate(run: RunSpec, captioner: Captioner, items: Iterable[Source]) -> Estimate:
    """Read only image headers (URLs are not fetched), then ask the backend what it costs."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    uncounted = 0
    for source in items:
        if source.image is not None:  # a video frame or an in-memory image: its size is known
            with contextlib.suppress(Exception):  # a video that fails: not counted
                sizes.append(source.image.size)
                continue
        if source.path is None:
            uncounted += 1
            continue
        try:
            with Image.open(source.path) as img:
                sizes.append(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image: not counted
            uncounted += 1
    return Estimate(len(sizes), uncounted, captioner.name, captioner.estimate(sizes, run.request))
