"""The one interface every backend implements.

A backend is constructed from a model id plus a validated ``Options`` model, and captions a
*batch* of decoded images per call: batching is where the device earns its keep, so the
engine never calls a backend one image at a time unless isolating a failure.

The split follows transformers' pipelines: ``preprocess`` is CPU work on one image that the
engine runs in worker threads while the model computes the previous batch;
``caption_batch`` is the device step plus post-processing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from captionkit.types import CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from PIL.Image import Image


class BackendOptions(BaseModel):
    """Options a backend accepts; ``extra="forbid"`` turns a typo into a clear error."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


#: The Options model of a backend: ``class HFCaptioner(Captioner[HFOptions])`` makes
#: ``self.options`` an ``HFOptions`` for the type checker, with no cast in the backend.
OptionsT = TypeVar("OptionsT", bound=BackendOptions)


class Captioner(ABC, Generic[OptionsT]):
    """Base class of all backends.

    Subclasses set ``name`` (the registry key), ``extra`` (the pip extra that brings their
    dependencies) and ``Options`` (the class the registry validates options with, which is
    also the type parameter: ``class Mine(Captioner[MyOptions]): Options = MyOptions``);
    they implement :meth:`caption_batch`.
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: How many images one call should receive; the engine uses it unless told otherwise.
    default_batch_size: ClassVar[int] = 8
    #: Bump when a change to the backend's code changes what it writes for the same input:
    #: it is part of the results-store key, so stored captions of the old code are not reused.
    version: ClassVar[str] = "1"

    # -- capabilities: declared here, read by the engine and every face, never probed ------
    #: May two threads call :meth:`caption_batch` at once, each with its own request? (The
    #: server's micro-batcher runs requests with different settings through one captioner.)
    thread_safe: ClassVar[bool] = False
    #: Does a free ``prompt`` reach the model? (False: the style alone decides the wording.)
    accepts_prompt: ClassVar[bool] = True
    #: Can it return ``num_captions > 1`` distinct, ranked candidates?
    multiple_candidates: ClassVar[bool] = True
    #: Does it send images to a paid service? (A key is needed; ``--dry-run`` estimates cost.)
    hosted: ClassVar[bool] = False

    #: The validated options this instance was built with (an instance of ``Options``).
    options: OptionsT

    def __init__(self, model: str = "", options: OptionsT | None = None) -> None:
        self.model = model
        self.options = options if options is not None else cast(OptionsT, self.Options())
        self.check_requirements()

    def check_requirements(self) -> None:
        """Fail before any work, with the pip extra to install, when a module is missing."""
        import importlib.util

        from captionkit.errors import MissingDependencyError

        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a broken or blocked install
                found = False
            if not found:
                raise MissingDependencyError(module, self.extra, f"backend '{self.name}'")

    @property
    def model_label(self) -> str:
        """The model name written into results (overridden where the id is a local path)."""
        return self.model

    def preprocess(self, image: Image, request: CaptionRequest) -> Any:
        """CPU-side preparation of one image, run in worker threads. Default: none."""
        return image

    @abstractmethod
    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        """Caption ``inputs`` (outputs of :meth:`preprocess`), one output per input.

        A failure specific to one image is returned as ``CaptionOutput.failed(...)``;
        raising fails the batch, and the engine then retries its images one by one.
        """

    @property
    def decode_size(self) -> int | None:
        """The side this backend's preprocessing resizes images to (at least): a JPEG then
        decodes at a reduced scale not below it (Pillow's draft mode, 6-13x faster on large
        photos). None: decode at full size."""
        return None

    def estimate(
        self, sizes: list[tuple[int, int]], request: CaptionRequest | None = None
    ) -> dict[str, Any] | None:
        """Tokens and cost of captioning images of ``sizes``, for ``--dry-run``/``--max-cost``:
        ``{"input_tokens", "output_tokens", "cost"}`` (cost None without prices). None: the
        backend runs locally and has no token cost."""
        return None

    def stats(self) -> dict[str, Any]:
        """Usage totals of the run so far (requests, tokens, cost) for the summary; {} = none."""
        return {}

    def fingerprint(self) -> str:
        """What besides the request changes outputs (options), for the store key."""
        return self.options.model_dump_json(exclude_none=True)

    def close(self) -> None:
        """Release devices, sessions or servers. Called once by the engine at the end."""

    def __enter__(self) -> Captioner[OptionsT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
