"""The engine's three stages, shared by every driver (streaming runner, micro-batcher, batch fn).

    prepare  (worker threads)  read, hash, store key and lookup, decode, backend preprocess
    caption  (the device)      one batch; a failing batch is retried image by image
    finish   (driver thread)   results, store commit (before any sink), decoration, sinks

A driver decides only *how* images flow (a stream, single submits, a table of records); what
happens to one image is decided here, once. The stages hold nothing that changes per batch:
the request travels with each call, so two requests with different settings can share one
:class:`Stages` (and one loaded captioner) at the same time.

Failure policy: a per-image problem fails that image (a decode error, a backend exception that
the one-by-one retry pins on one image). A run-wide problem stops the run in one line: any
``CaptionkitError`` from the backend (bad key, missing weights), a missing package, a broken
store or sink — and a backend that raises the same unexpected exception on every image of
``REPEAT_LIMIT`` batches in a row, which is a bug in the backend, not hundreds of bad images.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from captionkit.captioners.base import Captioner
from captionkit.engine.sinks import Sink
from captionkit.engine.store import ResultStore, result_key
from captionkit.errors import (
    BackendError,
    CaptionkitError,
    ConfigError,
    ImageDecodeError,
    MissingDependencyError,
    StoreError,
)
from captionkit.inputs.decode import DecodeLimits, content_hash, decode_image, normalize_image
from captionkit.inputs.fetch import FetchLimits, read_source
from captionkit.inputs.sources import Source
from captionkit.styles import decorate
from captionkit.types import CaptionOutput, CaptionRequest, CaptionResult

#: Batches in a row failing with one unexpected exception before the run stops as a bug.
REPEAT_LIMIT = 3


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
    #: Per-image prompt: ``render(source, sha256, request) -> (request, fingerprint)``
    #: (:func:`captionkit.prompts.make_renderer`); None: every image gets the run's request.
    render: Callable[[Source, str, CaptionRequest], tuple[CaptionRequest, str]] | None = None
    #: Tag rules (:class:`captionkit.tags.TagRules`) applied to tag captions before decoration.
    tags: Any = None
    #: Finish every candidate too (sidecar layouts that write all of them).
    finish_candidates: bool = False


@dataclass
class Prepared:
    """One image after the prepare stage: a cached result, a model input, or an error."""

    source: Source
    sha256: str = ""
    key: str = ""
    input: Any = None
    cached: CaptionResult | None = None
    error: str | None = None
    #: This image's own request (a rendered prompt template); None: the caller's.
    request: CaptionRequest | None = None


@dataclass
class Captioned:
    """The caption stage's answer for one batch: one output per input, the model time, and
    the run-wide error to raise once the batch is finished (the repeat guard tripped)."""

    outputs: list[CaptionOutput]
    seconds: float = 0.0
    stop: BackendError | None = None


@dataclass
class Finished:
    """The finish stage's answer: the decorated results in input order, and counts."""

    results: list[CaptionResult]
    captioned: int = 0
    cached: int = 0
    failed: int = 0
    store_error: StoreError | None = None


def check_request(captioner: Captioner | type[Captioner], request: CaptionRequest) -> None:
    """Refuse, before any work, a request the backend declares it cannot honour.

    Reads only class attributes, so run assembly can call it with the backend's class before
    loading any weights; every driver calls it again with the instance it runs.

    A free prompt on a backend that ignores prompts is an error, not a warning: the prompt
    is part of the store key and of every result, so silently dropping it would record
    captions under a prompt that was never used.
    """
    if request.num_captions > 1 and not captioner.multiple_candidates:
        raise ConfigError(
            f"backend '{captioner.name}' returns one caption per image; "
            "drop --num-captions or pick a backend that returns candidates"
        )
    if request.prompt and not captioner.accepts_prompt:
        raise ConfigError(
            f"backend '{captioner.name}' does not take a free prompt; "
            "drop --prompt and choose the wording with --style"
        )


def _signature(exc: BaseException) -> tuple[str, str]:
    """An exception's type and message shape (numbers blanked: 'batch of 8' == 'of 3')."""
    first = (str(exc).splitlines() or [""])[0]
    return type(exc).__qualname__, re.sub(r"\d+", "#", first)


