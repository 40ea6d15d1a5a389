"""Helpers for the training tests: tiny model folders, dataset subsets, quick configs.

Everything is built here (no download): a 2-layer ViT with its PIL image processor, and a
2-layer GPT-2 with a word-level tokenizer made by `tokenizers` from the sample's captions.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers.tiny_models import TINY_VISION

ROOT = Path(__file__).resolve().parents[2]
FLICKR = ROOT / ".." / "shared" / "data" / "flickr8k-dev"


def flickr() -> Path:
    if not (FLICKR / "references.json").is_file():
        pytest.skip(f"needs ../shared beside the repo ({FLICKR.resolve()} is absent)")
    return FLICKR


def flickr_references() -> dict[str, list[str]]:
    return json.loads((flickr() / "references.json").read_text(encoding="utf-8"))


def build_encoder(out: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        **TINY_VISION,
    )
    ViTModel(config).save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def build_decoder(out: Path) -> Path:
    """GPT-2 (hidden 64, unlike the encoder's 32, so the projection layer is exercised)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    refs = flickr_references()
    words = sorted(
        {w for caps in refs.values() for c in caps for w in re.findall(r"\w+|[^\w\s]", c.lower())}
    )
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tok.save_pretrained(out)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    GPT2LMHeadModel(config).save_pretrained(out)
    return out


def make_subset(dest: Path, n: int, *, per_image: int = 5, start: int = 0) -> Path:
    """A references.json dataset of ``n`` sample images with ``per_image`` captions each."""
    refs = flickr_references()
    names = sorted(refs)[start : start + n]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(flickr() / "images" / name, dest / "images" / name)
    data = {name: refs[name][:per_image] for name in names}
    (dest / "references.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return dest


def quick_config(data: Path, output: Path, **kw):
    """A TrainConfig for tiny CPU runs (no progress bars, no checkpoints unless asked)."""
    from captionkit.train.config import TrainConfig

    base = dict(
        data=str(data),
        output=str(output),
        batch_size=8,
        lr=3e-3,
        val_split=0.0,
        save_every=0,
        log_every=5,
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def greedy_captions(model_dir: Path, images: list[Path]) -> list[str]:
    """Load a saved run the way `captionkit caption --model hf:DIR` does and decode greedily."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    proc = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
    pixels = proc([Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    out = model.generate(pixel_values=pixels["pixel_values"], do_sample=False, num_beams=1)
    return [" ".join(t.split()) for t in tok.batch_decode(out, skip_special_tokens=True)]
