"""--qa: every check on synthetic captions (what must and must not be flagged), the wrapper's
record, retries, mark/fail, promotion, stats and store key; CLIPScore with a tiny random CLIP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from captionkit.captioners.base import Captioner
from captionkit.captioners.qa import (
    FLAGS,
    QACaptioner,
    QAOptions,
    cut_off,
    empty,
    preamble,
    refusal,
    repetition,
    retry_request,
    text_flags,
    wrap_qa,
)
from captionkit.captioners.rerank import Held, ObjectSeer
from captionkit.errors import ConfigError
from captionkit.types import Candidate, CaptionOutput, CaptionRequest, Decoding
from helpers.fakes import FakeDetector

LOOP = "The sky is a canvas, the sky is a canvas, the sky is a canvas"


# -- the rules, each with captions that must and must not trip it --------------------------------
@pytest.mark.parametrize("text", ["", "   ", "...", " - ", "\n"])
def test_empty(text: str) -> None:
    assert empty(text) and text_flags(text) == {"empty": "no letters or digits"}


@pytest.mark.parametrize("text", ["A dog.", "7", "dog"])
def test_not_empty(text: str) -> None:
    assert not empty(text)


@pytest.mark.parametrize(
    "text, style",
    [
        ("A dog running on the", "short"),
        ("A man sitting on a bench with", "short"),
        ("Two girls and", "short"),
        ("A brown dog running through the grass,", "short"),
        ("A woman holding (", "detailed"),
        ("A dog runs on the beach and then...", "short"),
        ("dog, grass, sunny day, a", "training"),
        (
            "Black dog leaping over a fallen log in a sunlit forest clearing while a second dog "
            "watches from the path beside",
            "alt-text",
        ),
    ],
)
def test_cut_off(text: str, style: str) -> None:
    assert cut_off(text, style), text
    assert "cut_off" in text_flags(text, style)


@pytest.mark.parametrize(
    "text, style",
    [
        ("A dog runs on the grass.", "short"),
        ("a dog running on the grass", "short"),  # BLIP-style: no period, short of the limit
        ("dog, grass, sunny day, photo", "training"),
        ("Waiting for summer... #beach #dogs", "social"),
        ("Sunset vibes...", "social"),
        ("A man in a red shirt is cooking (outdoors).", "detailed"),
        ("A sign that says 'Open'", "short"),
        ("The lights are on", "short"),
    ],
)
def test_not_cut_off(text: str, style: str) -> None:
    assert cut_off(text, style) is None, text


def test_cut_off_at_the_length_limit() -> None:
    """No closing punctuation where the text hit its budget: the token limit (estimated at
    ~4 characters a token) or the style's character cap; the same text ended by a period, or
    shorter than the limit, is fine."""
    text = "A group of people standing on a sandy beach near the water looking at boats"  # 75 ch
    assert cut_off(text, "short", max_new_tokens=20) == (
        "no closing punctuation at the 20-token limit"
    )
    assert cut_off(text + ".", "short", max_new_tokens=20) is None
    assert cut_off(text, "short", max_new_tokens=60) is None
    assert cut_off(text, "training", max_new_tokens=20) is None  # tags end without periods
    alt = (
        "x" * 0
        + "Woman in a yellow raincoat walking two small dogs along a wet city street at dusk"
    )
    assert len(alt) < 0.85 * 125 and cut_off(alt, "alt-text") is None
    long_alt = alt + " under bright neon shop signs and lights"
    assert len(long_alt) >= 0.85 * 125
    assert cut_off(long_alt, "alt-text") == "no closing punctuation at the 125-character limit"


def test_cut_off_reported_by_the_backend() -> None:
    assert cut_off("A dog.", extra={"finish_reason": "length"})
    assert cut_off("A dog.", extra={"truncated": True})
    assert cut_off("A dog.", extra={"finish_reason": "stop"}) is None


@pytest.mark.parametrize(
    "text, phrase",
    [
        (LOOP, "the sky is a canvas"),
        ("A very very very happy dog", "very very very"),
        ("A dog on the grass on the grass", "on the grass"),
        ("A dog runs. A dog runs.", "a dog runs"),
        (
            "A man in a blue shirt rides a bike down the hill while a man in a blue shirt rides "
            "a bike down the hill",
            "a man in a blue shirt rides a",
        ),
        ("#dog #dog #dog", "dog dog dog"),
    ],
)
def test_repetition(text: str, phrase: str) -> None:
    assert repetition(text) == phrase


@pytest.mark.parametrize(
    "text",
    [
        "Two dogs run side by side on the beach.",
        "Bye bye, summer.",
        "A man in a red shirt stands next to a man in a blue shirt.",
        "A dog and a cat and a bird sit on a fence.",
        "People walk one by one across the bridge.",
        "The dog is brown. The cat is white. The bird is blue.",
    ],
)
def test_no_repetition(text: str) -> None:
    assert repetition(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with identifying people in images.",
        "I\u2019m unable to view the image you sent.",
        "Sorry, I cannot describe this image.",
        "As an AI language model, I do not see images.",
        "I apologize, but there is no image attached.",
        "Unfortunately, I am unable to process this request.",
    ],
)
def test_refusal(text: str) -> None:
    assert refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "A sorry-looking dog sits in the rain.",
        "A sign in Hawaii cannot be missed.",
        "A boy holds a sign reading 'I love NY'.",
        "Two people apologise to each other on a stage.",
    ],
)
def test_no_refusal(text: str) -> None:
    assert refusal(text) is None


@pytest.mark.parametrize(
    "text, style",
    [
        ("The image shows a dog on a beach.", "short"),
        ("This image depicts two children playing.", "detailed"),
        ("Sure! Here is a caption: a dog on a beach.", "short"),
        ("Here's a caption for the image: dog on beach", "social"),
        ("In this picture, a man rides a horse.", "short"),
        ("Caption: a dog on a beach", "short"),
        ("This is a photo of a red car.", "short"),
        ("Image of a dog running on a beach", "alt-text"),
        ("Certainly. A dog on a beach.", "short"),
    ],
)
def test_preamble(text: str, style: str) -> None:
    assert preamble(text, style)


@pytest.mark.parametrize(
    "text, style",
    [
        ("A dog on a beach.", "short"),
        ("The dog shows its teeth to the camera.", "short"),
        ("A photo of a dog on a beach", "short"),  # a training-set convention, not chatter
        ("The picture frame hangs on a white wall.", "short"),
        ("Surely the best day at the beach.", "social"),
        ("Herons stand in the shallow water.", "short"),
    ],
)
def test_no_preamble(text: str, style: str) -> None:
    assert preamble(text, style) is None


def test_good_captions_raise_nothing() -> None:
    for text, style in [
        ("A black dog runs through the snow.", "short"),
        ("black dog, snow, running, winter, photo", "training"),
        ("Snow day zoomies! #dogs #snow #winter", "social"),
        ("Black dog running through deep snow.", "alt-text"),
    ]:
        assert text_flags(text, style, 60) == {}, text


# -- the wrapper ---------------------------------------------------------------------------------
class FakeScorer:
    """CLIP-S = 2.0 for captions naming a dog, 0.5 otherwise."""

    kind = "clip"
    max_score = 2.5
    name = "fake-clip"

    def __init__(self) -> None:
        self.calls = 0

    def score_images(self, images, texts):
        self.calls += 1
        return [np.array([2.0 if "dog" in t.lower() else 0.5 for t in group]) for group in texts]


class Scripted(Captioner):
    """Answers from a script: ``answers[k]`` is the candidate list of call k (the last one
    repeats); records every request it got."""

    name: ClassVar[str] = "scripted"
    version: ClassVar[str] = "3"

    def __init__(self, *answers: list[str], extra: dict[str, Any] | None = None) -> None:
        super().__init__("script-model")
        self.answers = answers
        self.extra_out = extra or {}
        self.requests: list[CaptionRequest] = []
        self.batches: list[int] = []

    def caption_batch(self, inputs, request):
        call = min(len(self.requests), len(self.answers) - 1)
        self.requests.append(request)
        self.batches.append(len(inputs))
        return [
            CaptionOutput([Candidate(t) for t in self.answers[call]], extra=dict(self.extra_out))
            for _ in inputs
        ]


def held() -> Held:
    return Held("input", Image.new("RGB", (32, 24), (200, 30, 30)))


def qa(inner: Captioner, detector: list[str] | None = None, **options: Any) -> QACaptioner:
    seer = ObjectSeer()
    seer.detector = FakeDetector(detector if detector is not None else ["dog"])
    return QACaptioner(inner, QAOptions(**options), scorer=FakeScorer(), seer=seer)


REQ = CaptionRequest()


def test_record_of_a_good_caption() -> None:
    wrapper = qa(Scripted(["A dog runs on the grass."]))
    (out,) = wrapper.caption_batch([held()], REQ)
    assert out.error is None and out.candidates[0].text == "A dog runs on the grass."
    assert out.extra["qa"] == {
        "passed": True,
        "flags": [],
        "details": {},
        "attempts": 1,
        "clipscore": 2.0,
        "clip_model": "fake-clip",
        "unseen_objects": [],
        "seen_objects": ["dog"],
    }
    assert wrapper.stats() == {"qa_checked": 1}


def test_glitches_are_marked_and_counted() -> None:
    wrapper = qa(
        Scripted(["I'm sorry, but I can't help with that."], [LOOP], ["The image shows a"])
    )
    outs = [wrapper.caption_batch([held()], REQ)[0] for _ in range(3)]
    assert [o.extra["qa"]["flags"] for o in outs] == [
        ["refusal"],
        ["repetition"],
        ["cut_off", "preamble"],
    ]
    assert all(o.error is None and o.candidates for o in outs)  # "mark" keeps the captions
    assert outs[1].extra["qa"]["details"]["repetition"] == "the sky is a canvas"
    assert wrapper.stats() == {
        "qa_checked": 3, "qa_flagged": 3, "qa_refusal": 1, "qa_repetition": 1,
        "qa_cut_off": 1, "qa_preamble": 1,
    }  # fmt: skip
    assert set(wrapper.stats()) - {"qa_checked", "qa_flagged"} <= {f"qa_{f}" for f in FLAGS}


def test_min_clipscore_marks_or_fails() -> None:
    marked = qa(Scripted(["A red square."]), min_clipscore=1.0)
    (out,) = marked.caption_batch([held()], REQ)
    assert out.error is None and out.candidates[0].text == "A red square."
    assert out.extra["qa"]["flags"] == ["low_clipscore"]
    assert out.extra["qa"]["details"]["low_clipscore"] == "0.5 < 1.0"
    failing = qa(Scripted(["A red square."]), min_clipscore=1.0, action="fail")
    (out,) = failing.caption_batch([held()], REQ)
    assert out.candidates == [] and out.error == "caption QA failed (low_clipscore: 0.5 < 1.0)"
    assert out.extra["qa"]["clipscore"] == 0.5  # the record is kept with the failure
    assert failing.stats()["qa_failed"] == 1
    failing.inner.answers = (["A dog."],)
    (ok,) = failing.caption_batch([held()], REQ)
    assert ok.error is None and ok.extra["qa"]["passed"]


def test_unseen_objects_from_the_detector() -> None:
    wrapper = qa(Scripted(["A dog chases a cat past two oranges."]), detector=["dog"])
    (out,) = wrapper.caption_batch([held()], REQ)
    assert out.extra["qa"]["unseen_objects"] == ["cat", "orange"]
    assert out.extra["qa"]["details"]["unseen_objects"] == "cat, orange"
    assert wrapper.seer.detector.batches == [1]


def test_unseen_objects_from_grounded_facts_without_running_the_detector() -> None:
    facts = {"counts": {"person": 2}, "objects": [], "rejected": [{"label": "dog", "score": 0.4}]}
    wrapper = qa(Scripted(["Two men and a dog near a horse."], extra={"facts": facts}), ["cat"])
    (out,) = wrapper.caption_batch([held()], REQ)
    assert out.extra["qa"]["unseen_objects"] == ["horse"]  # the held-back dog counts as seen
    assert wrapper.seer.detector.batches == []


def test_checks_can_be_turned_off() -> None:
    wrapper = qa(Scripted(["A cat."]), objects=False, clipscore=False)
    (out,) = wrapper.caption_batch([held()], REQ)
    assert out.extra["qa"]["passed"] is True
    assert "clipscore" not in out.extra["qa"] and "unseen_objects" not in out.extra["qa"]
    assert wrapper.seer.detector.batches == [] and wrapper._scorer.calls == 0


def test_first_passing_candidate_is_promoted() -> None:
    wrapper = qa(Scripted(["I'm sorry, I cannot do that.", "A dog.", "A dog sits."]))
    (out,) = wrapper.caption_batch([held()], CaptionRequest(num_captions=3))
    assert [c.text for c in out.candidates] == [
        "A dog.",
        "I'm sorry, I cannot do that.",
        "A dog sits.",
    ]
    assert out.extra["qa"]["passed"] and out.extra["qa"]["promoted"] is True
    assert wrapper.stats()["qa_promoted"] == 1


def test_retry_until_a_caption_passes() -> None:
    """A backend that loops once and then writes a good caption: the retry asks with
    sampling on and a new seed, and keeps the passing caption."""
    inner = Scripted([LOOP], ["A dog on the grass."])
    wrapper = qa(inner, retry=3)
    (out,) = wrapper.caption_batch([held()], CaptionRequest(decoding=Decoding(seed=5)))
    assert out.candidates[0].text == "A dog on the grass."
    assert out.extra["qa"]["passed"] and out.extra["qa"]["attempts"] == 2
    assert len(inner.requests) == 2  # stopped at the first pass
    first, second = inner.requests
    assert not first.decoding.do_sample and first.decoding.seed == 5
    assert second.decoding.do_sample and second.decoding.seed == 6
    assert second.decoding.temperature == 0.7
    assert wrapper.stats() == {"qa_checked": 1, "qa_retried": 1, "qa_fixed_by_retry": 1}


def test_retry_only_the_failing_images() -> None:
    class Mixed(Scripted):
        def caption_batch(self, inputs, request):
            self.requests.append(request)
            self.batches.append(len(inputs))
            texts = {"good": "A dog.", "bad": LOOP if len(self.requests) == 1 else "A dog runs."}
            return [CaptionOutput([Candidate(texts[x])]) for x in inputs]

    inner = Mixed([""])
    wrapper = qa(inner, retry=2)
    inputs = [Held(x, Image.new("RGB", (8, 8))) for x in ("good", "bad", "good")]
    outs = wrapper.caption_batch(inputs, REQ)
    assert inner.batches == [3, 1]
    assert [o.candidates[0].text for o in outs] == ["A dog.", "A dog runs.", "A dog."]
    assert [o.extra["qa"]["attempts"] for o in outs] == [1, 2, 1]


def test_retry_keeps_the_best_when_none_pass() -> None:
    inner = Scripted(["I'm sorry, I can't.", LOOP], ["A red square"], [LOOP + " again"])
    wrapper = qa(inner, retry=2, min_clipscore=1.0)
    (out,) = wrapper.caption_batch([held()], CaptionRequest(num_captions=2))
    # attempt 2: "A red square" has one flag (low CLIPScore) where the first answer had two
    assert out.candidates[0].text == "A red square"
    assert out.extra["qa"]["flags"] == ["low_clipscore"] and out.extra["qa"]["attempts"] == 3
    assert inner.requests[2].decoding.seed == 2  # seeds 1, 2 from no seed
    assert wrapper.stats()["qa_retried"] == 1 and "qa_fixed_by_retry" not in wrapper.stats()


def test_deterministic_backend_is_not_asked_again() -> None:
    """The grounded template writer ignores sampling: one retry shows it, no more are made."""
    inner = Scripted(["The image shows a dog."])
    wrapper = qa(inner, retry=5)
    (out,) = wrapper.caption_batch([held()], REQ)
    assert len(inner.requests) == 2
    assert out.extra["qa"]["flags"] == ["preamble"] and out.extra["qa"]["attempts"] == 2


def test_failed_outputs_are_left_to_the_engine() -> None:
    class Broken(Scripted):
        def caption_batch(self, inputs, request):
            self.requests.append(request)
            return [CaptionOutput.failed("out of memory") for _ in inputs]

    inner = Broken([""])
    wrapper = qa(inner, retry=3)
    (out,) = wrapper.caption_batch([held()], REQ)
    assert out.error == "out of memory" and "qa" not in out.extra
    assert len(inner.requests) == 1 and wrapper.stats() == {}


def test_retry_request() -> None:
    req = CaptionRequest(decoding=Decoding(do_sample=True, temperature=1.2, seed=None))
    again = retry_request(req, 3)
    assert again.decoding.seed == 3 and again.decoding.temperature == 1.2
    assert again.style == req.style and again.fingerprint() != req.fingerprint()


# -- options, store key, errors ----------------------------------------------------------------
def test_fingerprint_includes_the_qa_options() -> None:
    inner = Scripted(["A dog."])
    base = QACaptioner(inner, QAOptions())
    prints = {
        inner.fingerprint(),
        base.fingerprint(),
        QACaptioner(inner, QAOptions(retry=2)).fingerprint(),
        QACaptioner(inner, QAOptions(min_clipscore=0.7)).fingerprint(),
        QACaptioner(inner, QAOptions(action="fail")).fingerprint(),
        QACaptioner(inner, QAOptions(objects=False)).fingerprint(),
        QACaptioner(inner, QAOptions(clip_model="other/clip")).fingerprint(),
    }
    assert len(prints) == 7
    assert json.loads(base.fingerprint())["inner"] == inner.fingerprint()
    # where the CLIP model runs changes no caption
    assert QACaptioner(inner, QAOptions(device="cpu")).fingerprint() == base.fingerprint()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"clipscore": False, "min_clipscore": 0.5}, "--qa-min-clipscore needs the CLIPScore"),
        ({"retry": -1}, "retry"),
        ({"action": "drop"}, "action"),
        ({"min_clipscore": -2}, "min_clipscore"),
        ({"colour": True}, "colour"),
    ],
)
def test_bad_options_are_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        QAOptions.build(**values)
    assert "\n" not in str(err.value) and str(err.value).startswith("--qa: ")


def test_build_ignores_unset_flags() -> None:
    assert QAOptions.build(retry=None, min_clipscore=None, action="fail") == QAOptions(
        action="fail"
    )


def test_unknown_detector_fails_before_any_work() -> None:
    with pytest.raises(ConfigError, match="detector"):
        wrap_qa(Scripted(["A dog."]), QAOptions(detector="nope"))


def test_delegation_and_close() -> None:
    class Closing(Scripted):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    inner = Closing(["A dog."])
    wrapper = wrap_qa(inner, QAOptions(clipscore=False))
    assert (wrapper.name, wrapper.model_label, wrapper.version) == ("scripted", "script-model", "3")
    h = wrapper.preprocess(Image.new("RGB", (8, 8)), REQ)
    assert isinstance(h, Held)
    wrapper.close()
    assert inner.closed == 1


def test_through_the_engine_with_action_fail(tmp_path: Path) -> None:
    """caption() with the wrapper: a glitched caption becomes a failed image with its QA
    record, a good one is stored with it; the failure is recomputed by the next run."""
    from captionkit.api import caption
    from captionkit.captioners import registry

    class ByColour(Scripted):
        def preprocess(self, image, request):
            return image.getpixel((0, 0))[0] > 100  # red: loops

        def caption_batch(self, inputs, request):
            self.requests.append(request)
            return [CaptionOutput([Candidate(LOOP if red else "A dog.")]) for red in inputs]

    registry.register(ByColour)
    try:
        wrapper = qa(ByColour([""]), action="fail", objects=False)
        red, blue = Image.new("RGB", (16, 16), (250, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 250))
        bad, good = caption([red, blue], model=wrapper, store=tmp_path / "s.db")
        assert bad.error and bad.error.startswith("caption QA failed (repetition:")
        assert bad.extra["qa"]["flags"] == ["repetition"]
        assert good.ok and good.extra["qa"]["passed"] and good.extra["qa"]["clipscore"] == 2.0
        bad2, good2 = caption([red, blue], model=wrapper, store=tmp_path / "s.db")
        assert good2.cached and not bad2.cached
        assert wrapper.stats()["qa_failed"] == 2
    finally:
        registry.unregister("scripted")


# -- CLIPScore with a tiny random CLIP -------------------------------------------------------


def test_clipscore_is_hessel_clip_s(tiny_clip: Path) -> None:
    from captionkit.eval.clipscore import ClipScorer, clip_s_from_embeddings

    text = "a dog runs on the grass"
    wrapper = wrap_qa(
        Scripted([text]), QAOptions(clip_model=str(tiny_clip), objects=False, device="cpu")
    )
    image = Image.new("RGB", (40, 30), (30, 90, 200))
    (out,) = wrapper.caption_batch([wrapper.preprocess(image, REQ)], REQ)
    scorer = ClipScorer.load(str(tiny_clip))
    expected = clip_s_from_embeddings(scorer.embed_pil([image]), scorer.embed_texts([text]))[0]
    assert out.extra["qa"]["clipscore"] == pytest.approx(expected, abs=1e-4)
    assert 0.0 <= out.extra["qa"]["clipscore"] <= 2.5
    assert out.extra["qa"]["clip_model"] == str(tiny_clip)
    wrapper.close()


def test_qa_over_rerank_shares_one_clip(tiny_clip: Path) -> None:
    from captionkit.captioners.rerank import Scorers, wrap_rerank

    texts = ["a dog runs on the grass", "a cat sleeps on the sofa"]
    reranked = wrap_rerank(Scripted(texts), f"clip:{tiny_clip}", device="cpu")
    wrapper = wrap_qa(reranked, QAOptions(clip_model=str(tiny_clip), objects=False, device="cpu"))
    image = Image.new("RGB", (40, 30), (30, 90, 200))
    h = wrapper.preprocess(image, REQ)
    (out,) = wrapper.caption_batch([h], CaptionRequest(num_captions=2))
    assert wrapper._scorer is reranked._scorer
    assert len(Scorers._loaded) >= 1
    # QA's CLIPScore of the chosen caption is the re-ranker's similarity of its best one
    assert out.extra["qa"]["clipscore"] == pytest.approx(out.extra["rerank"]["similarity"][0])
    wrapper.close()


def test_summary_line_of_the_cli(capsys) -> None:
    """The caption command prints ``captioner.stats()`` in its summary: the QA counts read
    as one line, checked and flagged first, then each flag in a fixed order."""
    from captionkit.cli.report import print_summary
    from captionkit.engine.runner import RunSummary
    from captionkit.session import Outcome

    wrapper = qa(Scripted([LOOP], ["I'm sorry, I can't."], ["A dog."]), objects=False)
    for _ in range(3):
        wrapper.caption_batch([held()], REQ)
    assert list(wrapper.stats()) == ["qa_checked", "qa_flagged", "qa_repetition", "qa_refusal"]
    print_summary(Outcome(RunSummary(captioned=3), wrapper.stats()))
    err = capsys.readouterr().err
    assert "qa checked: 3, qa flagged: 2, qa repetition: 1, qa refusal: 1" in err