class RepeatGuard:
    """Counts batches in a row that fail whole with one unexpected exception.

    Owned by a driver (one per run, batcher or actor), never by the stages; thread-safe
    because a thread-safe backend's batches may finish concurrently in the micro-batcher.
    """

    def __init__(self, backend: str, limit: int = REPEAT_LIMIT) -> None:
        self.backend = backend
        self.limit = limit
        self._lock = threading.Lock()
        self._signature: tuple[str, str] | None = None
        self._count = 0

    def passed(self) -> None:
        with self._lock:
            self._signature, self._count = None, 0

    def failed(self, exc: BaseException) -> BackendError | None:
        """Record a batch that failed whole; the error to stop with once it repeats."""
        sig = _signature(exc)
        with self._lock:
            self._count = self._count + 1 if sig == self._signature else 1
            self._signature = sig
            if self._count < self.limit:
                return None
            self._signature, self._count = None, 0
        message = " ".join(str(exc).split())[:200]
        return BackendError(
            f"backend '{self.backend}' raised {type(exc).__name__}: {message} "
            f"on {self.limit} batches in a row; this looks like a bug in the backend"
        )


class Stages:
    """prepare / caption / finish for one captioner, store and set of limits.

    Immutable after construction; every call takes the request it serves.
    """

    def __init__(
        self,
        captioner: Captioner,
        *,
        store: ResultStore | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.captioner = captioner
        self.store = store
        self.options = options or RunOptions()
        self.options_fp = f"v{captioner.version}:{captioner.fingerprint()}"

    # -- prepare (worker threads) -------------------------------------------------------------
    def prepare(
        self,
        source: Source,
        request: CaptionRequest,
        request_fp: str | None = None,
        data: bytes | None = None,
    ) -> Prepared:
        """Everything before the model for one image; per-image problems become ``error``.

        ``data``: the image's bytes when the caller already holds them (an upload).
        """
        item = Prepared(source)
        opts = self.options
        try:
            img = source.image
            if img is not None and data is None:
                item.sha256 = content_hash(img.tobytes() + f"{img.mode}{img.size}".encode())
            else:
                data = data if data is not None else read_source(source, opts.fetch)
                item.sha256 = content_hash(data)
            cap = self.captioner
            fp = request_fp or request.fingerprint()
            if opts.render is not None:
                try:
                    request, fp = opts.render(source, item.sha256, request)
                except ValueError as exc:  # no value for a variable: this image fails
                    item.error = str(exc)
                    return item
                item.request = request
            hint = source.meta.get("prompt_hint")  # a video's clip grid: say what it is
            if hint and cap.accepts_prompt and request.prompt is None:
                from dataclasses import replace

                from captionkit.styles import get_style

                instruction = f"{hint} {get_style(request.style).instruction}"
                request = item.request = replace(request, prompt=instruction)
                fp = request.fingerprint()
            item.key = result_key(item.sha256, cap.name, cap.model_label, fp, self.options_fp)
            if self.store is not None and not opts.force:
                item.cached = self.store.get(item.key)
                if item.cached is not None:
                    return item
            image = (
                normalize_image(img, opts.decode)
                if data is None
                else decode_image(data, opts.decode, draft=cap.decode_size)
            )
            item.input = cap.preprocess(image, request)
        except ImageDecodeError as exc:
            item.error = str(exc)
        except CaptionkitError:
            raise
        except ImportError as exc:  # an optional package the backend needs: no image can pass
            raise self.missing(exc) from exc
        except Exception as exc:  # a backend's preprocess choking on one image
            item.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
        return item

    def missing(self, exc: ImportError) -> MissingDependencyError:
        package = exc.name or str(exc)
        return MissingDependencyError(package, self.captioner.extra or "all", self.captioner.name)

    # -- caption (the device) ---------------------------------------------------------------------
    def _call(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        outputs = self.captioner.caption_batch(inputs, request)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(inputs)} images")
        return outputs

    def _attempt(
        self, inputs: list[Any], request: CaptionRequest
    ) -> tuple[list[CaptionOutput] | None, Exception | None]:
        try:
            return self._call(inputs, request), None
        except CaptionkitError:
            raise  # bad key, missing weights, ...: no image can succeed, stop the run
        except ImportError as exc:
            raise self.missing(exc) from exc
        except Exception as exc:
            return None, exc

    def caption(
        self,
        inputs: list[Any],
        request: CaptionRequest | Sequence[CaptionRequest],
        guard: RepeatGuard | None = None,
    ) -> Captioned:
        """One batch through the model; a failing batch (one bad image, out of memory) is
        retried image by image so it costs only the images that fail alone.

        ``request`` may be one per input (rendered prompt templates): inputs are grouped by
        request, one model call per group, because a backend takes one request per call.
        """
        if isinstance(request, CaptionRequest):
            return self._caption(inputs, request, guard)
        requests = list(request)
        if len(requests) != len(inputs):
            raise ValueError(f"{len(requests)} requests for {len(inputs)} inputs")
        groups: dict[str, list[int]] = {}
        by_fp: dict[str, CaptionRequest] = {}
        for i, req in enumerate(requests):
            fp = req.fingerprint()
            groups.setdefault(fp, []).append(i)
            by_fp.setdefault(fp, req)
        if len(groups) == 1:
            return self._caption(inputs, requests[0] if requests else CaptionRequest(), guard)
        outputs: list[CaptionOutput | None] = [None] * len(inputs)
        total = Captioned([])
        for fp, idx in groups.items():
            part = self._caption([inputs[i] for i in idx], by_fp[fp], guard)
            for i, out in zip(idx, part.outputs, strict=True):
                outputs[i] = out
            total.seconds += part.seconds
            total.stop = total.stop or part.stop
        total.outputs = [o for o in outputs if o is not None]
        return total

    def _caption(
        self, inputs: list[Any], request: CaptionRequest, guard: RepeatGuard | None
    ) -> Captioned:
        start = time.perf_counter()
        outputs, exc = self._attempt(inputs, request)
        if outputs is not None:
            if guard is not None:
                guard.passed()
            return Captioned(outputs, time.perf_counter() - start)
        assert exc is not None
        errors: list[Exception] = [exc]
        if len(inputs) == 1:
            outputs = [CaptionOutput.failed(f"{type(exc).__name__}: {exc}")]
        else:
            errors = []
            outputs = []
            for x in inputs:
                single, err = self._attempt([x], request)
                if single is not None:
                    outputs.append(single[0])
                else:
                    assert err is not None
                    errors.append(err)
                    outputs.append(CaptionOutput.failed(f"{type(err).__name__}: {err}"))
        stop = None
        if guard is not None:
            same = len(errors) == len(inputs) and all(
                _signature(e) == _signature(exc) for e in errors
            )
            if same:
                stop = guard.failed(exc)
            else:
                guard.passed()
        return Captioned(outputs, time.perf_counter() - start, stop)

    # -- finish (driver thread) -------------------------------------------------------------------
    def result(
        self,
        item: Prepared,
        output: CaptionOutput | None,
        request: CaptionRequest,
        seconds: float = 0.0,
    ) -> CaptionResult:
        """The undecorated record of one image, as the store keeps it."""
        cap = self.captioner
        base: dict[str, Any] = dict(
            source=item.source.key,
            backend=cap.name,
            model=cap.model_label,
            style=request.style,
            prompt=request.prompt,
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

    def finish(
        self,
        items: Sequence[Prepared],
        captioned: Captioned | None,
        request: CaptionRequest,
        sinks: Sequence[Sink] = (),
    ) -> Finished:
        """Results for ``items`` (cached ones and those in ``captioned``, in the order the
        model received them), committed to the store before any sink sees them.

        A store that fails is returned in ``store_error`` after the sinks still got the batch
        (the driver stops the run with it); a sink's ``OutputError`` propagates after the
        commit, so nothing computed is lost.
        """
        outputs = iter(captioned.outputs if captioned is not None else ())
        todo = sum(1 for p in items if p.input is not None)
        per_image = captioned.seconds / todo if captioned is not None and todo else 0.0
        done = Finished(results=[])
        fresh: list[tuple[str, CaptionResult]] = []
        for p in items:
            if p.cached is not None:
                result = p.cached
                result.source = p.source.key
                result.path = str(p.source.path) if p.source.path else None
            else:
                output = next(outputs) if p.input is not None else None
                result = self.result(p, output, p.request or request, per_image)
                if result.ok:
                    fresh.append((p.key, result))
            done.results.append(result)
        if self.store is not None:
            try:
                self.store.put_many(fresh)  # committed before any sink sees it
            except StoreError as exc:
                done.store_error = exc  # still hand this batch to the sinks, then stop
        opts = self.options
        for p, result in zip(items, done.results, strict=True):
            if result.ok:
                result.text = self.finished_text(result.text or "", result)
                if opts.finish_candidates:
                    for c in result.candidates:
                        c.text = self.finished_text(c.text, result, first=False)
                if result.cached:
                    done.cached += 1
                else:
                    done.captioned += 1
            else:
                done.failed += 1
            for sink in sinks:
                sink.write(result, p.source)
        for sink in sinks:
            sink.flush()
        return done

    def finished_text(self, text: str, result: CaptionResult, *, first: bool = True) -> str:
        """A stored caption as the user gets it: tag rules (for tag captions: style ``tags``
        or a backend that made tags, whose ranked ``extra["tags"]`` rows keep their scores),
        then the trigger word, prefix and suffix."""
        opts = self.options
        rules = opts.tags
        ranked = result.extra.get("tags")
        if rules is not None and rules.active and (result.style == "tags" or ranked is not None):
            rows = ranked if isinstance(ranked, list) else []
            if first and rows and all(isinstance(r, list | tuple) and len(r) >= 2 for r in rows):
                text = rules.apply_ranked(rows, shown=text)
            else:
                text = rules.apply_text(text)
        return decorate(text, opts.prefix, opts.suffix, opts.trigger_word)
