"""The server's side of captioning: one loaded model behind the engine's micro-batcher.

Nothing here captions: the run is assembled by :func:`captionkit.session.build_run` (the same
settings layering, store and decoration as the CLI) and every image goes through
:class:`captionkit.engine.batcher.MicroBatcher`, so concurrent requests share batches and
the results store. What the server adds around the batcher:

* **admission** — at most ``max_queue`` images are admitted at once across all requests; a
  request that does not fit is refused whole with :class:`QueueFull` (503 + Retry-After)
  instead of growing memory;
* **a submit window** — admitted images enter the batcher only a few batches at a time, so
  the images of a client that disconnected, still waiting for the window, are dropped
  without ever reaching the model (images already in the batcher finish and land in the
  store, where a retry finds them);
* **per-request backend options** the operator allowed (``--allow-option``): each distinct
  set loads one more copy of the model, its own batcher, a few kept (LRU).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from captionkit.engine.batcher import MicroBatcher
from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source
from captionkit.serve.config import ServeConfig
from captionkit.serve.metrics import Metrics
from captionkit.types import CaptionRequest, CaptionResult, Decoding

if TYPE_CHECKING:
    from captionkit.captioners.base import Captioner
    from captionkit.engine.store import ResultStore
    from captionkit.session import RunSpec


class QueueFull(Exception):
    """More images than the queue holds are waiting: the client should retry later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is busy: too many images are waiting; retry shortly")
        self.retry_after = retry_after


@dataclass
class Item:
    """One image of a request: uploaded bytes, or a file under ``--root``."""

    name: str
    data: bytes | None = None
    source: Source | None = None
    #: Already failed before captioning (a URL that could not be fetched): answered alone.
    error: str | None = None


