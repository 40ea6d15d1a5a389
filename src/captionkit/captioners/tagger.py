"""WD-style taggers (``--model tagger:PATH_OR_HUB_ID``): an ONNX multi-label classifier plus a
``selected_tags.csv``, run on onnxruntime, batched, on the CPU or a CUDA GPU.

The models are SmilingWolf's ``wd-*-tagger-v3`` (and v2) repositories: ``model.onnx`` takes a
batch of NHWC float32 images, 0-255, BGR, padded to a white square; it outputs one sigmoid
score per row of ``selected_tags.csv`` (``tag_id,name,category,count``; category 9 = rating,
0 = general, 4 = character). Preprocessing and thresholds follow the reference code:

* SmilingWolf's ``wd-tagger`` Hugging Face space, ``app.py``
  (https://huggingface.co/spaces/SmilingWolf/wd-tagger): ``Predictor.prepare_image`` (alpha
  over white, pad to a centred white square, resize with PIL bicubic to the model's input
  size read from the ONNX input shape, RGB -> BGR, float32), ``mcut_threshold`` and the
  ``> threshold`` rule (defaults 0.35 general, 0.85 character; with MCut the character
  threshold is at least 0.15), the rating picked by argmax;
* kohya-ss sd-scripts ``finetune/tag_images_by_wd14_tagger.py`` (``preprocess_image``: the same
  pad-to-white and BGR order; models with a fixed batch size are fed in chunks of it).

What the backend returns: the caption is the chosen tags best first, joined with ``", "``, with
underscores turned to spaces except in kaomoji (the :class:`~captionkit.tags.TagRules`
defaults); ``extra["tags"]`` is ``[[name, score, category], ...]`` ranked by score with the
model's own names (the rating included, which the caption leaves out unless
``include_rating``), ``extra["ratings"]`` every rating's score. The run's tag rules
(``--exclude-tags``...) are applied afterwards by the engine, like for every tag source.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.errors import BackendError, ConfigError, ModelLoadError, require
from captionkit.tags import TagRules
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

#: ``--model tagger`` alone: the wd-tagger space's default model.
DEFAULT_MODEL = "SmilingWolf/wd-swinv2-tagger-v3"
MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
#: Danbooru's category numbers as the WD csv files use them; others count as general tags.
CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating"}
#: Input side used when the ONNX file does not state it (kohya's IMAGE_SIZE).
FALLBACK_SIZE = 448
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class TaggerOptions(BackendOptions):
    """Options of the tagger backend; the marked ones are also flags of ``captionkit caption``."""

    general_threshold: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="tagger: minimum score of a general tag.",
        json_schema_extra={"cli": True},
    )
    character_threshold: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="tagger: minimum score of a character tag.",
        json_schema_extra={"cli": True},
    )
    top_k_tags: int | None = Field(
        None,
        ge=1,
        description="tagger: take the K best general and character tags whatever their "
        "scores (thresholds and MCut are then ignored).",
        json_schema_extra={"cli": True},
    )
    mcut: bool = Field(
        False,
        description="tagger: MCut thresholds (the largest gap in the sorted scores) "
        "instead of the fixed ones.",
        json_schema_extra={"cli": True},
    )
    include_rating: bool = Field(
        False,
        description="tagger: put the rating tag (general, sensitive...) in the caption.",
        json_schema_extra={"cli": True},
    )
    device: str = Field(
        "auto",
        description="auto, cpu, cuda, cuda:1 (tagger: onnxruntime's providers).",
        json_schema_extra={"cli": True},
    )


@dataclass(frozen=True)
class TagTable:
    """``selected_tags.csv``: the name and category of each model output, in output order."""

    names: tuple[str, ...]
    categories: tuple[int, ...]

    @classmethod
    def read(cls, path: Path) -> TagTable:
        """Read and check the csv; any problem is one :class:`ModelLoadError` line."""
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                fields = [f.strip() for f in reader.fieldnames or []]
                missing = [c for c in ("name", "category") if c not in fields]
                if missing:
                    raise ModelLoadError(
                        f"{path} has no column {', '.join(repr(m) for m in missing)} "
                        f"(columns: {', '.join(fields) or 'none'}); a WD tag list has "
                        "tag_id,name,category,count"
                    )
                rows = [{k.strip(): v for k, v in row.items() if k} for row in reader]
        except OSError as exc:
            raise ModelLoadError(f"cannot read the tag list {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ModelLoadError(f"{path} is not a readable csv file: {exc}") from None
        if not rows:
            raise ModelLoadError(f"{path} lists no tags")
        names, categories = [], []
        for line, row in enumerate(rows, start=2):
            try:
                categories.append(int(str(row.get("category")).strip()))
            except ValueError:
                raise ModelLoadError(
                    f"{path} line {line}: category {row.get('category')!r} is not a number"
                ) from None
            names.append((row.get("name") or "").strip())
        return cls(tuple(names), tuple(categories))

    def indexes(self, *wanted: int, other: bool = False) -> list[int]:
        """Output indexes whose category is one of ``wanted`` (``other``: any not 4 or 9)."""
        if other:
            return [i for i, c in enumerate(self.categories) if c not in (4, 9)]
        return [i for i, c in enumerate(self.categories) if c in wanted]


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut thresholding (Largeron et al., IDA 2012), as in the wd-tagger space: the
    midpoint of the largest gap between consecutive sorted scores."""
    import numpy as np

    ordered = np.sort(probs)[::-1]
    if len(ordered) < 2:
        return 0.0
    gaps = ordered[:-1] - ordered[1:]
    t = int(gaps.argmax())
    return float((ordered[t] + ordered[t + 1]) / 2)


