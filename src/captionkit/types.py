"""Plain values that travel between the layers: what to caption, how, and what came out.

They are dataclasses rather than pydantic models because they cross thread boundaries
millions of times in a large batch job and need no validation once built; the one place
user input is validated is :mod:`captionkit.config` and each backend's ``Options``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PIL is light, but keep the import graph of --help minimal
    from PIL.Image import Image


@dataclass(frozen=True)
class Decoding:
    """Generation settings: the one type every runtime that decodes text reads.

    Hugging Face captioners, the text LLMs (grounded writer, ``--rewrite``), hosted APIs and
    training's validation all take a ``Decoding``; each runtime has one adapter that turns it
    into its own arguments and ignores what it cannot honour (an API has no beams):
    :func:`captionkit.llm.hf_decoding.generate_kwargs` (transformers: ``hf``, the text LLMs,
    training), :func:`captionkit.llm.gguf.llama_cpp_args` (llama.cpp) and each provider's
    request body. ``top_k=0`` is "off" everywhere. A ``seed`` travels with the call (a
    per-call generator), never through torch's global one. The values are part of the
    results-store key, so changing any of them recomputes rather than reusing.

    ``do_sample=False`` is greedy (or beam search with ``num_beams > 1``) whatever
    ``temperature`` says. It validates itself, so a bad value is one line wherever it is built.
    """

    max_new_tokens: int = 60
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    #: Strings that end generation (text LLMs); captioners ignore them.
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from captionkit.errors import ConfigError

        checks = (
            (self.max_new_tokens >= 1, "--max-new-tokens must be at least 1"),
            (self.num_beams >= 1, "--num-beams must be at least 1"),
            (0.0 <= self.temperature <= 100.0, "--temperature must be between 0 and 100"),
            (not self.do_sample or self.temperature > 0, "--sample needs --temperature above 0"),
            (0.0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.top_k >= 0, "--top-k must be 0 (off) or more"),
            (self.repetition_penalty > 0, "--repetition-penalty must be positive"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if not isinstance(self.stop, tuple):  # lists from JSON/config: keep it hashable
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return not self.do_sample and self.num_beams == 1

    def replace(self, **changes: Any) -> Decoding:
        """A copy with ``changes`` applied (and validated)."""
        from dataclasses import replace

        return replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """The fields that identify outputs, for fingerprints: an empty ``stop`` is left out
        so results stored before it existed keep their keys."""
        data = asdict(self)
        if not data["stop"]:
            del data["stop"]
        return data


@dataclass(frozen=True)
class CaptionRequest:
    """What the caller wants for every image of a run.

    ``prompt`` overrides the style's own prompt; ``num_captions`` asks for N candidates,
    of which the backend (or its re-ranker) puts the best first.
    """

    style: str = "short"
    prompt: str | None = None
    num_captions: int = 1
    decoding: Decoding = field(default_factory=Decoding)
    language: str = "en"

    def __post_init__(self) -> None:
        if self.num_captions < 1:
            from captionkit.errors import ConfigError

            raise ConfigError("--num-captions must be at least 1")

    def fingerprint(self) -> str:
        """A stable digest of everything that changes the produced text."""
        data = asdict(self)
        data["decoding"] = self.decoding.key()
        blob = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Candidate:
    """One generated text and, when the backend or a re-ranker scored it, its score."""

    text: str
    score: float | None = None


@dataclass
class CaptionOutput:
    """What a backend returns for one image: candidates best first, plus optional extras.

    ``extra`` holds backend-specific, JSON-serialisable details (grounded facts, token
    usage of an API call) that the store keeps and the JSONL sink writes.
    """

    candidates: list[Candidate]
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def failed(cls, message: str) -> CaptionOutput:
        return cls(candidates=[], error=message)


@dataclass
class ImageItem:
    """One input after decoding: where it came from, its content hash and the pixels."""

    source: str
    sha256: str
    image: Image | None = None
    path: str | None = None
    error: str | None = None


@dataclass
class CaptionResult:
    """The full record of one image's caption, as the store keeps it and sinks write it."""

    source: str
    text: str | None
    candidates: list[Candidate] = field(default_factory=list)
    backend: str = ""
    model: str = ""
    style: str = ""
    prompt: str | None = None
    sha256: str = ""
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionResult:
        data = dict(data)
        data["candidates"] = [Candidate(**c) for c in data.get("candidates", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
