"""A fake Captioner for engine, API and registry tests: no model, fully controllable.

Captions are deterministic from the image's mean colour ("a red image"), so a test can tell
which image produced which result. A test can make it raise on images of given colours
(the batch fails, then each image is retried alone), raise a fatal ``BackendError``, return
per-image failures, and read back every call it received, batch sizes, and how many
preprocessed images were waiting for the model at most ("in flight").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from captionkit.captioners import registry
from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.errors import BackendError
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

NAME = "fake"

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
    "yellow": (230, 230, 20),
}


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The palette colour nearest to ``rgb`` (squared distance)."""
    return min(
        PALETTE, key=lambda n: sum((a - b) ** 2 for a, b in zip(PALETTE[n], rgb, strict=True))
    )


def caption_for(colour: str) -> str:
    return f"a {colour} image"


def write_image(path: Path, colour: str | tuple[int, int, int] = "red", size=(32, 24), fmt=None):
    """Write a solid-colour image (palette name or RGB) and return its path."""
    from PIL import Image

    rgb = PALETTE[colour] if isinstance(colour, str) else colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


class FakeOptions(BackendOptions):
    #: Changes the backend-options fingerprint (and so the store key) without changing text.
    variant: str = "v1"
    #: Suffix added to every caption, to tell option sets apart in outputs.
    tag: str = ""


class FakeCaptioner(Captioner[FakeOptions]):
    name: ClassVar[str] = NAME
    extra: ClassVar[str] = "fake"
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = "deterministic captions from colour (tests only)"
    Options: ClassVar[type[BackendOptions]] = FakeOptions
    thread_safe: ClassVar[bool] = False
    default_batch_size: ClassVar[int] = 4
    #: Every instance built while registered, so a test reaches the one the API created.
    instances: ClassVar[list[FakeCaptioner]] = []

    def __init__(self, model: str = "", options: FakeOptions | None = None) -> None:
        super().__init__(model or "fake-model", options)
        #: A batch containing one of these colours raises RuntimeError (isolated per image).
        self.raise_on: set[str] = set()
        #: A batch containing one of these colours raises BackendError (aborts the run).
        self.fatal_on: set[str] = set()
        #: Images of these colours come back as CaptionOutput.failed (no exception).
        self.fail_output_on: set[str] = set()
        #: Call numbers (1-based) of caption_batch that raise RuntimeError.
        self.raise_on_calls: set[int] = set()
        #: Every call raises this (a coding bug in a backend: the repeat guard's case).
        self.always_raise: BaseException | None = None
        #: Seconds each caption_batch sleeps (lets a test overlap or order batches).
        self.caption_delay = 0.0
        #: The request of each caption_batch call, beside ``calls``.
        self.requests: list[CaptionRequest] = []
        #: How many caption_batch calls ran at once, at most (thread-safety checks).
        self.concurrent = 0
        self.max_concurrent = 0
        #: Seconds each preprocess sleeps (lets the prefetch window fill up).
        self.preprocess_delay = 0.0
        self.calls: list[list[str]] = []
        self.preprocessed = 0
        self.closed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        FakeCaptioner.instances.append(self)

    @property
    def batch_sizes(self) -> list[int]:
        return [len(c) for c in self.calls]

    @property
    def captioned(self) -> list[str]:
        """Colours in the order caption_batch received them (all calls flattened)."""
        return [c for call in self.calls for c in call]

    def preprocess(self, image: Any, request: CaptionRequest) -> Any:
        if self.preprocess_delay:
            time.sleep(self.preprocess_delay)
        r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
        with self._lock:
            self.preprocessed += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return colour_name((r, g, b))

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        with self._lock:
            self.calls.append(list(inputs))
            self.requests.append(request)
            n = len(self.calls)
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.caption_delay:
                time.sleep(self.caption_delay)
            return self._caption(inputs, request, n)
        finally:
            with self._lock:
                self.concurrent -= 1

    def _caption(self, inputs: list[Any], request: CaptionRequest, n: int) -> list[CaptionOutput]:
        if self.always_raise is not None:
            raise self.always_raise
        if self.fatal_on & set(inputs):
            raise BackendError("fake backend: the server refused the key")
        if n in self.raise_on_calls or self.raise_on & set(inputs):
            raise RuntimeError(f"fake backend choked on a batch of {len(inputs)}")
        # Only reached once per image that completes (retries are counted once).
        with self._lock:
            self.in_flight -= len(inputs)
        outputs = []
        for colour in inputs:
            if colour in self.fail_output_on:
                outputs.append(CaptionOutput.failed(f"no caption for {colour}"))
                continue
            text = caption_for(colour) + self.options.tag
            outputs.append(
                CaptionOutput(
                    [Candidate(text, 0.9), Candidate(text + " again", 0.1)],
                    extra={"colour": colour},
                )
            )
        return outputs

    def close(self) -> None:
        self.closed += 1


@contextmanager
def registered(cls: type[Captioner] = FakeCaptioner, name: str | None = None) -> Iterator[type]:
    """Register ``cls`` for the duration of a test, and always unregister it."""
    FakeCaptioner.instances.clear()
    registry.register(cls, name)
    try:
        yield cls
    finally:
        registry.unregister(name or cls.name)
        FakeCaptioner.instances.clear()


class FakeDetector:
    """A grounded detector that sees ``labels`` (score 0.9) in every image; records batch sizes."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.batches: list[int] = []

    def detect_batch(self, arrays: list[Any]) -> list[list[Any]]:
        from captionkit.captioners.grounded.detectors import Detection

        self.batches.append(len(arrays))
        return [[Detection(label, 0.9, (0, 0, 4, 4)) for label in self.labels] for _ in arrays]
