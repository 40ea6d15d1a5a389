"""CLIPScore and RefCLIPScore with the reference definition (Hessel et al., EMNLP 2021).

* CLIP-S(c, v) = w * max(cos(E_text("A photo depicts " + c), E_image(v)), 0), w = 2.5;
* RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and max(max_r cos(E(c), E(r)), 0),
  references getting the same prefix.

The paper's numbers use ViT-B/32 at 224 px (``openai/clip-vit-base-patch32``); any CLIP the
caller names (Hugging Face id or local directory) can be used, and reports say which.
torchmetrics' ``CLIPScore`` is a different number (100 x cos, no prefix), so results here are
labelled "CLIP-S (Hessel et al. 2021, w=2.5)".

A SigLIP checkpoint (``model_type`` siglip/siglip2) loads too: :meth:`ClipScorer.pair_scores`
then gives its own calibrated match probability, sigmoid(exp(t) * cos + b) with the model's
learnt scale t and bias b, because SigLIP is trained with that sigmoid loss and its raw
cosines are not on CLIP's scale. The caption re-ranker and the caption QA score
images already in memory with :meth:`ClipScorer.score_images`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from captionkit.errors import ModelLoadError, require

if TYPE_CHECKING:
    from PIL.Image import Image

PREFIX = "A photo depicts "
W = 2.5
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
LABEL = "CLIP-S (Hessel et al. 2021, w=2.5, 'A photo depicts')"
SIGLIP_LABEL = "SigLIP match probability, sigmoid(exp(t) cos + b), 'A photo depicts'"
#: ``config.model_type`` values loaded as SigLIP (sigmoid scores) rather than CLIP.
SIGLIP_TYPES = ("siglip", "siglip2")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.sum(x**2, axis=-1, keepdims=True))


def clip_s_from_embeddings(image_emb: np.ndarray, text_emb: np.ndarray, w: float = W) -> np.ndarray:
    """Per-pair CLIP-S from raw (unnormalised) image and caption embeddings, row by row."""
    return w * np.clip(np.sum(_unit(image_emb) * _unit(text_emb), axis=-1), 0, None)


def sigmoid_from_embeddings(
    image_emb: np.ndarray, text_emb: np.ndarray, logit_scale: float, logit_bias: float
) -> np.ndarray:
    """Per-pair SigLIP match probability: sigmoid(exp(logit_scale) * cos + logit_bias)."""
    cos = np.sum(_unit(image_emb) * _unit(text_emb), axis=-1)
    return 1.0 / (1.0 + np.exp(-(np.exp(logit_scale) * cos + logit_bias)))


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

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str = "",
        batch_size: int = 32,
        kind: str = "clip",
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.batch_size = batch_size
        #: "clip" (scores are CLIP-S) or "siglip" (scores are sigmoid match probabilities).
        self.kind = kind
        self._image_cache: dict[str, np.ndarray] = {}

    @property
    def max_score(self) -> float:
        """The top of :meth:`pair_scores`' range (2.5 for CLIP-S, 1 for SigLIP)."""
        return 1.0 if self.kind == "siglip" else W

    @property
    def label(self) -> str:
        return SIGLIP_LABEL if self.kind == "siglip" else LABEL

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, spec: str = DEFAULT_CLIP, device: str = "cpu") -> ClipScorer:
        """Load ``spec``: a Hugging Face id or directory (``hf:`` optional), CLIP or SigLIP.

        ``device``: cpu, cuda, ..., or auto (a GPU when one is visible)."""
        require("transformers", "hf", "CLIPScore")
        require("torch", "hf", "CLIPScore")
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, CLIPModel

        from captionkit.devices import resolve_device

        ident = spec[3:] if spec.startswith("hf:") else spec
        device = resolve_device(device, feature="CLIPScore")
        try:
            model_type = getattr(AutoConfig.from_pretrained(ident), "model_type", "clip")
            kind = "siglip" if model_type in SIGLIP_TYPES else "clip"
            model = (AutoModel if kind == "siglip" else CLIPModel).from_pretrained(ident)
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
        return cls(model, processor, name=ident, kind=kind)

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
            if self.kind == "siglip":
                # SigLIP is trained on fixed-length, unmasked padded text (its model card)
                enc = tok(
                    batch, padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="pt",
                )  # fmt: skip
                mask = None
            else:
                enc = tok(
                    batch, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
                )
                mask = enc.get("attention_mask")
            ids = enc["input_ids"].to(self.device)
            with torch.inference_mode():
                out = self.model.get_text_features(
                    input_ids=ids, attention_mask=mask.to(self.device) if mask is not None else None
                )
            chunks.append(self._features(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))

    def embed_pil(self, images: Sequence[Image]) -> np.ndarray:
        """Image embeddings of images already in memory (converted to RGB here)."""
        import torch

        improc = getattr(self.processor, "image_processor", self.processor)
        chunks = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            pixels = improc(images=batch, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                out = self.model.get_image_features(pixel_values=pixels.to(self.device))
            chunks.append(self._features(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))

    def embed_images(self, paths: Sequence[str | Path]) -> np.ndarray:
        from PIL import Image

        todo = [str(p) for p in paths if str(p) not in self._image_cache]
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            images = []
            for p in batch:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            for p, f in zip(batch, self.embed_pil(images), strict=True):
                self._image_cache[p] = f
        return np.stack([self._image_cache[str(p)] for p in paths])

    def pair_scores(self, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Row-by-row image-text score: CLIP-S for CLIP, the match probability for SigLIP."""
        if self.kind != "siglip":
            return clip_s_from_embeddings(image_emb, text_emb)
        scale = float(self.model.logit_scale.detach().float().cpu().reshape(-1)[0])
        bias = float(self.model.logit_bias.detach().float().cpu().reshape(-1)[0])
        return sigmoid_from_embeddings(image_emb, text_emb, scale, bias)

    def score_images(
        self, images: Sequence[Image], texts: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """``texts[i]``'s scores against ``images[i]`` (:meth:`pair_scores`' scale); each
        image is embedded once and all texts in one pass."""
        if len(images) != len(texts):
            raise ValueError("one list of texts per image")
        flat = [t for group in texts for t in group]
        if not flat:
            return [np.zeros(0) for _ in images]
        img = self.embed_pil(list(images))
        txt = self.embed_texts(flat)
        rows = np.repeat(np.arange(len(images)), [len(g) for g in texts])
        scores = self.pair_scores(img[rows], txt)
        out, start = [], 0
        for group in texts:
            out.append(scores[start : start + len(group)])
            start += len(group)
        return out

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
