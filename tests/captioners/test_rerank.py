"""--rerank clip[:MODEL]: candidates re-ordered by image-text similarity and facts agreement.

The ordering logic runs with a fake scorer (scores chosen by the test) and fake detectors;
a tiny random CLIP and a tiny random SigLIP (built as tests/eval/test_clipscore.py builds
its CLIP) check the real scores end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.captioners.rerank import (
    DEFAULT_CLIP,
    KEEP_SIDE,
    Held,
    ObjectSeer,
    RerankCaptioner,
    agreement,
    check_rerank,
    named_objects,
    parse_spec,
    wrap_rerank,
)
from captionkit.errors import ConfigError
from captionkit.types import Candidate, CaptionOutput, CaptionRequest
from helpers.fakes import FakeDetector


class FakeScorer:
    """CLIP-S chosen per word: a caption's score is the sum of its words' values (at most 2.5)."""

    kind = "clip"
    max_score = 2.5
    name = "fake-clip"

    def __init__(self, values: dict[str, float] | None = None) -> None:
        self.values = values or {"dog": 2.0, "grass": 0.5, "cat": 1.0}
        self.calls: list[list[list[str]]] = []

    def score_images(self, images, texts):
        self.calls.append([list(t) for t in texts])
        return [
            np.array(
                [min(2.5, sum(v for w, v in self.values.items() if w in t.lower())) for t in group]
            )
            for group in texts
        ]


class ListOptions(BackendOptions):
    variant: str = "a"


class ListCaptioner(Captioner[ListOptions]):
    """Returns the candidate texts a test gives, with the backend's own scores 0.9, 0.8, ..."""

    name: ClassVar[str] = "listing"
    Options = ListOptions
    version: ClassVar[str] = "7"
    default_batch_size: ClassVar[int] = 3
    accepts_prompt: ClassVar[bool] = False

    def __init__(self, texts: list[str], extra: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__("list-model", ListOptions(**kw))
        self.texts = texts
        self.extra_out = extra or {}
        self.inputs: list[list[Any]] = []
        self.closed = 0

    def preprocess(self, image, request):
        return ("prepared", image.size)

    def caption_batch(self, inputs, request):
        self.inputs.append(list(inputs))
        cands = [Candidate(t, round(0.9 - 0.1 * i, 2)) for i, t in enumerate(self.texts)]
        return [CaptionOutput(list(cands), extra=dict(self.extra_out)) for _ in inputs]

    def stats(self):
        return {"input_tokens": 5}

    def close(self):
        self.closed += 1


class Single(ListCaptioner):
    multiple_candidates: ClassVar[bool] = False


def held(size=(32, 24), colour=(200, 30, 30)) -> Held:
    return Held(("prepared", size), Image.new("RGB", size, colour))


def rerank(inner: Captioner, weight: float | None = None, **kw: Any) -> RerankCaptioner:
    return RerankCaptioner(inner, "clip", weight, scorer=FakeScorer(), **kw)


REQ3 = CaptionRequest(num_captions=3)


# -- the spec ----------------------------------------------------------------------------------
def test_spec_names_the_model() -> None:
    assert parse_spec("clip") == DEFAULT_CLIP == "openai/clip-vit-base-patch32"
    assert parse_spec("clip:google/siglip-base-patch16-224") == "google/siglip-base-patch16-224"
    assert parse_spec("clip:/models/my clip") == "/models/my clip"


@pytest.mark.parametrize("bad", ["siglip", "clip:", "blip:x", "", "CLIP"])
def test_bad_spec_is_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="--rerank takes clip or clip:MODEL") as err:
        wrap_rerank(ListCaptioner(["a"]), bad)
    assert "\n" not in str(err.value)


def test_run_assembly_check() -> None:
    """What users get wrong, refused before any model loads: --rerank without candidates."""
    assert check_rerank("clip:my/clip", 4, 0.2) == "my/clip"
    with pytest.raises(ConfigError, match="add --num-captions N"):
        check_rerank("clip", 1)
    with pytest.raises(ConfigError, match="--rerank-facts-weight"):
        check_rerank("clip", 3, 2.0)
    with pytest.raises(ConfigError, match="--rerank takes"):
        check_rerank("clap", 3)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_weight_out_of_range(weight: float) -> None:
    with pytest.raises(ConfigError, match="--rerank-facts-weight must be in"):
        wrap_rerank(ListCaptioner(["a"]), "clip", weight)


