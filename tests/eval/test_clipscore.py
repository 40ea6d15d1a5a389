"""CLIPScore / RefCLIPScore: the formula on given embeddings, and a tiny random CLIP end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captionkit.eval.clipscore import (
    PREFIX,
    ClipScorer,
    clip_s_from_embeddings,
    refclip_s_from_embeddings,
)


def test_formula_by_hand() -> None:
    image = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    text = np.array([[4.0, 3.0, 0.0], [-1.0, 0.0, 0.0]])
    # cos = (12 + 12) / 25 = 0.96 -> 2.5 * 0.96; second pair cos = -1 -> clipped to 0
    assert clip_s_from_embeddings(image, text) == pytest.approx([2.4, 0.0])
    refs = [np.array([[0.0, 1.0, 0.0], [4.0, 3.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])]
    clip_s, ref_s = refclip_s_from_embeddings(image, text, refs)
    # row 0: text-text max cos = 1 (identical ref) -> H(2.4, 1) = 2 * 2.4 / 3.4
    assert ref_s[0] == pytest.approx(2 * 2.4 * 1.0 / 3.4)
    assert ref_s[1] == 0.0  # both parts are 0 -> 0, not NaN
    assert clip_s.tolist() == pytest.approx([2.4, 0.0])


def test_weight_and_scale_invariance() -> None:
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    a = clip_s_from_embeddings(image, text, w=1.0)
    b = clip_s_from_embeddings(image * 7, text * 0.1, w=2.5)
    assert b == pytest.approx(2.5 * a)
    assert (a >= 0).all() and (a <= 1).all()


def test_tiny_clip_end_to_end(tiny_clip: Path, tiny_dataset: Path) -> None:
    scorer = ClipScorer.load(str(tiny_clip))
    images = {p.name: p for p in sorted((tiny_dataset / "images").iterdir())}
    cands = {"a.jpg": "a dog runs on the grass", "b.jpg": "a cat sleeps on the sofa"}
    refs = {"a.jpg": ["a dog on the grass", "a red square"], "b.jpg": ["a cat on a sofa"]}
    result = scorer.score(cands, images, refs)
    assert result.model == str(tiny_clip)
    # recompute from the scorer's own embeddings with the published formula
    img = scorer.embed_images([images[k] for k in cands])
    txt = scorer.embed_texts(list(cands.values()))
    ref_embs = [scorer.embed_texts(refs[k]) for k in cands]
    clip_s, ref_s = refclip_s_from_embeddings(img, txt, ref_embs)
    for i, k in enumerate(cands):
        assert result.per_image[k]["CLIP-S"] == pytest.approx(clip_s[i], abs=1e-5)
        assert result.per_image[k]["RefCLIP-S"] == pytest.approx(ref_s[i], abs=1e-5)
        assert 0.0 <= result.per_image[k]["CLIP-S"] <= 2.5
    assert result.clip_s == pytest.approx(float(np.mean(clip_s)), abs=1e-5)


def test_prefix_is_applied(tiny_clip: Path) -> None:
    scorer = ClipScorer.load(str(tiny_clip))
    with_prefix = scorer.embed_texts(["a dog"])
    import torch

    tok = scorer.processor.tokenizer
    enc = tok([PREFIX + "a dog"], return_tensors="pt")
    with torch.inference_mode():
        out = scorer.model.get_text_features(**enc)
    direct = scorer._features(out)
    assert np.allclose(with_prefix, direct, atol=1e-6)


def test_missing_model_is_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from captionkit.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot load CLIP"):
        ClipScorer.load(str(tmp_path / "no-such-clip"))
