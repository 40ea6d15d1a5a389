"""Describe -> rewrite: a first-stage captioner and a text LLM, both fakes built here."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from captionkit.captioners.base import Captioner
from captionkit.captioners.rewrite import DESCRIBE_STYLE, RewriteCaptioner, rewrite_prompt
from captionkit.errors import BackendError
from captionkit.llm.base import ChatMessage, TextLLM
from captionkit.types import Candidate, CaptionOutput, CaptionRequest, Decoding

DESCRIPTION = "A brown dog runs across a green lawn in front of a red house."


class Describer(Captioner):
    name = "fake-describer"

    def __init__(self, fail_index: int | None = None) -> None:
        super().__init__("describer-v1")
        self.requests: list[CaptionRequest] = []
        self.fail_index = fail_index
        self.closed = False

    def preprocess(self, image: Any, request: CaptionRequest) -> Any:
        self.requests.append(request)
        return image.size

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        self.requests.append(request)
        outs = []
        for i, _ in enumerate(inputs):
            if i == self.fail_index:
                outs.append(CaptionOutput.failed("first stage broke"))
            else:
                outs.append(CaptionOutput([Candidate(DESCRIPTION)], extra={"usage": {"x": 1}}))
        return outs

    def close(self) -> None:
        self.closed = True


class FakeLLM(TextLLM):
    label = "fake:rewriter"

    def __init__(self, answer: str = "Dog zooms past the red house! #dogs #zoomies #home") -> None:
        self.answer = answer
        self.calls: list[tuple[list[list[ChatMessage]], Decoding]] = []
        self.fail_on: str | None = None
        self.fatal = False
        self.closed = False

    def chat(self, conversations: list[list[ChatMessage]], config: Decoding) -> list[str]:
        self.calls.append((conversations, config))
        if self.fatal:
            raise BackendError("rewriter: HTTP 401: bad key")
        if self.fail_on and any(self.fail_on in c[-1].content for c in conversations):
            raise RuntimeError("server error")
        return [self.answer for _ in conversations]

    def close(self) -> None:
        self.closed = True


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (32 + i, 32)) for i in range(n)]


def run(cap: RewriteCaptioner, request: CaptionRequest, n: int = 2) -> list[CaptionOutput]:
    return cap.caption_batch([cap.preprocess(im, request) for im in images(n)], request)


def test_describe_then_rewrite_social():
    first, llm = Describer(), FakeLLM()
    cap = RewriteCaptioner(first, llm)
    outs = run(cap, CaptionRequest(style="social"))
    assert [o.candidates[0].text for o in outs] == [llm.answer] * 2
    assert outs[0].extra["description"] == DESCRIPTION
    assert outs[0].extra["rewriter"] == "fake:rewriter"
    assert outs[0].extra["usage"] == {"x": 1}  # the first stage's extras are kept
    assert all(r.style == DESCRIBE_STYLE and r.prompt is None for r in first.requests)
    conversations, config = llm.calls[0]
    assert len(llm.calls) == 1 and len(conversations) == 2  # one batched call
    user = conversations[0][-1].content
    assert DESCRIPTION in user and "hashtags" in user and "this image" not in user
    assert conversations[0][0].role == "system" and config.temperature == 0.0
    assert [m.role for m in conversations[0]] == ["system", "user", "assistant", "user"]
    assert "#" in conversations[0][2].content  # the worked example shows the format
    assert cap.model_label == "fake-describer:describer-v1 -> fake:rewriter"


def test_alt_text_is_finished_to_125_chars():
    llm = FakeLLM("Here is the alt text: image of " + "a dog running " * 20)
    outs = run(RewriteCaptioner(Describer(), llm), CaptionRequest(style="alt-text"), 1)
    text = outs[0].candidates[0].text
    assert len(text) <= 125 and not text.lower().startswith(("here", "image of"))
    assert "under 125 characters" in llm.calls[0][0][0][-1].content


def test_prompt_override_and_language():
    llm = FakeLLM("Un chien.")
    request = CaptionRequest(style="short", prompt="Write a haiku about it.", language="fr")
    run(RewriteCaptioner(Describer(), llm), request, 1)
    user = llm.calls[0][0][0][-1].content
    assert user.startswith("Write a haiku about it.") and "'fr'" in user


def test_first_stage_failure_passes_through():
    llm = FakeLLM()
    outs = run(RewriteCaptioner(Describer(fail_index=0), llm), CaptionRequest(style="social"))
    assert outs[0].error == "first stage broke" and outs[1].error is None
    assert len(llm.calls[0][0]) == 1  # only the good description was rewritten


def test_rewrite_failure_isolated_per_image():
    class Picky(FakeLLM):
        def chat(self, conversations, config):
            self.calls.append((conversations, config))
            if "broken" in "".join(c[-1].content for c in conversations):
                raise RuntimeError("server error")
            return [self.answer for _ in conversations]

    class TwoDescriptions(Describer):
        def caption_batch(self, inputs, request):
            return [CaptionOutput([Candidate("broken thing")]), CaptionOutput([Candidate("ok")])]

    outs = run(RewriteCaptioner(TwoDescriptions(), Picky()), CaptionRequest(style="short"))
    assert outs[0].error.startswith("rewrite failed: RuntimeError")
    assert outs[0].extra["description"] == "broken thing"
    assert outs[1].error is None


def test_auth_error_stops_the_run():
    llm = FakeLLM()
    llm.fatal = True
    with pytest.raises(BackendError):
        run(RewriteCaptioner(Describer(), llm), CaptionRequest(style="social"))


def test_num_captions_samples_distinct_rewrites():
    answers = iter(["One.", "Two.", "One."])

    class Varied(FakeLLM):
        def chat(self, conversations, config):
            self.calls.append((conversations, config))
            return [next(answers) for _ in conversations]

    llm = Varied()
    outs = run(RewriteCaptioner(Describer(), llm), CaptionRequest(num_captions=3), 1)
    assert [c.text for c in outs[0].candidates] == ["One.", "Two."]  # duplicates dropped
    assert llm.calls[0][1].temperature > 0


def test_fingerprint_and_close():
    first, llm = Describer(), FakeLLM()
    cap = RewriteCaptioner(first, llm)
    other = RewriteCaptioner(Describer(), FakeLLM())
    other.llm.label = "fake:other"
    assert cap.fingerprint() != other.fingerprint()
    cap.close()
    assert first.closed and llm.closed


def test_rewrite_prompt_mentions_description_not_image():
    text = rewrite_prompt(" A cat. ", CaptionRequest(style="training"))
    assert text.endswith("Description: A cat.\n\nCaption:")
    assert "comma-separated" in text