# -- ordering ------------------------------------------------------------------------------------
def test_best_first_with_scores_and_record() -> None:
    inner = ListCaptioner(["a cat on grass", "a dog on grass", "a red square"])
    out = rerank(inner).caption_batch([held(), held()], REQ3)
    assert len(out) == 2
    texts = [c.text for c in out[0].candidates]
    assert texts == ["a dog on grass", "a cat on grass", "a red square"]
    # score = sim / 2.5 with no facts weight (a non-grounded backend)
    assert [c.score for c in out[0].candidates] == pytest.approx([1.0, 0.6, 0.0])
    record = out[0].extra["rerank"]
    assert record["model"] == "fake-clip" and record["kind"] == "clip"
    assert record["similarity"] == pytest.approx([2.5, 1.5, 0.0])
    assert record["scores"] == pytest.approx([1.0, 0.6, 0.0])
    assert record["inner_scores"] == [0.8, 0.9, 0.7]  # the backend's own, in the new order
    assert record["weight_facts"] == 0.0 and "agreement" not in record
    # the inner backend got its own preprocessed inputs, not the Held pairs
    assert inner.inputs == [[("prepared", (32, 24)), ("prepared", (32, 24))]]


def test_ties_keep_the_backend_order() -> None:
    out = rerank(ListCaptioner(["red one", "blue one", "a dog"])).caption_batch([held()], REQ3)
    assert [c.text for c in out[0].candidates] == ["a dog", "red one", "blue one"]


def test_failed_outputs_pass_through_untouched() -> None:
    class Failing(ListCaptioner):
        def caption_batch(self, inputs, request):
            ok = super().caption_batch(inputs[:1], request)
            return [*ok, CaptionOutput.failed("boom")]

    scorer = FakeScorer()
    wrapper = RerankCaptioner(Failing(["a cat", "a dog"]), "clip", scorer=scorer)
    out = wrapper.caption_batch([held(), held()], REQ3)
    assert out[1].error == "boom" and "rerank" not in out[1].extra
    assert [c.text for c in out[0].candidates] == ["a dog", "a cat"]
    assert scorer.calls == [[["a cat", "a dog"]]]  # only the caption that exists is scored


