"""The micro-batcher: submit one image, get a future; batches form by size or a short deadline.

The HTTP server's driver. Each request arrives alone, but the device earns its keep on
batches, so submitted images wait at most ``max_wait_ms`` for company:

    submit(image, request) -> [prepare pool: read, hash, store lookup, decode, preprocess]
        store hit  -> the future resolves at once, the model never sees it
        otherwise  -> the queue of its request's fingerprint
    dispatcher: a queue with ``max_batch`` images, or whose oldest image waited ``max_wait_ms``,
        becomes one caption call -> store commit -> each future gets its result

Images with different ``CaptionRequest``s never share a call (one queue per fingerprint). The
calls are serialised unless the captioner declares ``thread_safe``; then up to ``concurrency``
run at once. A per-image failure resolves that future with a failed ``CaptionResult``; a
run-wide ``CaptionkitError`` (bad key, broken store, a backend bug caught by the repeat
guard) fails every pending future with that error, and the batcher keeps serving new
submits: whether to stop is the server's policy. ``close()`` drains what was submitted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from captionkit.captioners.base import Captioner
from captionkit.engine.stages import Prepared, RepeatGuard, RunOptions, Stages, check_request
from captionkit.engine.store import ResultStore
from captionkit.inputs.sources import Source
from captionkit.types import CaptionRequest, CaptionResult

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class _Queue:
    """Prepared images of one request, oldest first, waiting for the model."""

    request: CaptionRequest
    items: list[tuple[Prepared, Future[CaptionResult]]] = field(default_factory=list)
    since: float = 0.0  # monotonic time the oldest waiting image arrived


class MicroBatcher:
    """Turns single submits into batched ``caption_batch`` calls on one loaded captioner."""

    def __init__(
        self,
        captioner: Captioner,
        *,
        store: ResultStore | None = None,
        options: RunOptions | None = None,
        max_batch: int | None = None,
        max_wait_ms: float = 10.0,
        concurrency: int = 4,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``on_batch(n)`` is called with each batch's size as it goes to the model (metrics)."""
        self.captioner = captioner
        self.on_batch = on_batch
        self.options = options or RunOptions()
        self.stages = Stages(captioner, store=store, options=self.options)
        self.max_batch = max(
            1, max_batch or self.options.batch_size or captioner.default_batch_size
        )
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        slots = max(1, concurrency) if captioner.thread_safe else 1
        self._slots = threading.Semaphore(slots)
        self._guard = RepeatGuard(captioner.name)
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, _Queue] = OrderedDict()
        self._running: set[Future[CaptionResult]] = set()
        self._closing = False
        self._prep = ThreadPoolExecutor(
            max_workers=max(1, self.options.workers), thread_name_prefix="ck-mb-prep"
        )
        self._device = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="ck-mb-batch")
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="ck-mb-dispatch", daemon=True
        )
        self._dispatcher.start()

    # -- the caller's side ----------------------------------------------------------------------
    def submit(
        self,
        image: Source | Image | bytes,
        request: CaptionRequest | None = None,
        *,
        key: str = "image",
    ) -> Future[CaptionResult]:
        """Queue one image (a Source, a PIL image or encoded bytes) for captioning.

        Raises ``ConfigError`` at once for a request the backend cannot honour, and
        ``RuntimeError`` after :meth:`close`.
        """
        request = request or CaptionRequest()
        check_request(self.captioner, request)
        data: bytes | None = None
        if isinstance(image, Source):
            source = image
        elif isinstance(image, bytes | bytearray | memoryview):
            source, data = Source(key=key), bytes(image)
        else:
            source = Source(key=key, image=image)
        future: Future[CaptionResult] = Future()
        future.set_running_or_notify_cancel()
        with self._cond:
            if self._closing:
                raise RuntimeError("the micro-batcher is closed")
            self._running.add(future)
        fp = request.fingerprint()
        try:
            self._prep.submit(self._prepare, source, request, fp, data, future)
        except RuntimeError:  # close() shut the pool down between the check and here
            self._settle(future, error=RuntimeError("the micro-batcher is closed"))
            raise
        return future

    def caption(
        self, image: Source | Image | bytes, request: CaptionRequest | None = None
    ) -> CaptionResult:
        """Submit and wait: the one-call form for a handler that has nothing else to do."""
        return self.submit(image, request).result()

    # -- prepare (worker threads) ---------------------------------------------------------------
    def _prepare(
        self,
        source: Source,
        request: CaptionRequest,
        fp: str,
        data: bytes | None,
        future: Future[CaptionResult],
    ) -> None:
        try:
            item = self.stages.prepare(source, request, fp, data)
            if item.input is None:  # a store hit or a per-image failure: no model needed
                self._resolve([(item, future)], request, None)
                return
        except BaseException as exc:  # a run-wide error: this image's caller gets it
            self._fail([future], exc)
            return
        with self._cond:
            if future not in self._running:  # cancelled by close(cancel=True) meanwhile
                return
            queue = self._queues.get(fp)
            if queue is None:
                queue = self._queues[fp] = _Queue(request, since=time.monotonic())
            queue.items.append((item, future))
            self._cond.notify_all()

    # -- dispatch -------------------------------------------------------------------------------
    def _ready(self, now: float) -> tuple[str, float | None]:
        """The fingerprint of a queue due for the model ('' if none), else the next wait."""
        wait: float | None = None
        for fp, queue in self._queues.items():
            due = queue.since + self.max_wait
            if len(queue.items) >= self.max_batch or due <= now or self._closing:
                return fp, None
            wait = due - now if wait is None else min(wait, due - now)
        return "", wait

    def _take(self) -> tuple[CaptionRequest, list[tuple[Prepared, Future[CaptionResult]]]] | None:
        """Block until a batch is due; None once closing and nothing is left."""
        with self._cond:
            while True:
                fp, wait = self._ready(time.monotonic())
                if fp:
                    queue = self._queues[fp]
                    batch, queue.items = (
                        queue.items[: self.max_batch],
                        queue.items[self.max_batch :],
                    )
                    if queue.items:  # they waited already: due at once, after the others
                        self._queues.move_to_end(fp)
                    else:
                        del self._queues[fp]
                    return queue.request, batch
                if self._closing and not self._queues and not self._running:
                    return None  # everything submitted is resolved
                self._cond.wait(timeout=wait if wait is not None else 0.05)

    def _dispatch(self) -> None:
        while True:
            self._slots.acquire()  # wait for the device before forming a batch: it grows meanwhile
            taken = self._take()
            if taken is None:
                self._slots.release()
                return
            request, batch = taken
            self._device.submit(self._run_batch, request, batch)

    # -- caption + finish -----------------------------------------------------------------------
    def _run_batch(
        self, request: CaptionRequest, batch: list[tuple[Prepared, Future[CaptionResult]]]
    ) -> None:
        try:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            inputs = [item.input for item, _ in batch]
            captioned = self.stages.caption(inputs, request, self._guard)
            self._resolve(batch, request, captioned)
        except BaseException as exc:
            self._fail_all(exc, batch)
        finally:
            self._slots.release()

    def _resolve(
        self,
        batch: list[tuple[Prepared, Future[CaptionResult]]],
        request: CaptionRequest,
        captioned: Any,
    ) -> None:
        done = self.stages.finish([item for item, _ in batch], captioned, request)
        stop = done.store_error or (captioned.stop if captioned is not None else None)
        if stop is not None:
            self._fail_all(stop, batch)
            return
        for (_, future), result in zip(batch, done.results, strict=True):
            self._settle(future, result=result)

    def _fail_all(self, exc: BaseException, batch: list[tuple[Prepared, Future[Any]]]) -> None:
        """A run-wide error: this batch and every image still waiting fail with it."""
        with self._cond:
            waiting = [f for q in self._queues.values() for _, f in q.items]
            self._queues.clear()
            self._guard.passed()
        self._fail([f for _, f in batch] + waiting, exc)

    def _fail(self, futures: list[Future[CaptionResult]], exc: BaseException) -> None:
        for future in futures:
            self._settle(future, error=exc)

    def _settle(
        self,
        future: Future[CaptionResult],
        result: CaptionResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._cond:
            if future not in self._running:
                return
            self._running.discard(future)
            self._cond.notify_all()
        if error is not None:
            future.set_exception(error)
        elif result is not None:
            future.set_result(result)

    # -- shutdown -------------------------------------------------------------------------------
    def close(self, *, cancel: bool = False) -> None:
        """Stop taking submits and finish what was submitted (``cancel``: fail it instead)."""
        with self._cond:
            if self._closing and not self._dispatcher.is_alive():
                return
            self._closing = True
            self._cond.notify_all()
        if cancel:
            from concurrent.futures import CancelledError

            with self._cond:
                self._queues.clear()
                pending = list(self._running)
            self._fail(pending, CancelledError("the micro-batcher was closed"))
        self._prep.shutdown(wait=True)
        with self._cond:
            self._cond.notify_all()
        self._dispatcher.join()
        self._device.shutdown(wait=True)

    @property
    def pending(self) -> int:
        """Images submitted and not yet resolved."""
        with self._cond:
            return len(self._running)

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
