"""BLEU, ROUGE-L and CIDEr-D equal pycocoevalcap's to 1e-6 on the same inputs."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr, redirect_stdout

import pytest

from captionkit.eval.metrics import CiderD, bleu, cider_d, ptb_tokenize, rouge_l, score_all

from .conftest import java_available

pytest.importorskip("pycocoevalcap")

SYNTHETIC_REFS = {
    "p1": ["A dog runs through the grass.", "A brown dog is running on grass!", "dog, grass"],
    "p2": ["TWO MEN RIDE BIKES.", "two men ride bikes", "Men (two) riding bicycles..."],
    "p3": ["Ein Hund läuft über die Straße.", "A café's crème brûlée", "Собака бежит"],
    "p4": ["It's a dog's life, isn't it?", "She said “hello” — and left.", "x"],
    "p5": ["a cat", "a cat sits", "a black cat sits on a mat ."],
}
SYNTHETIC_CANDS = {
    "p1": "A DOG RUNS THROUGH THE GRASS!!!",
    "p2": "",  # empty candidate
    "p3": "Собака бежит über die Straße",
    "p4": "it 's a dog 's life , is n't it ?",
    "p5": "...",  # all punctuation
}


def _upstream(cands: dict[str, str], refs: dict[str, list[str]], java_tokens: bool):
    """pycocoevalcap's own pipeline: PTBTokenizer (jar) when available, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if java_tokens:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        with redirect_stderr(io.StringIO()):
            gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
            res = PTBTokenizer().tokenize({k: [{"caption": cands[k]}] for k in refs})
    else:
        gts = {k: ptb_tokenize(v) for k, v in refs.items()}
        res = {k: ptb_tokenize([cands[k]]) for k in refs}
    out = {}
    with redirect_stdout(io.StringIO()):
        b, b_per = Bleu(4).compute_score(gts, res)
    keys = list(gts)
    for i in range(4):
        out[f"BLEU-{i + 1}"] = (b[i], dict(zip(keys, b_per[i], strict=True)))
    r, r_per = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = (r, dict(zip(keys, r_per, strict=True)))
    c, c_per = Cider().compute_score(gts, res)
    out["CIDEr-D"] = (c, dict(zip(keys, c_per, strict=True)))
    return out


def _assert_equal(cands, refs, java_tokens: bool) -> None:
    expected = _upstream(cands, refs, java_tokens)
    got = score_all(cands, refs, ("bleu", "rouge", "cider"))
    for name, (corpus, per) in expected.items():
        assert math.isclose(got.corpus[name], corpus, abs_tol=1e-6), name
        for key, value in per.items():
            assert math.isclose(got.per_image[key][name], value, abs_tol=1e-6), (name, key)


@pytest.fixture(scope="module")
def flickr_system(flickr_refs):
    """The first reference held out as a "system", scored against the other four."""
    cands = {k: v[0] for k, v in flickr_refs.items()}
    refs = {k: v[1:] for k, v in flickr_refs.items()}
    first = next(iter(cands))
    cands[first] = ""  # an empty candidate among real ones
    return cands, refs


@pytest.mark.skipif(not java_available(), reason="needs java for pycocoevalcap's tokeniser")
def test_flickr8k_parity_with_upstream_pipeline(flickr_system) -> None:
    _assert_equal(*flickr_system, java_tokens=True)


@pytest.mark.skipif(not java_available(), reason="needs java for pycocoevalcap's tokeniser")
def test_synthetic_edge_cases_parity_with_upstream_pipeline() -> None:
    _assert_equal(SYNTHETIC_CANDS, SYNTHETIC_REFS, java_tokens=True)


def test_scorers_parity_on_same_tokens(flickr_system) -> None:
    """Without Java: same tokens in, same scores out (the scorers alone)."""
    _assert_equal(*flickr_system, java_tokens=False)
    _assert_equal(SYNTHETIC_CANDS, SYNTHETIC_REFS, java_tokens=False)


def test_flickr8k_figures(flickr_system) -> None:
    """Pinned dev-sample figures (held-out human reference vs the other four)."""
    got = score_all(*flickr_system, ("bleu", "rouge", "cider"))
    assert got.corpus["BLEU-4"] == pytest.approx(0.21214, abs=1e-5)
    assert got.corpus["CIDEr-D"] == pytest.approx(0.82891, abs=1e-5)
    assert got.corpus["ROUGE-L"] == pytest.approx(0.49303, abs=1e-5)


def test_functions_agree_with_score_all(flickr_system) -> None:
    cands, refs = flickr_system
    all_ = score_all(cands, refs, ("bleu", "rouge", "cider"))
    assert bleu(cands, refs)[0][3] == pytest.approx(all_.corpus["BLEU-4"], abs=1e-12)
    assert rouge_l(cands, refs)[0] == pytest.approx(all_.corpus["ROUGE-L"], abs=1e-12)
    corpus, per = cider_d(cands, refs)
    assert corpus == pytest.approx(all_.corpus["CIDEr-D"], abs=1e-12)
    assert set(per) == set(cands)


def test_cider_d_class_reuses_document_frequencies(flickr_system) -> None:
    cands, refs = flickr_system
    scorer = CiderD(refs)
    full, per = scorer.score(cands)
    assert full == pytest.approx(cider_d(cands, refs)[0], abs=1e-9)
    # a subset keeps the whole set's document frequencies (SCST), so per-image scores match
    subset = dict(list(cands.items())[:10])
    _, sub_per = scorer.score(subset)
    assert all(sub_per[k] == pytest.approx(per[k], abs=1e-12) for k in subset)
    assert scorer.score_one(next(iter(refs)), refs[next(iter(refs))][0]) > 1.0
    # a perfect copy of every reference beats a constant caption
    const = dict.fromkeys(cands, "a dog")
    assert scorer.score(const)[0] < full
