"""The run's outputs: which sinks it writes (the sink policy), that they can be written,
and the results store it opens.

The policy lives here once so every face writes the same files for the same flags; the checks
run before the model loads, so an unwritable folder never costs a caption.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captionkit.engine.sinks import Sink
    from captionkit.engine.store import ResultStore
    from captionkit.session.spec import RunSpec


def make_sinks(run: RunSpec) -> list[Sink]:
    """The sink policy: sidecars unless off (or ``--format`` to stdout); a stream for
    ``--format``; and captions printed when they would otherwise go nowhere visible (sidecars
    off, or URLs and stdin lists, which have no folder for a sidecar)."""
    from captionkit.engine.exports import EXPORT_FORMATS, ExportSink
    from captionkit.engine.sinks import SidecarSink, StreamSink

    spec = run.sinks
    sinks: list[Sink] = []
    if spec.sidecars:
        sinks.append(
            SidecarSink(
                extension=spec.extension,
                output_dir=spec.output_dir,
                existing=spec.existing,
                roots=list(run.inputs.items),
                layout=spec.layout,
                count=run.request.num_captions,
            )
        )
    if run.inputs.video is not None:
        from captionkit.engine.video_sink import with_videos

        sinks = with_videos(sinks)
    if spec.metadata is not None:
        from captionkit.engine.metadata import MetadataSink

        sinks.append(
            MetadataSink(
                spec.metadata,
                keep_mtime=spec.keep_mtime,
                sidecar_name=spec.xmp_name,
                replace_foreign=spec.existing == "overwrite",
            )
        )
    if spec.format in EXPORT_FORMATS:
        sinks.append(ExportSink(spec.format, spec.output))
    elif spec.format is not None:
        sinks.append(StreamSink(spec.format, spec.output))
    elif not spec.sidecars or run.inputs.streamed:
        sinks.append(StreamSink("txt", None))
    return sinks


def check_outputs(run: RunSpec, sinks: Iterable[Sink]) -> None:
    """Every output can be written: before the model loads, never compute what is lost."""
    from captionkit.engine.sinks import check_writable

    check_writable(sinks, list(run.inputs.items))


def open_store(store: Any) -> ResultStore | None:
    """``None``/``True`` -> the user-cache store; ``False`` or ``"none"`` -> no store."""
    from captionkit.engine.store import ResultStore, default_store_path

    if store is False or (isinstance(store, str) and store.lower() == "none"):
        return None
    if store is None or store is True:
        return ResultStore(default_store_path())
    return ResultStore(store)
