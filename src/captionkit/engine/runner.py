"""The batch engine: the one flow that the CLI, the Python API and the server all drive.

    sources -> [worker threads: read, hash, store lookup, decode, preprocess]  (bounded window)
            -> batches of uncached images -> captioner.caption_batch  (main thread: the device)
            -> store (one commit per batch) -> sinks (flushed per batch) -> progress

Decoding runs ahead of the model in a bounded window, so the device never waits for JPEG
decoding and memory never holds more than ``prefetch`` images. A failing batch is retried
image by image, so one bad image (or one out-of-memory batch) costs only itself.

Each batch is committed to the store before any sink sees it, so a kill between the two
loses nothing: the rerun finds the captions in the store and hands them to the sinks again.
Errors that no image can get past stop the run in one line: a sink that cannot write
(``OutputError``, after the batch is committed) or a damaged or locked store (``StoreError``,
after the batch in hand still reached the sinks).
"""

from __future__ import annotations

import inspect
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from captionkit.captioners.base import Captioner
from captionkit.engine.progress import NullProgress, Progress
from captionkit.engine.sinks import Sink
from captionkit.engine.store import ResultStore, result_key
from captionkit.errors import (
    CaptionkitError,
    ImageDecodeError,
    MissingDependencyError,
    StoreError,
)
from captionkit.inputs.decode import (
    DecodeLimits,
    content_hash,
    decode_image,
    normalize_image,
)
from captionkit.inputs.fetch import FetchLimits, read_source
from captionkit.inputs.sources import Source
from captionkit.styles import decorate
from captionkit.types import CaptionOutput, CaptionRequest, CaptionResult


@dataclass
class RunOptions:
    batch_size: int | None = None  # None: the backend's default_batch_size
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    prefetch: int | None = None  # images in flight; None: 3 batches
    force: bool = False  # ignore cached results in the store
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    fetch: FetchLimits = field(default_factory=FetchLimits)
    prefix: str = ""
    suffix: str = ""
    trigger_word: str = ""
    collect: bool = False  # keep every result in the summary (the Python API wants them)


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


@dataclass
class _Prepared:
    source: Source
    sha256: str = ""
    key: str = ""
    input: Any = None
    cached: CaptionResult | None = None
    error: str | None = None


