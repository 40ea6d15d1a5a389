"""The run description: :class:`RunSpec` and its parts, pydantic models frozen and closed.

A run is validated once, here, and then passed around whole (to the streaming driver, to every
Ray actor, to the server's micro-batcher), so nothing downstream re-reads settings or flags.
Only plain values live here: how a spec is *built* from the settings layers is
:mod:`captionkit.session.build`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from captionkit.inputs.video import VideoOptions
from captionkit.types import CaptionRequest


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class InputSpec(_Part):
    """What to caption and how folders are walked."""

    items: tuple[str, ...] = ()
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: Tables, HF datasets, WebDataset shards: the column holding the image (None: guessed).
    image_column: str | None = None
    #: HF datasets: the split to caption.
    split: str | None = None
    #: Video files: how they are sampled; None: videos are not inputs (``--no-videos``).
    video: VideoOptions | None = None

    @property
    def streamed(self) -> bool:
        """URLs or a list on stdin: inputs that cannot be looked at twice or have no folder."""
        return any(i == "-" or i.startswith(("http://", "https://")) for i in self.items)

    def walk(self) -> dict[str, Any]:
        return {
            "recursive": self.recursive,
            "include": self.include,
            "exclude": self.exclude,
            "video": self.video,
        }


class SinkSpec(_Part):
    """Where results go: sidecars (``sidecar=None``: the default policy) and/or a stream."""

    sidecar: bool | None = None
    extension: str = ".txt"
    existing: Literal["skip", "overwrite", "append", "prepend"] = "skip"
    output_dir: str | None = None
    format: str | None = None  # txt, jsonl, csv (checked by build_run)
    output: str | None = None
    layout: Literal["first", "lines", "numbered"] = "first"  # --captions-layout
    #: --metadata: the caption also into the image's XMP (a sidecar, or embedded).
    metadata: Literal["xmp", "embed"] | None = None
    keep_mtime: bool = False
    xmp_name: Literal["full", "stem"] = "full"

    @property
    def sidecars(self) -> bool:
        """Sidecars are on unless asked off, or ``--format`` goes to stdout (it is the output)."""
        if self.sidecar is not None:
            return self.sidecar
        return self.format is None or self.output is not None


class ClusterSpec(_Part):
    """``--ray``: run on a Ray cluster (``auto``, ``local``, ``ray://host:10001``)."""

    address: str = "auto"
    actors: int | None = Field(default=None, ge=1)  # None: one per GPU, else one
    gpus_per_actor: float | None = Field(default=None, ge=0)  # None: 1 when GPUs exist
    #: Custom Ray resources each actor needs (pin actors to labelled nodes).
    resources: tuple[tuple[str, float], ...] = ()


class Limits(_Part):
    max_pixels: int = Field(default=100_000_000, ge=1)
    max_file_mb: float = Field(default=50.0, gt=0)
    timeout: float = Field(default=30.0, gt=0)


class Decoration(_Part):
    prefix: str = ""
    suffix: str = ""
    trigger_word: str = ""


class RunControl(_Part):
    batch_size: int | None = Field(default=None, ge=1)
    workers: int = Field(default=4, ge=1)
    force: bool = False


class RunSpec(_Part):
    """One run, fully resolved and validated: what every driver needs and nothing a face owns."""

    inputs: InputSpec = InputSpec()
    #: The model spec (``hf:ORG/NAME``, ``grounded``...) and its backend's registry name.
    backend: str = "grounded"
    backend_name: str = "grounded"
    #: Backend options, merged from every layer and checked against the backend's Options.
    options: dict[str, Any] = Field(default_factory=dict)
    #: Backend flags given that the chosen backend has no option for (a face may say so).
    ignored: tuple[str, ...] = ()
    rewrite: str | None = None
    rewrite_options: dict[str, Any] = Field(default_factory=dict)
    rerank: str | None = None  # --rerank clip[:MODEL]
    rerank_facts_weight: float | None = None  # None: 0.5 over grounded, else 0
    qa: Any = None  # captioners.qa.QAOptions; None: no QA
    request: CaptionRequest = Field(default_factory=CaptionRequest)
    #: Per-image prompts (``captionkit.prompts.PromptSet``: templates, a weighted choice);
    #: None: every image gets ``request.prompt``.
    prompts: Any = None
    #: Tag rules (``captionkit.tags.TagRules``) for tag captions; None when none are set.
    tags: Any = None
    sinks: SinkSpec = SinkSpec()
    store: str | None = None  # None: the user cache dir; "none": no store
    limits: Limits = Limits()
    decoration: Decoration = Decoration()
    control: RunControl = RunControl()
    config_file: Path | None = None
    #: Set when the run goes to a Ray cluster (``--ray``); None: this machine.
    cluster: ClusterSpec | None = None

    def without_stdin(self) -> RunSpec:
        """This run without ``-`` (a list on stdin that turned out to be empty)."""
        items = tuple(i for i in self.inputs.items if i != "-")
        return self.model_copy(update={"inputs": self.inputs.model_copy(update={"items": items})})
