"""Feeding the device: how many images one ``generate`` call takes on a GPU (found once,
remembered, never lossy), the side a JPEG may be draft-decoded to, and pinned copies.

A GPU is kept busy by the largest batch that fits, and that size depends on the model, the
dtype, the image size the processor produces, the number of tokens generated and the card.
Guessing it wrong costs either speed (too small) or the run (CUDA out of memory). So:

* a batch that runs out of CUDA memory is halved and retried, chunk by chunk, until it fits;
  every image of the batch still gets its caption (a single image that cannot fit alone is
  re-raised, and the engine fails that image only);
* the size that fitted after an out-of-memory is remembered in the user cache folder
  (``batch_sizes.json``), keyed by model, card, dtype, image size and generation length, so
  the next run starts at it instead of finding it again;
* chat VLM batches are ordered by image size first, so each chunk pads its prompts to
  similar lengths (image tokens dominate a VLM prompt), and outputs come back in input order.

torch is imported only when a batch runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Images the engine feeds one call on CUDA when nothing is remembered and no --batch-size is
#: given: a ceiling, halved on out-of-memory (a ViT-GPT2 at bf16 takes it on one 24 GB card).
CUDA_FEED = 128

_FILE_LOCK = threading.Lock()


def cache_file() -> Path:
    """``batch_sizes.json`` in the per-user cache folder (honours ``XDG_CACHE_HOME``)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "batch_sizes.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}  # absent or damaged: a cache, so start afresh rather than fail a run
    return data if isinstance(data, dict) else {}


def remembered(key: str, path: Path | None = None) -> int | None:
    """The batch size that last fitted for ``key`` after an out-of-memory, if any."""
    entry = _read(path or cache_file()).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("fits"), int) and entry["fits"] > 0:
        return int(entry["fits"])
    return None


def largest_remembered(prefix: str, path: Path | None = None) -> int | None:
    """The largest size remembered for any key starting with ``prefix`` (one model on one
    card, any image size): the feed size a run can start with before its model is loaded."""
    sizes = [
        e["fits"]
        for k, e in _read(path or cache_file()).items()
        if k.startswith(prefix) and isinstance(e, dict) and isinstance(e.get("fits"), int)
    ]
    return max(sizes) if sizes else None


def remember(key: str, fits: int, oom_at: int, path: Path | None = None) -> None:
    """Record that ``fits`` images ran and ``oom_at`` did not (best effort: a read-only cache
    folder costs only the re-discovery next time)."""
    path = path or cache_file()
    with _FILE_LOCK:
        data = _read(path)
        data[key] = {"fits": int(fits), "oom_at": int(oom_at)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
            tmp.replace(path)
        except OSError as exc:
            log.debug("cannot remember the batch size in %s: %s", path, exc)


def is_cuda_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (torch's own type, or the older RuntimeError wording)."""
    try:
        import torch
    except ImportError:
        return False
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class BatchFit:
    """Runs a batch in chunks that fit, halving on CUDA out-of-memory; one per loaded model.

    ``key``: what the remembered size is filed under (None: nothing remembered, e.g. CPU).
    ``limit``: the largest chunk known to fit (from the cache, or found by this run).
    """

    def __init__(self, key: str | None, path: Path | None = None) -> None:
        self.key = key
        self.path = path
        self.limit: int | None = remembered(key, path) if key else None
        self._lock = threading.Lock()

    def run(self, items: Sequence[T], call: Callable[[list[T]], list[R]]) -> list[R]:
        """``call`` over ``items`` in chunks, outputs in input order; nothing is dropped."""
        out: list[R] = []
        i = 0
        oom_at: int | None = None
        size = min(len(items), self.limit or len(items)) or 1
        while i < len(items):
            chunk = list(items[i : i + size])
            try:
                results = call(chunk)
            except Exception as exc:
                if not is_cuda_oom(exc) or size == 1:
                    raise
                free_cuda_cache()
                tried, size = size, max(1, size // 2)
                log.info("CUDA out of memory at %d images per batch; retrying at %d", tried, size)
                with self._lock:
                    if self.limit is None or size < self.limit:
                        self.limit = size
                oom_at = tried
                continue
            out.extend(results)
            i += len(chunk)
            if oom_at is not None and self.key:
                remember(self.key, size, oom_at, self.path)
                oom_at = None
        return out


def by_size_order(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of images ordered by pixel count, so chat VLM prompts in one chunk have similar
    image-token counts (less left padding); the caller restores input order."""
    return sorted(range(len(sizes)), key=lambda i: (sizes[i][0] * sizes[i][1], sizes[i]))


def fit_key(parts: Sequence[Any]) -> str:
    """One cache key from its parts (model, card, dtype, image size, generation length...)."""
    return "|".join(str(p) for p in parts)


def processor_side(image_processor: Any) -> int | None:
    """The largest side an image processor resizes to: ``height``/``width`` (ViT, BLIP),
    ``shortest_edge`` (CLIP, GIT), ``longest_edge`` (Idefics3). None for pixel-count sizing
    (``max_pixels``), no resizing, or a size it does not state."""
    if image_processor is None or getattr(image_processor, "do_resize", True) is False:
        return None
    size = getattr(image_processor, "size", None)
    if size is None:
        return None
    get = size.get if hasattr(size, "get") else lambda k: getattr(size, k, None)
    if get("max_pixels") or get("min_pixels"):
        return None
    sides = [v for v in (get("height"), get("width")) if isinstance(v, int) and v > 0]
    if len(sides) == 2:
        return max(sides)
    for key in ("shortest_edge", "longest_edge"):
        value = get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def size_text(size: Any) -> str:
    """An image processor's target size as ``height=224,width=224`` (a dict, transformers'
    SizeDict, or anything else as written), unset entries left out."""
    import dataclasses

    if dataclasses.is_dataclass(size) and not isinstance(size, type):
        size = dataclasses.asdict(size)
    if isinstance(size, dict) or hasattr(size, "items"):
        return ",".join(f"{k}={v}" for k, v in sorted(dict(size).items()) if v is not None)
    return str(size)


def to_device(batch: Any, device: Any, dtype: Any) -> dict[str, Any]:
    """Tensors of ``batch`` on ``device``; floating ones in the model's dtype.

    On CUDA each tensor is pinned first and copied with ``non_blocking``: the copy from
    page-locked memory runs by DMA, overlapping the host's next work instead of stalling it.
    """
    cuda = str(device).startswith("cuda")
    moved: dict[str, Any] = {}
    for k, v in dict(batch).items():
        if not hasattr(v, "to"):
            continue
        if cuda and hasattr(v, "pin_memory"):
            v = v.pin_memory()
        kwargs: dict[str, Any] = {"non_blocking": True} if cuda else {}
        if v.is_floating_point():
            kwargs["dtype"] = dtype
        moved[k] = v.to(device, **kwargs)
    return moved