class Runner:
    """Runs one captioner over a stream of sources with one request."""

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
        self._request_fp = request.fingerprint()
        self._options_fp = f"v{captioner.version}:{captioner.fingerprint()}"

    # -- worker side ------------------------------------------------------------------
    def _prepare(self, source: Source) -> _Prepared:
        item = _Prepared(source)
        try:
            if source.image is not None:
                img = source.image
                item.sha256 = content_hash(img.tobytes() + f"{img.mode}{img.size}".encode())
            else:
                data = read_source(source, self.options.fetch)
                item.sha256 = content_hash(data)
            item.key = result_key(
                item.sha256,
                self.captioner.name,
                self.captioner.model_label,
                self._request_fp,
                self._options_fp,
            )
            if self.store is not None and not self.options.force:
                item.cached = self.store.get(item.key)
                if item.cached is not None:
                    return item
            image = (
                normalize_image(img, self.options.decode)
                if source.image is not None
                else decode_image(data, self.options.decode)
            )
            item.input = self.captioner.preprocess(image, self.request)
        except ImageDecodeError as exc:
            item.error = str(exc)
        except CaptionkitError:
            raise
        except ImportError as exc:  # an optional package the backend needs: no image can pass
            raise self._missing(exc) from exc
        except Exception as exc:  # a backend's preprocess choking on one image
            item.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
        return item

    # -- device side ------------------------------------------------------------------
    def _caption(self, inputs: list[Any]) -> list[CaptionOutput]:
        try:
            outputs = self.captioner.caption_batch(inputs, self.request)
            if len(outputs) != len(inputs):
                raise RuntimeError(
                    f"backend returned {len(outputs)} outputs for {len(inputs)} images"
                )
            return outputs
        except CaptionkitError:
            raise  # bad key, missing weights, ...: no image can succeed, stop the run
        except ImportError as exc:
            raise self._missing(exc) from exc
        except Exception as exc:
            if len(inputs) == 1:
                return [CaptionOutput.failed(f"{type(exc).__name__}: {exc}")]
            # Isolate: the batch failed as a whole (one bad image, or out of memory).
            return [self._caption([x])[0] for x in inputs]

    def _missing(self, exc: ImportError) -> MissingDependencyError:
        package = exc.name or str(exc)
        return MissingDependencyError(package, self.captioner.extra or "all", self.captioner.name)

    def _result(
        self, item: _Prepared, output: CaptionOutput | None, seconds: float
    ) -> CaptionResult:
        base = dict(
            source=item.source.key,
            backend=self.captioner.name,
            model=self.captioner.model_label,
            style=self.request.style,
            prompt=self.request.prompt,
            sha256=item.sha256,
            path=str(item.source.path) if item.source.path else None,
        )
        if item.error is not None or output is None:
            return CaptionResult(text=None, error=item.error or "no output", **base)
        if output.error is not None or not output.candidates:
            return CaptionResult(  # keep extra: a failed API call still reports its usage
                text=None,
                error=output.error or "backend returned no caption",
                extra=output.extra,
                **base,
            )
        return CaptionResult(
            text=output.candidates[0].text,
            candidates=output.candidates,
            seconds=seconds,
            extra=output.extra,
            **base,
        )

    def _finish_batch(self, pending: list[_Prepared], summary: RunSummary) -> None:
        todo = [p for p in pending if p.input is not None]
        outputs: dict[int, CaptionOutput] = {}
        per_image = 0.0
        if todo:
            start = time.perf_counter()
            for p, out in zip(todo, self._caption([p.input for p in todo]), strict=True):
                outputs[id(p)] = out
            elapsed = time.perf_counter() - start
            summary.model_seconds += elapsed
            per_image = elapsed / len(todo)
        results: list[CaptionResult] = []
        fresh: list[tuple[str, CaptionResult]] = []
        for p in pending:
            if p.cached is not None:
                result = p.cached
                result.source = p.source.key
                result.path = str(p.source.path) if p.source.path else None
            else:
                result = self._result(p, outputs.get(id(p)), per_image)
                if result.ok:
                    fresh.append((p.key, result))
            results.append(result)
        store_error: StoreError | None = None
        if self.store is not None:
            try:
                self.store.put_many(fresh)  # committed before any sink sees it
            except StoreError as exc:
                store_error = exc  # still hand this batch to the sinks, then stop
        failed = cached = 0
        for p, result in zip(pending, results, strict=True):
            if result.ok:
                result.text = decorate(
                    result.text or "",
                    self.options.prefix,
                    self.options.suffix,
                    self.options.trigger_word,
                )
                if result.cached:
                    cached += 1
                    summary.cached += 1
                else:
                    summary.captioned += 1
            else:
                failed += 1
                summary.failures.append((result.source, result.error or "failed"))
            for sink in self.sinks:
                sink.write(result, p.source)
            if self.options.collect:
                summary.results.append(result)
        for sink in self.sinks:
            sink.flush()
        self.progress.advance(len(pending), failed=failed, cached=cached)
        if store_error is not None:
            raise store_error

    def _skippable(self, source: Source) -> bool:
        return bool(self.sinks) and all(s.already_done(source) for s in self.sinks)

    def run(self, sources: Iterable[Source]) -> RunSummary:
        summary = RunSummary()
        start = time.perf_counter()
        it: Iterator[Source] = iter(sources)
        window: deque[Future[_Prepared]] = deque()
        pool = ThreadPoolExecutor(
            max_workers=max(1, self.options.workers), thread_name_prefix="ck-prep"
        )
        exhausted = False
        pending: list[_Prepared] = []
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
                    self._finish_batch(pending, summary)
                    pending, n_todo = [], 0
            if pending:
                self._finish_batch(pending, summary)
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
