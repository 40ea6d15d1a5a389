"""Datasets and collators that turn captionkit's reference datasets into training batches.

The dataset loaders are the evaluation room's (:mod:`captionkit.eval.datasets`); this module
only splits them, pairs images with captions, and batches them for the model:

- teacher forcing trains on every (image, caption) pair;
- validation and self-critical training see each image once, with all its references.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, InputError
from captionkit.train.clean import normalise_caption

#: Keep preprocessed pixels in memory below this many images (when augmentation is off):
#: small fine-tuning sets then decode each JPEG once instead of once per epoch.
CACHE_LIMIT = 2048


@dataclass
class Example:
    """One image with its (normalised, non-empty) reference captions."""

    image: Path
    references: list[str]
    key: str


@dataclass
class Splits:
    train: list[Example]
    val: list[Example] = field(default_factory=list)


def load_examples(path: str | Path) -> tuple[list[Example], list[Example] | None]:
    """Examples from any dataset the eval room loads; a second list when it has a val split."""
    from captionkit.eval.datasets import load_dataset

    data = load_dataset(path)
    train: list[Example] = []
    val: list[Example] = []
    has_split = False
    for item in data.items:
        refs = [r for r in (normalise_caption(t) for t in item.references) if r]
        if not refs:
            continue
        ex = Example(Path(item.image), refs, str(item.key))
        split = (item.split or "").lower()
        if split in {"val", "validation", "dev"}:
            has_split = True
            val.append(ex)
        elif split in {"test"}:
            has_split = True
        else:
            train.append(ex)
    if not train:
        raise InputError(f"no captioned training images found in '{path}'")
    return train, (val if has_split and val else None)


def split_examples(path: str | Path, val_split: float = 0.1, seed: int = 42) -> Splits:
    """Use the dataset's own val split if it has one, else hold out ``val_split`` of images."""
    if not 0.0 <= val_split < 1.0:
        raise ConfigError("--val-split must be in [0, 1)")
    train, val = load_examples(path)
    if val is not None:
        return Splits(train, val)
    order = sorted(train, key=lambda e: e.key)
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_split)
    if val_split > 0 and n_val == 0 and len(order) > 1:
        n_val = 1
    return Splits(order[n_val:], order[:n_val])


class PixelSource:
    """Image path -> ``pixel_values`` tensor via the model's own image processor."""

    def __init__(self, image_processor: Any, *, augment: bool = False, cache: bool = True) -> None:
        self.processor = image_processor
        self.augment = augment
        self.cache = cache and not augment
        self._cache: dict[Path, Any] = {}

    def load(self, path: Path) -> Any:
        if self.cache and path in self._cache:
            return self._cache[path]
        from captionkit.inputs.decode import decode_image

        image = decode_image(Path(path).read_bytes())
        if self.augment:
            image = _augment(image)
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        if self.cache:
            self._cache[path] = pixels
        return pixels


def _augment(image: Any) -> Any:
    """Light augmentation (random crop of 85-100% and a flip), off unless asked for."""
    from PIL import ImageOps

    w, h = image.size
    scale = random.uniform(0.85, 1.0)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x, y = random.randint(0, w - cw), random.randint(0, h - ch)
    image = image.crop((x, y, x + cw, y + ch))
    return ImageOps.mirror(image) if random.random() < 0.5 else image


class PairDataset:
    """Every (image, caption) pair: the teacher-forcing training set."""

    def __init__(self, examples: list[Example], pixels: PixelSource) -> None:
        self.pairs = [(ex, ref) for ex in examples for ref in ex.references]
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex, ref = self.pairs[i]
        return {"pixel_values": self.pixels.load(ex.image), "caption": ref}


class ImageDataset:
    """Each image once: validation (with its first reference, for the loss) or, with
    ``with_index``, self-critical training (the index finds its references for the reward)."""

    def __init__(
        self, examples: list[Example], pixels: PixelSource, *, with_index: bool = False
    ) -> None:
        self.examples = examples
        self.pixels = pixels
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        if self.with_index:
            return {"pixel_values": self.pixels.load(ex.image), "index": i}
        return {"pixel_values": self.pixels.load(ex.image), "caption": ex.references[0]}


class CaptionCollator:
    """Stack pixels; tokenise captions into labels (+EOS) and right-shifted decoder inputs.

    Items with an ``index`` (self-critical training) pass it through instead of captions.
    Decoder inputs are built here rather than left to the model so that a loss computed
    outside the model (label smoothing) still has them; padding is masked from the loss
    by position, since GPT-2's pad token is its EOS token.
    """

    def __init__(self, tokenizer: Any, start_token_id: int, max_length: int = 40) -> None:
        self.tokenizer = tokenizer
        self.start = start_token_id
        self.max_length = max_length

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {"pixel_values": torch.stack([b["pixel_values"] for b in batch])}
        if "index" in batch[0]:
            out["index"] = torch.tensor([b["index"] for b in batch], dtype=torch.long)
            return out
        tok = self.tokenizer
        eos, pad = tok.eos_token_id, tok.pad_token_id
        encoded = tok([b["caption"] for b in batch], add_special_tokens=False)["input_ids"]
        seqs = [[*ids[: self.max_length - 1], eos] for ids in encoded]
        width = max(len(s) for s in seqs)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        inputs = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            n = len(seq)
            labels[row, :n] = torch.tensor(seq)
            inputs[row, :n] = torch.tensor([self.start, *seq[:-1]])
            mask[row, :n] = 1
        out.update(labels=labels, decoder_input_ids=inputs, decoder_attention_mask=mask)
        return out
