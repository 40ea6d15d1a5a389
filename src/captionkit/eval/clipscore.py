"""CLIPScore and RefCLIPScore with the reference definition (Hessel et al., EMNLP 2021).

* CLIP-S(c, v) = w * max(cos(E_text("A photo depicts " + c), E_image(v)), 0), w = 2.5;
* RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and max(max_r cos(E(c), E(r)), 0),
  references getting the same prefix.

The paper's numbers use ViT-B/32 at 224 px (``openai/clip-vit-base-patch32``); any CLIP the
caller names (Hugging Face id or local directory) can be used, and reports say which.
torchmetrics' ``CLIPScore`` is a different number (100 x cos, no prefix), so results here are
labelled "CLIP-S (Hessel et al. 2021, w=2.5)".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captionkit.errors import ModelLoadError, require

PREFIX = "A photo depicts "
W = 2.5
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
LABEL = "CLIP-S (Hessel et al. 2021, w=2.5, 'A photo depicts')"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.sum(x**2, axis=-1, keepdims=True))


def clip_s_from_embeddings(image_emb: np.ndarray, text_emb: np.ndarray, w: float = W) -> np.ndarray:
    """Per-pair CLIP-S from raw (unnormalised) image and caption embeddings, row by row."""
    return w * np.clip(np.sum(_unit(image_emb) * _unit(text_emb), axis=-1), 0, None)


def refclip_s_from_embeddings(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    ref_embs: Sequence[np.ndarray],
    w: float = W,
) -> tuple[np.ndarray, np.ndarray]:
    """(CLIP-S, RefCLIP-S) per row; ``ref_embs[i]`` holds row i's reference embeddings."""
    clip_s = clip_s_from_embeddings(image_emb, text_emb, w)
    cand = _unit(text_emb)
    text_text = np.array(
        [max(float(np.max(_unit(r) @ cand[i])), 0.0) for i, r in enumerate(ref_embs)]
    )
    denom = clip_s + text_text
    ref = np.divide(2 * clip_s * text_text, denom, out=np.zeros_like(denom), where=denom > 0)
    return clip_s, ref


@dataclass
class ClipScoreResult:
    clip_s: float
    refclip_s: float | None
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    model: str = ""
    label: str = LABEL


@dataclass
class _Processor:
    tokenizer: Any
    image_processor: Any


class ClipScorer:
    """Embeds images and captions with one CLIP model (loaded once, reused per system)."""

    def __init__(self, model: Any, processor: Any, name: str = "", batch_size: int = 32) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        self._image_cache: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, spec: str = DEFAULT_CLIP, device: str = "cpu") -> ClipScorer:
        """Load ``spec``: a Hugging Face id or directory (``hf:`` optional)."""
        require("transformers", "hf", "CLIPScore")
        require("torch", "hf", "CLIPScore")
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        ident = spec[3:] if spec.startswith("hf:") else spec
        try:
            model = CLIPModel.from_pretrained(ident)
            model = model.to(device)  # type: ignore[arg-type]  # transformers' stub: a device is fine
            # tokenizer and image processor separately: a bare directory may lack a processor
            # config, and the image processor falls back to PIL where torchvision is absent
            processor = _Processor(
                AutoTokenizer.from_pretrained(ident), AutoImageProcessor.from_pretrained(ident)
            )
        except (OSError, ValueError) as exc:
            where = "directory" if Path(ident).exists() else "model id (offline?)"
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"cannot load CLIP {where} {ident!r}: {first_line}") from exc
        return cls(model, processor, name=ident)

    def _features(self, out: Any) -> np.ndarray:
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return feats.detach().float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tok = getattr(self.processor, "tokenizer", self.processor)
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            batch = [PREFIX + t for t in texts[i : i + self.batch_size]]
            enc = tok(batch, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            with torch.inference_mode():
                out = self.model.get_text_features(
                    input_ids=enc["input_ids"], attention_mask=enc.get("attention_mask")
                )
            chunks.append(self._features(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))

    def embed_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        import torch
        from PIL import Image

        todo = [str(p) for p in paths if str(p) not in self._image_cache]
        improc = getattr(self.processor, "image_processor", self.processor)
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            images = []
            for p in batch:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            pixels = improc(images=images, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                out = self.model.get_image_features(pixel_values=pixels)
            for p, f in zip(batch, self._features(out), strict=True):
                self._image_cache[p] = f
        return np.stack([self._image_cache[str(p)] for p in paths])

    def score(
        self,
        candidates: Mapping[str, str],
        images: Mapping[str, str | Path],
        references: Mapping[str, Sequence[str]] | None = None,
    ) -> ClipScoreResult:
        """CLIP-S (and RefCLIP-S when ``references`` are given) for each candidate key."""
        keys = list(candidates)
        img = self.embed_images([images[k] for k in keys])
        txt = self.embed_texts([candidates[k] for k in keys])
        if references:
            flat = [r for k in keys for r in references[k]]
            emb = self.embed_texts(flat)
            refs, start = [], 0
            for k in keys:
                refs.append(emb[start : start + len(references[k])])
                start += len(references[k])
            clip_s, ref_s = refclip_s_from_embeddings(img, txt, refs)
        else:
            clip_s, ref_s = clip_s_from_embeddings(img, txt), None
        per = {}
        for i, k in enumerate(keys):
            per[k] = {"CLIP-S": float(clip_s[i])}
            if ref_s is not None:
                per[k]["RefCLIP-S"] = float(ref_s[i])
        return ClipScoreResult(
            clip_s=float(clip_s.mean()) if len(keys) else 0.0,
            refclip_s=float(ref_s.mean()) if ref_s is not None and len(keys) else None,
            per_image=per,
            model=self.name,
        )
