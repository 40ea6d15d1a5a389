"""The streaming driver: the one flow the CLI and the Python API drive over a stream of sources.

    sources -> [worker threads: stages.prepare]                         (bounded window)
            -> batches of uncached images -> stages.caption      (main thread: the device)
            -> stages.finish: store (one commit per batch) -> sinks (flushed per batch) -> progress

The stages (``stages.py``) decide what happens to one image; this module decides only how a
stream flows through them. Decoding runs ahead of the model in a bounded window, so the device
never waits for JPEG decoding and memory never holds more than ``prefetch`` images. A failing
batch is retried image by image, so one bad image (or one out-of-memory batch) costs only itself.

Each batch is committed to the store before any sink sees it, so a kill between the two
loses nothing: the rerun finds the captions in the store and hands them to the sinks again.
Errors that no image can get past stop the run in one line: a sink that cannot write
(``OutputError``, after the batch is committed), a damaged or locked store (``StoreError``,
after the batch in hand still reached the sinks), or a backend raising the same unexpected
exception on three batches in a row (``BackendError``: a bug, not hundreds of bad images).
The other drivers are ``batcher.py`` (the server) and ``batch.py`` (a Ray Data actor).
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from captionkit.captioners.base import Captioner
from captionkit.engine.progress import NullProgress, Progress
from captionkit.engine.sinks import Sink
from captionkit.engine.stages import (
    Prepared,
    RepeatGuard,
    RunOptions,
    Stages,
    check_request,
)
from captionkit.engine.store import ResultStore
from captionkit.errors import CaptionkitError
from captionkit.inputs.sources import Source
from captionkit.types import CaptionRequest, CaptionResult

__all__ = ["RunOptions", "RunSummary", "Runner"]


@dataclass
class RunSummary:
    captioned: int = 0
    cached: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0
    interrupted: bool = False
    results: list[CaptionResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def total(self) -> int:
        return self.captioned + self.cached + self.skipped + self.failed

    @property
    def rate(self) -> float:
        """Newly captioned images per wall-clock second."""
        return self.captioned / self.seconds if self.seconds else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failures else 0


class Runner:
    """Runs one captioner over a stream of sources with one request (the streaming driver)."""

    def __init__(
        self,
        captioner: Captioner,
        request: CaptionRequest,
        *,
        store: ResultStore | None = None,
        sinks: list[Sink] | None = None,
        options: RunOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.captioner = captioner
        self.request = request
        self.store = store
        self.sinks = sinks or []
        self.options = options or RunOptions()
        self.progress = progress or NullProgress()
        self.batch_size = max(1, self.options.batch_size or captioner.default_batch_size)
        self.prefetch = max(self.batch_size, self.options.prefetch or 3 * self.batch_size)
        self.stages = Stages(captioner, store=store, options=self.options)
        self._request_fp = request.fingerprint()

    def _prepare(self, source: Source) -> Prepared:
        return self.stages.prepare(source, self.request, self._request_fp)

    def _finish_batch(
        self, pending: list[Prepared], summary: RunSummary, guard: RepeatGuard
    ) -> None:
        todo = [p for p in pending if p.input is not None]
        inputs = [p.input for p in todo]
        requests = [p.request or self.request for p in todo]  # rendered templates differ
        captioned = self.stages.caption(inputs, requests, guard) if inputs else None
        if captioned is not None:
            summary.model_seconds += captioned.seconds
        done = self.stages.finish(pending, captioned, self.request, self.sinks)
        summary.captioned += done.captioned
        summary.cached += done.cached
        summary.failures.extend((r.source, r.error or "failed") for r in done.results if not r.ok)
        if self.options.collect:
            summary.results.extend(done.results)
        self.progress.advance(len(pending), failed=done.failed, cached=done.cached)
        if done.store_error is not None:
            raise done.store_error
        if captioned is not None and captioned.stop is not None:
            raise captioned.stop

    def _skippable(self, source: Source) -> bool:
        return bool(self.sinks) and all(s.already_done(source) for s in self.sinks)

    def run(self, sources: Iterable[Source]) -> RunSummary:
        check_request(self.captioner, self.request)
        summary = RunSummary()
        guard = RepeatGuard(self.captioner.name)
        start = time.perf_counter()
        it: Iterator[Source] = iter(sources)
        window: deque[Future[Prepared]] = deque()
        pool = ThreadPoolExecutor(
            max_workers=max(1, self.options.workers), thread_name_prefix="ck-prep"
        )
        exhausted = False
        pending: list[Prepared] = []
        n_todo = 0
        complete = False
        try:
            while True:
                # Images held = those decoding + those waiting for the batch: keep <= prefetch.
                while not exhausted and len(window) + n_todo < self.prefetch:
                    try:
                        source = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    if self._skippable(source):
                        summary.skipped += 1
                        self.progress.advance(1)
                        continue
                    window.append(pool.submit(self._prepare, source))
                if not window:
                    break
                item = window.popleft().result()
                pending.append(item)
                n_todo += item.input is not None
                if n_todo >= self.batch_size:
                    self._finish_batch(pending, summary, guard)
                    pending, n_todo = [], 0
            if pending:
                self._finish_batch(pending, summary, guard)
            complete = True
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for fut in window:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            close_error = self._close_sinks(complete)
            self.progress.close()
            summary.seconds = time.perf_counter() - start
        if close_error is not None:
            raise close_error
        return summary

    def _close_sinks(self, complete: bool) -> CaptionkitError | None:
        """Close every sink even when one fails; the first failure is returned, and raised
        only if nothing else is already stopping the run (that error is the one to show)."""
        first: CaptionkitError | None = None
        for sink in self.sinks:
            try:
                if "complete" in inspect.signature(sink.close).parameters:
                    sink.close(complete=complete)
                else:  # a Sink written before close() took ``complete``
                    sink.close()
            except CaptionkitError as exc:
                first = first or exc
        return first