def test_grounded_facts_weigh_in_by_default() -> None:
    """Over grounded, w = 0.5 and agreement comes from the facts it already returns: a
    candidate naming an undetected cat loses to one naming the detected dog even though the
    (fake) CLIP prefers cats here."""
    facts = {"counts": {"dog": 1}, "objects": [{"label": "dog"}], "rejected": []}
    inner = ListCaptioner(["a cat", "a dog", "a cat and a dog"], extra={"facts": facts})
    inner.name = "grounded"
    seer = ObjectSeer()
    seer.detector = FakeDetector(["cat"])  # must not run: the facts say what was seen
    wrapper = RerankCaptioner(inner, "clip", scorer=FakeScorer({"cat": 2.5, "dog": 1.0}), seer=seer)
    assert wrapper.weight_facts == 0.5
    out = wrapper.caption_batch([held()], REQ3)
    record = out[0].extra["rerank"]
    by_text = {c.text: c.score for c in out[0].candidates}
    # (1 - w) * sim / 2.5 + w * agreement
    assert by_text["a dog"] == pytest.approx(0.5 * 0.4 + 0.5 * 1.0)
    assert by_text["a cat"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert by_text["a cat and a dog"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert out[0].candidates[0].text == "a cat and a dog"
    assert [c.text for c in out[0].candidates][1] == "a dog"
    assert record["agreement"] == [0.5, 1.0, 0.0]
    assert seer.detector.batches == []


def test_weight_zero_turns_facts_off_over_grounded() -> None:
    inner = ListCaptioner(["a dog", "a cat"], extra={"facts": {"counts": {"dog": 1}}})
    inner.name = "grounded"
    wrapper = RerankCaptioner(inner, "clip", 0.0, scorer=FakeScorer({"cat": 2.5}))
    out = wrapper.caption_batch([held()], REQ3)
    assert out[0].candidates[0].text == "a cat"


def test_facts_weight_over_another_backend_runs_the_detector() -> None:
    seer = ObjectSeer()
    seer.detector = FakeDetector(["cat"])
    wrapper = rerank(ListCaptioner(["a dog", "a cat"]), 1.0, seer=seer)
    out = wrapper.caption_batch([held(), held()], REQ3)
    assert seer.detector.batches == [2]  # one batch for both images
    assert [c.text for c in out[0].candidates] == ["a cat", "a dog"]
    assert json.loads(wrapper.fingerprint())["rerank"]["objects"]["detector"] == "ssd"


def test_agreement_rule() -> None:
    assert agreement("a dog and a cat on a sofa", {"dog", "cat"}) == pytest.approx(2 / 3)
    assert agreement("two puppies", {"dog"}) == 1.0  # synonyms and plurals count
    assert agreement("a sunny beach", set()) == 1.0  # names nothing, nothing there
    assert agreement("a sunny beach", {"person"}) == 0.5  # names nothing, misses the person
    # "orange" alone is the colour, not the fruit; "oranges" is the fruit
    assert named_objects("a man in an orange shirt") == [("man", "person")]
    assert named_objects("two oranges on a table") == [
        ("orange", "orange"), ("table", "dining table"),
    ]  # fmt: skip


# -- backends without candidates -------------------------------------------------------------
def test_backend_without_candidates_is_refused_for_n_above_one() -> None:
    wrapper = rerank(Single(["a dog"]))
    assert wrapper.multiple_candidates is False  # check_request refuses it before any work
    with pytest.raises(ConfigError, match="returns one caption per image, so --rerank") as err:
        wrapper.caption_batch([held()], REQ3)
    assert "\n" not in str(err.value)
    out = wrapper.caption_batch([held()], CaptionRequest(num_captions=1))
    assert out[0].extra["rerank"]["similarity"] == [2.0]


def test_engine_check_refuses_it_too() -> None:
    from captionkit.engine.stages import check_request

    with pytest.raises(ConfigError, match="returns one caption per image"):
        check_request(rerank(Single(["a dog"])), REQ3)


# -- delegation, store key ---------------------------------------------------------------------
def test_delegates_what_the_engine_reads() -> None:
    inner = ListCaptioner(["a dog"])
    wrapper = rerank(inner)
    assert wrapper.name == "listing" and wrapper.model == "list-model"
    assert wrapper.model_label == inner.model_label
    assert wrapper.version == "7" and wrapper.default_batch_size == 3
    assert wrapper.accepts_prompt is False and wrapper.multiple_candidates is True
    assert wrapper.stats() == {"input_tokens": 5}
    wrapper.caption_batch([held()], REQ3)
    assert wrapper.stats() == {"input_tokens": 5, "reranked": 1, "rerank_changed_best": 0}
    wrapper.close()
    assert inner.closed == 1


def test_preprocess_keeps_a_small_image_beside_the_input() -> None:
    wrapper = rerank(ListCaptioner(["a dog"]))
    big = Image.new("RGB", (2000, 1000))
    h = wrapper.preprocess(big, REQ3)
    assert h.input == ("prepared", (2000, 1000))  # the backend saw the full image
    assert max(h.image.size) == KEEP_SIDE and h.image.size == (KEEP_SIDE, KEEP_SIDE // 2)
    small = Image.new("RGB", (40, 30))
    assert wrapper.preprocess(small, REQ3).image is small  # no copy when already small
    # stacked wrappers share one Held: the outer one does not wrap it again
    outer = rerank(wrapper)
    h2 = outer.preprocess(small, REQ3)
    assert isinstance(h2, Held) and not isinstance(h2.input, Held)
    out = outer.caption_batch([h2], REQ3)
    assert out[0].candidates[0].text == "a dog"


def test_fingerprint_includes_the_rerank_spec() -> None:
    inner = ListCaptioner(["a dog"])
    plain = inner.fingerprint()
    a = RerankCaptioner(inner, "clip", scorer=FakeScorer()).fingerprint()
    b = RerankCaptioner(inner, "clip:other/clip", scorer=FakeScorer()).fingerprint()
    c = RerankCaptioner(inner, "clip", 0.3, scorer=FakeScorer()).fingerprint()
    assert len({plain, a, b, c}) == 4
    assert json.loads(a)["inner"] == plain
    assert json.loads(a)["rerank"]["model"] == DEFAULT_CLIP
    assert json.loads(b)["rerank"]["model"] == "other/clip"
    # the inner backend's options still count
    other = RerankCaptioner(ListCaptioner(["a dog"], variant="b"), "clip", scorer=FakeScorer())
    assert other.fingerprint() != a


def test_through_the_engine(tmp_path: Path) -> None:
    """caption() with the wrapped backend: results carry the ranked candidates and record."""
    from captionkit.api import caption
    from captionkit.captioners import registry

    inner = ListCaptioner(["a cat", "a dog"])
    registry.register(ListCaptioner)
    try:
        wrapper = rerank(inner)
        img = Image.new("RGB", (40, 30), (10, 200, 10))
        (result,) = caption([img], model=wrapper, num_captions=2, store=tmp_path / "s.db")
        assert result.ok, result.error
        assert result.text == "a dog" and result.backend == "listing"
        assert [c.text for c in result.candidates] == ["a dog", "a cat"]
        assert result.extra["rerank"]["similarity"] == [2.0, 1.0]
        # the store keeps it under the re-ranked key: the plain backend recomputes
        (plain,) = caption([img], model=inner, num_captions=2, store=tmp_path / "s.db")
        assert not plain.cached and plain.text == "a cat"
        (again,) = caption([img], model=wrapper, num_captions=2, store=tmp_path / "s.db")
        assert again.cached and again.text == "a dog"
    finally:
        registry.unregister("listing")


# -- real (tiny, random) CLIP and SigLIP -------------------------------------------------------


def _build_tiny_siglip(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    words = ["<pad>", "<unk>", "</s>", "a", "photo", "depicts", "dog", "cat", "on", "grass"]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=len(words),
            max_position_embeddings=16,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=2,
            **small,
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
    )
    torch.manual_seed(0)
    SiglipModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return _build_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"))


def test_tiny_clip_reranks_by_clip_s(tiny_clip: Path) -> None:
    from captionkit.eval.clipscore import ClipScorer, clip_s_from_embeddings

    texts = ["a dog runs on the grass", "a cat sleeps on the sofa", "a red square"]
    wrapper = wrap_rerank(ListCaptioner(texts), f"clip:{tiny_clip}", device="cpu")
    image = Image.new("RGB", (48, 40), (180, 40, 40))
    out = wrapper.caption_batch([wrapper.preprocess(image, REQ3)], REQ3)
    record = out[0].extra["rerank"]
    assert record["model"] == str(tiny_clip) and record["kind"] == "clip"
    # recomputed with the published formula from the scorer's own embeddings
    scorer = ClipScorer.load(str(tiny_clip))
    img = scorer.embed_pil([image] * 3)
    expected = dict(zip(texts, clip_s_from_embeddings(img, scorer.embed_texts(texts)), strict=True))
    ranked = [c.text for c in out[0].candidates]
    assert ranked == sorted(texts, key=lambda t: -expected[t])
    assert record["similarity"] == pytest.approx([expected[t] for t in ranked], abs=1e-4)
    assert [c.score for c in out[0].candidates] == pytest.approx(
        [expected[t] / 2.5 for t in ranked], abs=1e-4
    )
    assert all(0.0 <= s <= 2.5 for s in record["similarity"])
    wrapper.close()


def test_tiny_siglip_scores_are_its_sigmoid(tiny_siglip: Path) -> None:
    import torch

    from captionkit.eval.clipscore import PREFIX, ClipScorer

    scorer = ClipScorer.load(str(tiny_siglip))
    assert scorer.kind == "siglip" and scorer.max_score == 1.0
    image = Image.new("RGB", (40, 40), (20, 160, 20))
    texts = ["a dog on grass", "a cat"]
    (scores,) = scorer.score_images([image], [texts])
    # the model's own forward pass: logits_per_image = exp(t) * cos + b
    tok, improc = scorer.processor.tokenizer, scorer.processor.image_processor
    enc = tok([PREFIX + t for t in texts], padding="max_length", max_length=16, return_tensors="pt")
    pixels = improc(images=[image], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = scorer.model(input_ids=enc["input_ids"], pixel_values=pixels)
    expected = torch.sigmoid(out.logits_per_image[0]).numpy()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(0.0 < s < 1.0 for s in scores)
    # and the re-ranker takes a SigLIP folder with the same spec
    wrapper = wrap_rerank(ListCaptioner(texts), f"clip:{tiny_siglip}", device="cpu")
    ranked = wrapper.caption_batch([Held(None, image)], CaptionRequest(num_captions=2))[0]
    assert ranked.extra["rerank"]["kind"] == "siglip"
    assert [c.score for c in ranked.candidates] == pytest.approx(
        sorted(expected, reverse=True), abs=1e-4
    )
    wrapper.close()


def test_missing_clip_is_one_line_at_the_first_batch(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from captionkit.errors import ModelLoadError

    wrapper = wrap_rerank(ListCaptioner(["a dog"]), f"clip:{tmp_path / 'nowhere'}", device="cpu")
    with pytest.raises(ModelLoadError, match="cannot load CLIP"):
        wrapper.caption_batch([held()], REQ3)


class Drafted(ListCaptioner):
    """A backend whose preprocessing resizes to 224 px (an HF captioner's draft side)."""

    @property
    def decode_size(self) -> int | None:
        return 224


def test_wrappers_pass_the_draft_side_on_and_keep_enough_pixels_for_clip() -> None:
    from captionkit.captioners.rewrite import RewriteCaptioner

    assert rerank(ListCaptioner(["a dog"])).decode_size is None  # full-size decode stays
    assert rerank(Drafted(["a dog"])).decode_size == 384  # the CLIP copy needs its own side
    assert RewriteCaptioner(Drafted(["a dog"]), llm=object()).decode_size == 224  # type: ignore[arg-type]
