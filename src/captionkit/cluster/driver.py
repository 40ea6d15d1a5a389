"""Run a caption job on a Ray cluster: connect, build the Dataset, stream results to shards.

The driver process (where ``captionkit caption --ray ...`` runs) lists or points at the inputs,
starts a pool of :class:`~captionkit.cluster.actor.CaptionActor` (one loaded captioner each,
``--actors``, ``--gpus-per-actor``) through ``Dataset.map_batches``, and consumes the
results as Ray Data streams them, writing Parquet shards as it goes. Ray Data restarts dead
actors and retries their in-flight batches elsewhere (its defaults for actor pools:
``max_restarts=-1``, ``max_task_retries=-1``); the driver drops any id it has already written,
so a retried batch can never add a second row for an image.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.errors import CaptionkitError, ConfigError

if TYPE_CHECKING:
    from captionkit.session import RunSpec

#: Rows per output shard, and the longest a finished row waits in memory before it is written.
SHARD_ROWS = 1000
FLUSH_SECONDS = 30.0


@dataclass
class ClusterOutcome:
    """What a cluster run did (this run only; the manifest holds the totals)."""

    output: Path
    captioned: int = 0
    failed: int = 0
    resumed: int = 0  # ids already in the output: skipped, nothing recomputed
    duplicates: int = 0  # rows of retried batches dropped because their id was written
    shards: int = 0
    seconds: float = 0.0
    actors: int = 0
    gpus_per_actor: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    @property
    def rate(self) -> float:
        return self.captioned / self.seconds if self.seconds else 0.0


def connect(address: str) -> Any:
    """``auto``: the running cluster (``ray start``/``ray up``), else a local one; ``local``:
    always a fresh local instance; ``ray://host:10001`` or ``host:6379``: that cluster.
    A Ray already initialised in this process (a test, a notebook) is used as it is."""
    from captionkit.errors import require

    ray = require("ray", "ray", "--ray")
    require("ray.data", "ray", "--ray")  # ray without its [data] part
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": logging.WARNING,
    }
    if address == "local":
        ray.init(**kwargs)
    elif address == "auto":
        try:
            ray.init(address="auto", **kwargs)
        except ConnectionError:
            print("captionkit: no running Ray cluster found; starting a local one", file=sys.stderr)
            ray.init(**kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {address}: cannot reach the Ray cluster ({exc})") from None
    return ray


def _quiet(ray: Any) -> None:
    """Ray Data's per-dataset INFO lines off (its progress bars stay): the CLI prints its
    summary."""
    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _pool_size(ray: Any, actors: int | None, gpus_per_actor: float | None) -> tuple[int, float]:
    """One actor per GPU by default (``--gpus-per-actor`` each); one on a CPU-only cluster."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per = gpus_per_actor if gpus_per_actor is not None else (1.0 if gpus else 0.0)
    if per and per > gpus:
        raise ConfigError(f"--gpus-per-actor {per:g}: the cluster has {gpus:g} GPU(s)")
    if actors is None:
        actors = max(1, int(gpus // per)) if per else 1
    return actors, per


def _unwrap(exc: BaseException) -> CaptionkitError | None:
    """The captionkit error inside a Ray task/actor failure (one line for the user)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CaptionkitError):
            return e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    # An actor that died in __init__ (a model that cannot load) carries only the text of
    # its error: ``captionkit.errors.ModelLoadError: no model folder at ...``.
    found = _ERROR_LINE.findall(str(exc))
    if found:
        from captionkit import errors

        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, CaptionkitError):
            error = cls.__new__(cls)
            Exception.__init__(error, message.strip())
            return error
    return None


_ERROR_LINE = re.compile(r"captionkit\.errors\.(\w+): ([^\n]+)")


def run_cluster(
    run: RunSpec,
    output: str | Path,
    *,
    shard_rows: int = SHARD_ROWS,
    flush_seconds: float = FLUSH_SECONDS,
    on_result: Any = None,
) -> ClusterOutcome:
    """Caption ``run``'s inputs on the cluster ``run.cluster.address`` into ``output``.

    ``on_result(row)`` is called for each new row as it is written (sidecars, progress).
    """
    from captionkit.captioners import registry
    from captionkit.cluster.actor import CONCURRENT_BATCHES, CaptionActor, settings_of
    from captionkit.cluster.inputs import build_dataset
    from captionkit.cluster.output import OutputDir

    spec = run.cluster
    assert spec is not None
    out = OutputDir(output, settings_of(run))
    out.check()
    if run.control.force and out.shard_files():
        raise ConfigError(
            f"--force with --ray would caption again what {out.path} holds: "
            "choose another --output-dir (or move that one aside)"
        )
    ray = connect(spec.address)
    _quiet(ray)
    done = out.done_ids()
    outcome = ClusterOutcome(output=out.path)
    started = time.perf_counter()
    ds, todo = build_dataset(run, done)
    if todo is not None:
        outcome.resumed = len(done)
    if ds is None:
        out.start()
        out.finish(captioned=0, failed=0)
        outcome.resumed = len(done)
        return outcome
    actors, per = _pool_size(ray, spec.actors, spec.gpus_per_actor)
    outcome.actors, outcome.gpus_per_actor = actors, per
    model_batch = (
        run.control.batch_size or registry.get_backend(run.backend_name).default_batch_size
    )
    remote: dict[str, Any] = {"max_concurrency": CONCURRENT_BATCHES}
    if spec.resources:
        remote["resources"] = dict(spec.resources)
    with warnings.catch_warnings():  # max_concurrency has no named parameter yet
        warnings.simplefilter("ignore", DeprecationWarning)
        mapped = ds.map_batches(
            CaptionActor,
            fn_constructor_args=(run,),
            batch_size=max(1, model_batch) * 2,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            num_gpus=per or None,
            **remote,
        )
    out.start()
    seen: set[str] = set(done)
    buffer: list[dict[str, Any]] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal buffer, last
        if buffer:
            out.write_shard(buffer)
            outcome.shards += 1
        buffer, last = [], time.monotonic()

    try:
        for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                rid = row["id"]
                if rid in seen:
                    outcome.duplicates += 1
                    continue
                seen.add(rid)
                buffer.append(row)
                if row.get("error"):
                    outcome.failed += 1
                    outcome.failures.append((rid, row["error"]))
                else:
                    outcome.captioned += 1
                if on_result is not None:
                    on_result(row)
            if len(buffer) >= shard_rows or time.monotonic() - last >= flush_seconds:
                flush()
    except KeyboardInterrupt:
        outcome.interrupted = True
    except Exception as exc:
        flush()  # every finished row is kept: the rerun resumes after it
        error = _unwrap(exc)
        if error is not None:
            raise error from None
        raise
    flush()
    outcome.resumed = len(done) if todo is None else outcome.resumed
    outcome.seconds = time.perf_counter() - started
    out.finish(captioned=outcome.captioned, failed=outcome.failed, interrupted=outcome.interrupted)
    return outcome


def output_folder(run: RunSpec) -> Path:
    """Where the shards go: ``--output-dir``, or ``--output`` with ``--format parquet``."""
    sinks = run.sinks
    if sinks.output_dir:
        return Path(sinks.output_dir).expanduser()
    if sinks.format == "parquet" and sinks.output:
        return Path(sinks.output).expanduser()
    raise ConfigError("--ray writes Parquet shards to a folder: give --output-dir DIR")


def execute(run: RunSpec) -> ClusterOutcome:
    """The whole cluster run as the CLI asks for it: shards in the output folder, then
    sidecars (``--sidecar``) as rows arrive, and ``--format``'s file from the whole folder
    (so a resumed run's export holds every image once, not just this run's)."""
    from captionkit.engine.exports import EXPORT_FORMATS, Exporter, export_rows, row_result
    from captionkit.engine.sinks import SidecarSink, StreamSink
    from captionkit.inputs.sources import Source

    folder = output_folder(run)
    fmt, target = run.sinks.format, run.sinks.output
    same_file = fmt == "parquet" and not run.sinks.output_dir
    sidecars = None
    if run.sinks.sidecar:
        sidecars = SidecarSink(extension=run.sinks.extension, existing=run.sinks.existing)
        sidecars.check(list(run.inputs.items))

    def on_result(row: dict[str, Any]) -> None:
        path = row.get("path")
        if sidecars is not None and path and "://" not in path and row.get("caption"):
            sidecars.write(row_result(row), Source(key=row["id"], path=Path(path)))

    if fmt is not None and not same_file:  # the export's target, before any work
        if fmt in EXPORT_FORMATS:
            Exporter(fmt, target).check()
        else:
            StreamSink(fmt, target).check()
    outcome = run_cluster(run, folder, on_result=on_result)
    if fmt is None or same_file:
        return outcome
    from captionkit.cluster.output import read_rows

    if fmt in EXPORT_FORMATS:
        export_rows(fmt, target, read_rows(folder))
    else:
        sink = StreamSink(fmt, target)
        for row in read_rows(folder):
            sink.write(row_result(row), Source(key=str(row["id"])))
        sink.close()
    return outcome