class Service:
    """The loaded model(s), their batchers, the store, admission and metrics."""

    def __init__(self, config: ServeConfig, *, captioner: Captioner | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.run: RunSpec | None = None
        self.captioner: Captioner | None = captioner
        self.store: ResultStore | None = None
        self.main: MicroBatcher | None = None
        self._variants: OrderedDict[str, tuple[Captioner, MicroBatcher]] = OrderedDict()
        self._load_lock = threading.Lock()
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._window: asyncio.Semaphore | None = None
        self._own_captioner = captioner is None
        self._closed = False

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Assemble the run, open the store, load the model once, start the batcher."""
        from captionkit import session

        cls = type(self.captioner) if self.captioner is not None else None
        run = session.build_run(
            (), captioner=cls, options=None if cls else self.config.options, **self.config.run
        )
        self.run = run
        self.store = session.open_store(run.store)
        try:
            if self.captioner is None:
                self.captioner = session.load(run)
            self.main = self._batcher(self.captioner)
        except BaseException:
            if self.store is not None:
                self.store.close()
            raise

    def _batcher(self, captioner: Captioner) -> MicroBatcher:
        from captionkit.engine.stages import RunOptions
        from captionkit.inputs.decode import DecodeLimits
        from captionkit.inputs.fetch import FetchLimits

        assert self.run is not None
        run, limits = self.run, self.config.limits
        options = RunOptions(
            batch_size=self.config.max_batch or run.control.batch_size,
            workers=run.control.workers,
            decode=DecodeLimits(max_pixels=min(limits.max_pixels, run.limits.max_pixels)),
            fetch=FetchLimits(max_bytes=limits.max_image_bytes, timeout=run.limits.timeout),
            prefix=run.decoration.prefix,
            suffix=run.decoration.suffix,
            trigger_word=run.decoration.trigger_word,
        )
        return MicroBatcher(
            captioner,
            store=self.store,
            options=options,
            max_batch=self.config.max_batch,
            max_wait_ms=self.config.max_wait_ms,
            concurrency=self.config.concurrency,
            on_batch=self.metrics.batch,
        )

    def close(self) -> None:
        """Finish what was submitted, then release the models and the store (once)."""
        if self._closed:
            return
        self._closed = True
        for captioner, batcher in [*self._variants.values()]:
            batcher.close()
            captioner.close()
        self._variants.clear()
        if self.main is not None:
            self.main.close()
        if self.captioner is not None and self._own_captioner:
            self.captioner.close()
        if self.store is not None:
            self.store.close()

    # -- requests -----------------------------------------------------------------------------
    def request(
        self,
        *,
        style: str | None = None,
        prompt: str | None = None,
        num_captions: int | None = None,
        decoding: Mapping[str, Any] | None = None,
    ) -> CaptionRequest:
        """A request on the server's defaults; invalid values raise ``ConfigError`` (422)."""
        from captionkit.engine.stages import check_request
        from captionkit.styles import get_style

        assert self.run is not None and self.captioner is not None
        base = self.run.request
        fields = asdict(base.decoding)
        unknown = sorted(set(decoding or {}) - set(fields))
        if unknown:
            raise ConfigError(f"unknown decoding setting: {', '.join(unknown)}")
        try:
            merged = Decoding(**{**fields, **dict(decoding or {})})
        except TypeError as exc:
            raise ConfigError(f"bad decoding settings: {exc}") from None
        style = style or base.style
        get_style(style)
        request = CaptionRequest(
            style=style,
            prompt=prompt or None,
            num_captions=base.num_captions if num_captions is None else num_captions,
            decoding=merged,
        )
        check_request(self.captioner, request)
        return request

    def batcher_for(self, options: Mapping[str, Any] | None) -> MicroBatcher:
        """The batcher of the model loaded with ``options`` on top of the server's own
        (loaded now if new: call from a worker thread)."""
        from captionkit import session

        assert self.main is not None and self.run is not None
        if not options:
            return self.main
        allowed = set(self.config.allow_options)
        refused = sorted(set(options) - allowed)
        if refused:
            shown = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"backend option {', '.join(refused)} is not allowed by this server "
                f"(allowed: {shown})"
            )
        merged = {**self.run.options, **options}
        if merged == self.run.options:
            return self.main
        key = json.dumps(merged, sort_keys=True, default=str)
        with self._load_lock:
            if key in self._variants:
                self._variants.move_to_end(key)
                return self._variants[key][1]
            captioner = session.load_backend(
                self.run.backend,
                rewrite=self.run.rewrite,
                rewrite_options=self.run.rewrite_options,
                **merged,
            )
            batcher = self._batcher(captioner)
            self._variants[key] = (captioner, batcher)
            while len(self._variants) > max(0, self.config.max_variants):
                _, (old_cap, old_batcher) = self._variants.popitem(last=False)
                threading.Thread(
                    target=lambda c=old_cap, b=old_batcher: (b.close(), c.close()),
                    name="ck-serve-evict",
                    daemon=True,
                ).start()
            return batcher

    # -- admission ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Images admitted and not yet answered."""
        return self._admitted

    def admit(self, n: int) -> None:
        """Take ``n`` places in the queue or raise :class:`QueueFull` (the whole request)."""
        with self._admit_lock:
            if self._admitted + n > self.config.limits.max_queue:
                self.metrics.reject()
                raise QueueFull(self.retry_after())
            self._admitted += n

    def release(self, n: int) -> None:
        with self._admit_lock:
            self._admitted -= n

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to drain the queue at the
        recent rate, at least 1."""
        snap = self.metrics.snapshot()
        p50 = snap["latency_ms"]["p50"] / 1000.0
        return max(1, min(60, round(p50 * 2) or 1))

    def _window_sem(self) -> asyncio.Semaphore:
        if self._window is None:
            assert self.main is not None
            slots = self.config.concurrency if self.main.captioner.thread_safe else 1
            self._window = asyncio.Semaphore(max(8, self.main.max_batch * (slots + 1) * 2))
        return self._window

    async def caption(
        self, items: list[Item], request: CaptionRequest, batcher: MicroBatcher
    ) -> list[dict[str, Any]]:
        """Caption ``items`` (already admitted); each answer is the JSONL record plus timings.

        Cancelling this coroutine (the client went away) drops the images that have not
        entered the batcher yet.
        """
        return list(await asyncio.gather(*(self._one(i, request, batcher) for i in items)))

    async def _one(
        self, item: Item, request: CaptionRequest, batcher: MicroBatcher
    ) -> dict[str, Any]:
        window = self._window_sem()
        start = time.perf_counter()
        try:
            await window.acquire()
        except asyncio.CancelledError:
            self.metrics.image("cancelled")
            raise
        loop = asyncio.get_running_loop()
        try:
            image = item.source if item.source is not None else (item.data or b"")
            future: Future[CaptionResult] = batcher.submit(image, request, key=item.name)
        except BaseException:
            window.release()
            raise
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(window.release))
        submitted = time.perf_counter()
        result = await asyncio.wrap_future(future)
        done = time.perf_counter()
        self.metrics.image(
            "failed" if not result.ok else "cached" if result.cached else "captioned"
        )
        return answer(result, item.name, wait=submitted - start, total=done - start)


def answer(result: CaptionResult, name: str, *, wait: float, total: float) -> dict[str, Any]:
    """The JSONL record of one image (``StreamSink``'s fields) plus the server's timings."""
    record = result.to_dict()
    record["source"] = name
    record.pop("path", None)  # a server path is nobody's business; ``source`` names it
    record["timings"] = {
        "window_ms": round(wait * 1000, 2),
        "model_ms": round(result.seconds * 1000, 2),
        "total_ms": round(total * 1000, 2),
    }
    return record
