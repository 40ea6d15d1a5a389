"""Describe, then rewrite: one backend describes the image, a text LLM rewrites the description
into the requested style (a social post with hashtags, alt text, a training caption).

This is Caption-Studio's two-stage design (a vision model's description turned into a social
caption by an instruction-tuned LLM) with both stages swappable: the first stage is any
:class:`Captioner` (hf, grounded, an API), the rewriter any :class:`TextLLM` (the offline
SmolLM2 GGUF, an HF causal LM, an OpenAI-compatible server or a hosted API).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, ClassVar

from captionkit.captioners.base import Captioner
from captionkit.errors import CaptionkitError
from captionkit.llm.base import ChatMessage, TextLLM, text_decoding
from captionkit.styles import STYLES, finish, get_style
from captionkit.types import Candidate, CaptionOutput, CaptionRequest, Decoding

if TYPE_CHECKING:
    from PIL.Image import Image

#: The first stage is asked for this style: the fullest description it can give.
DESCRIBE_STYLE = "detailed"

SYSTEM = (
    "You rewrite image descriptions into captions. Use only facts stated in the description; "
    "never invent people, objects, places or text. Reply with the caption only."
)

#: Style instructions address "this image"; the rewriter sees a description instead.
_REWRITE_HINTS = {
    "alt-text": "Keep it under 125 characters.",
    "social": "End with three to five hashtags, each starting with #.",
    "training": "Output only comma-separated tags and short phrases.",
    "short": "One sentence.",
}


#: One worked example per style, sent as a prior chat turn: small local rewriters (SmolLM2
#: 135M) follow a shown format far better than a described one; large models are unaffected.
EXAMPLE_DESCRIPTION = (
    "A black cat is sleeping on a windowsill. The image shows a black cat and a green potted "
    "plant. The cat is left of the plant. The setting appears to be indoors, daytime."
)
EXAMPLES = {
    "short": "A black cat sleeps on a windowsill beside a potted plant.",
    "alt-text": "Black cat asleep on a sunny windowsill next to a green potted plant.",
    "social": "Nap spot secured by the window. #catsofinstagram #naptime #blackcat #houseplants",
    "training": "black cat, sleeping, windowsill, green potted plant, indoors, daylight, photo",
    "detailed": "A black cat lies asleep on a windowsill in daylight, with a green potted plant "
    "to its right, indoors.",
}


def rewrite_prompt(description: str, request: CaptionRequest) -> str:
    """The user turn: the style's instruction (or the caller's prompt) and the description."""
    if request.prompt:
        task = request.prompt
    else:
        task = get_style(request.style).instruction.replace("this image", "the image described")
        hint = _REWRITE_HINTS.get(request.style)
        if hint:
            task = f"{task} {hint}"
    lang = ""
    if request.language and request.language.lower() not in ("en", "english"):
        lang = f" Write in the language '{request.language}'."
    return f"{task}{lang}\n\nDescription: {description.strip()}\n\nCaption:"


class RewriteCaptioner(Captioner):
    """``first`` describes each image; ``llm`` rewrites each description into the style.

    The description is kept in ``CaptionOutput.extra["description"]``; a first-stage failure
    passes through unchanged, and a rewrite failure fails only its image.
    """

    name: ClassVar[str] = "rewrite"
    description: ClassVar[str] = "describe with one model, rewrite with a text LLM (--rewrite)"

    def __init__(self, first: Captioner, llm: TextLLM) -> None:
        super().__init__(first.model, first.options)
        self.first = first
        self.llm = llm
        self.default_batch_size = first.default_batch_size  # type: ignore[misc]

    @property
    def model_label(self) -> str:
        return f"{self.first.name}:{self.first.model_label} -> {self.llm.label}"

    @property
    def decode_size(self) -> int | None:
        return self.first.decode_size  # the describing model sees the pixels

    def preprocess(self, image: Image, request: CaptionRequest) -> Any:
        return self.first.preprocess(image, self.describe_request(request))

    @staticmethod
    def describe_request(request: CaptionRequest) -> CaptionRequest:
        """What the first stage is asked: a detailed description, one candidate, no prompt."""
        return dataclasses.replace(request, style=DESCRIBE_STYLE, prompt=None, num_captions=1)

    def generation(self, request: CaptionRequest) -> Decoding:
        """The rewriter's settings: the request's, with room for a social caption's hashtags;
        several candidates are sampled (at temperature 0.7 unless ``--sample`` set one)."""
        dec = request.decoding
        tokens = max(dec.max_new_tokens, 160 if request.style == "social" else 100)
        if request.num_captions > 1 and not dec.do_sample:
            dec = dec.replace(do_sample=True, temperature=0.7)
        return text_decoding(dec, max_new_tokens=tokens)

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        firsts = self.first.caption_batch(inputs, self.describe_request(request))
        todo = [i for i, out in enumerate(firsts) if out.error is None and out.candidates]
        n = max(1, request.num_captions)
        conversations = []
        for i in todo:
            prompt = rewrite_prompt(firsts[i].candidates[0].text, request)
            conversations += [[*self.preamble(request), ChatMessage("user", prompt)]] * n
        answers = self._chat(conversations, self.generation(request))
        outputs = list(firsts)
        for k, i in enumerate(todo):
            outputs[i] = self._output(firsts[i], answers[k * n : (k + 1) * n], request)
        return outputs

    @staticmethod
    def preamble(request: CaptionRequest) -> list[ChatMessage]:
        """The system turn and, for a built-in style without a custom prompt, one example."""
        turns = [ChatMessage("system", SYSTEM)]
        example = EXAMPLES.get(request.style)
        if example and not request.prompt:
            turns.append(ChatMessage("user", rewrite_prompt(EXAMPLE_DESCRIPTION, request)))
            turns.append(ChatMessage("assistant", example))
        return turns

    def _chat(
        self, conversations: list[list[ChatMessage]], config: Decoding
    ) -> list[str | Exception]:
        """All answers in one call when possible; on failure, one by one so a single bad
        conversation costs only its image (errors a user must fix still stop the run)."""
        if not conversations:
            return []
        try:
            return list(self.llm.chat(conversations, config))
        except CaptionkitError:
            raise
        except Exception:
            if len(conversations) == 1:
                raise
        answers: list[str | Exception] = []
        for conv in conversations:
            try:
                answers.append(self.llm.chat([conv], config)[0])
            except CaptionkitError:
                raise
            except Exception as exc:
                answers.append(exc)
        return answers

    def _output(
        self, first: CaptionOutput, answers: list[str | Exception], request: CaptionRequest
    ) -> CaptionOutput:
        description = first.candidates[0].text
        extra = dict(first.extra)
        extra["description"] = description
        extra["rewriter"] = self.llm.label
        texts = []
        for answer in answers:
            if isinstance(answer, Exception):
                continue
            text = finish(answer, request.style) if request.style in STYLES else answer.strip()
            if text and text not in texts:
                texts.append(text)
        if not texts:
            errors = [a for a in answers if isinstance(a, Exception)]
            why = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "empty answer"
            return CaptionOutput(candidates=[], extra=extra, error=f"rewrite failed: {why}")
        return CaptionOutput(candidates=[Candidate(t) for t in texts], extra=extra)

    def fingerprint(self) -> str:
        return json.dumps(
            {
                "first": [self.first.name, self.first.model, self.first.fingerprint()],
                "rewriter": self.llm.label,
                "system": SYSTEM,
                "hints": _REWRITE_HINTS,
                "examples": EXAMPLES,
            },
            sort_keys=True,
        )

    def close(self) -> None:
        try:
            self.llm.close()
        finally:
            self.first.close()