def prepare_image(image: Image, size: int) -> np.ndarray:
    """The WD reference preprocessing (see the module doc): an HWC float32 BGR array."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    image = image.convert("RGB")
    side = max(image.size)
    square = PILImage.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
    if side != size:
        square = square.resize((size, size), PILImage.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1].copy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def resolve_files(model: str) -> tuple[Path, Path]:
    """(model.onnx, selected_tags.csv) of a folder, an .onnx file, or a hub id (downloaded
    with huggingface_hub into its cache, which is reused offline)."""
    spec = model.strip() or DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_dir():
        onnx = path / MODEL_FILE
        if not onnx.is_file():
            found = sorted(path.glob("*.onnx"))
            onnx = found[0] if len(found) == 1 else onnx
        return onnx, path / TAGS_FILE
    if path.is_file():
        return path, path.parent / TAGS_FILE
    if spec.startswith((".", "/", "~")) or "\\" in spec or not _HUB_ID.fullmatch(spec):
        raise ModelLoadError(
            f"tagger: no such folder or file '{spec}' (expected a folder "
            f"with {MODEL_FILE} and {TAGS_FILE}, or a hub id ORG/NAME)"
        )
    hub = require("huggingface_hub", "tagger", "downloading tagger models")
    files = []
    for name in (MODEL_FILE, TAGS_FILE):
        try:
            files.append(Path(hub.hf_hub_download(spec, name)))
        except Exception as exc:  # offline, unknown repo, gated, disk full: all one line
            raise ModelLoadError(
                f"tagger: cannot get {name} of '{spec}' from the Hugging Face Hub "
                f"({_first_line(exc)}); download {MODEL_FILE} and {TAGS_FILE} into a folder "
                "and use --model tagger:FOLDER"
            ) from None
    return files[0], files[1]


def providers(device: str, available: list[str]) -> list[Any]:
    """onnxruntime execution providers for ``--device`` (auto: CUDA when onnxruntime has it)."""
    device = (device or "auto").strip().lower()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if has_cuda
            else ["CPUExecutionProvider"]
        )
    if device == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise ConfigError(f"tagger: unknown device '{device}'; use auto, cpu, cuda or cuda:N")
    if not has_cuda:
        raise ConfigError(
            f"--device {device}: this onnxruntime has no CUDA provider "
            "(pip install onnxruntime-gpu); use --device cpu"
        )
    options = {"device_id": int(match.group(1) or 0)}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


class TaggerCaptioner(Captioner[TaggerOptions]):
    """A WD-style ONNX tagger as a backend: tags, best first, with their scores in extra."""

    name: ClassVar[str] = "tagger"
    extra: ClassVar[str] = "tagger"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    description: ClassVar[str] = "WD-style ONNX tagger (model.onnx + selected_tags.csv): tags"
    Options: ClassVar[type[BackendOptions]] = TaggerOptions
    default_batch_size: ClassVar[int] = 16
    thread_safe: ClassVar[bool] = True  # InferenceSession.run is safe to call concurrently
    accepts_prompt: ClassVar[bool] = False
    multiple_candidates: ClassVar[bool] = False

    def __init__(self, model: str = "", options: TaggerOptions | None = None) -> None:
        super().__init__(model, options)
        onnx_path, csv_path = resolve_files(model)
        if not onnx_path.is_file():
            raise ModelLoadError(f"tagger: {onnx_path} is missing (the ONNX model)")
        if not csv_path.is_file():
            raise ModelLoadError(
                f"tagger: {csv_path} is missing (the tag list beside the "
                "model: tag_id,name,category,count)"
            )
        self.table = TagTable.read(csv_path)
        self.onnx_path = onnx_path
        ort = require("onnxruntime", "tagger", "the tagger backend")
        chosen = providers(self.options.device, list(ort.get_available_providers()))
        try:
            self.session = ort.InferenceSession(str(onnx_path), providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(
                f"tagger: onnxruntime could not load {onnx_path}: {_first_line(exc)}"
            ) from None
        self._setup_io()

    def _setup_io(self) -> None:
        """Read layout, input size and fixed batch size from the graph; check the outputs."""
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelLoadError(
                f"tagger: {self.onnx_path} takes a {len(shape)}-d input; "
                "a WD tagger takes images (batch, height, width, 3)"
            )
        self.input_name = inp.name
        self.channels_first = shape[1] == 3 and shape[3] != 3
        side = shape[2] if self.channels_first else shape[1]
        self.size = side if isinstance(side, int) and side > 0 else FALLBACK_SIZE
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        out = self.session.get_outputs()[0].shape
        count = out[-1] if out else None
        if isinstance(count, int) and count != len(self.table.names):
            raise ModelLoadError(
                f"tagger: {self.onnx_path} has {count} outputs but its tag list has "
                f"{len(self.table.names)} rows; the csv belongs to another model"
            )

    @property
    def model_label(self) -> str:
        return self.model or DEFAULT_MODEL

    def preprocess(self, image: Image, request: CaptionRequest) -> Any:
        return prepare_image(image, self.size)

    def scores(self, arrays: list[np.ndarray]) -> np.ndarray:
        """One row of tag scores per image (chunked to the model's batch size if it has one)."""
        import numpy as np

        batch = np.stack(arrays).astype(np.float32)
        if self.channels_first:
            batch = batch.transpose(0, 3, 1, 2)
        step = self.fixed_batch or len(batch)
        rows = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad the last chunk of a fixed-batch model
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            rows.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        probs = np.concatenate(rows).astype(np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.table.names):
            raise BackendError(
                f"tagger: the model returned shape {probs.shape}, expected "
                f"(batch, {len(self.table.names)})"
            )
        if probs.min() < 0.0 or probs.max() > 1.0:  # logits, not probabilities
            probs = 1.0 / (1.0 + np.exp(-probs))
        return probs

    def select(self, probs: np.ndarray) -> list[tuple[str, float, str]]:
        """One image's ``(name, score, category)`` rows, ranked: the argmax rating plus the
        general and character tags over their thresholds (or the ``top_k_tags`` best)."""
        table, opts = self.table, self.options
        general = table.indexes(other=True)
        character = table.indexes(4)
        if opts.top_k_tags is not None:
            pool = general + character
            chosen = sorted(pool, key=lambda i: -probs[i])[: opts.top_k_tags]
        else:
            g_thr, c_thr = opts.general_threshold, opts.character_threshold
            if opts.mcut:
                g_thr = mcut_threshold(probs[general]) if general else g_thr
                c_thr = max(0.15, mcut_threshold(probs[character])) if character else c_thr
            chosen = [i for i in general if probs[i] > g_thr]
            chosen += [i for i in character if probs[i] > c_thr]
        ratings = table.indexes(9)
        if ratings:
            chosen.append(max(ratings, key=lambda i: probs[i]))
        rows = [
            (
                table.names[i],
                round(float(probs[i]), 4),
                CATEGORIES.get(table.categories[i], "general"),
            )
            for i in chosen
        ]
        rows.sort(key=lambda row: -row[1])
        return rows

    def output(self, probs: np.ndarray) -> CaptionOutput:
        rows = self.select(probs)
        shown = [(n, s) for n, s, c in rows if c != "rating" or self.options.include_rating]
        text = TagRules().join(TagRules().apply(shown))
        ratings = {self.table.names[i]: round(float(probs[i]), 4) for i in self.table.indexes(9)}
        extra = {"tags": [list(row) for row in rows], "ratings": ratings}
        return CaptionOutput(candidates=[Candidate(text)], extra=extra)

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        if not inputs:
            return []
        return [self.output(row) for row in self.scores(inputs)]

    def close(self) -> None:
        self.session = None
