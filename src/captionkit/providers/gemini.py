"""Gemini ``generateContent``: ``POST {base}/v1beta/models/{model}:generateContent``.

The key travels in the ``x-goog-api-key`` header, never the ``?key=`` query (URLs get
logged). Bodies: ``systemInstruction``, ``contents`` (roles ``user``/``model``; an image is an
``inline_data`` part, mime type + base64, before the ``text`` part), sampling in
``generationConfig``. Gemini scales images to fit 3072x3072 and inline requests are limited
to about 20 MB. A prompt blocked by safety has no candidates but a
``promptFeedback.blockReason``; thought parts are not answer text but are billed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from captionkit.http import APIResponse
from captionkit.providers.base import (
    Completion,
    Message,
    Provider,
    RequestFailed,
    int_or_zero,
    put,
    sent_temperature,
    sent_top_p,
)
from captionkit.providers.images import EncodedImage
from captionkit.types import Decoding

#: Gemini's responseSchema is an OpenAPI-subset Schema object (upper-case type names).
GEMINI_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "caption": {"type": "STRING"},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
    },
    "required": ["caption", "tags"],
}


class GeminiProvider(Provider):
    """Google AI Studio's Gemini API; key from ``api_key``, GEMINI_API_KEY or GOOGLE_API_KEY."""

    name: ClassVar[str] = "gemini"
    env_vars: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_base_url: ClassVar[str | None] = "https://generativelanguage.googleapis.com"
    max_b64_bytes: ClassVar[int] = 14 * 1024 * 1024  # the whole inline request stays < 20 MB

    def endpoint(self) -> str:
        name = self.model.removeprefix("models/")  # both spellings appear in Google's docs
        return f"{self.base_url.rstrip('/')}/v1beta/models/{name}:generateContent"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def key_rejected(self, resp: APIResponse) -> bool:
        """Gemini answers a bad key with 400 INVALID_ARGUMENT whose ErrorInfo reason is
        API_KEY_INVALID (not 401): a run-wide failure, not one image's."""
        if super().key_rejected(resp):
            return True
        body = resp.json()
        error = body.get("error") if isinstance(body, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        return resp.status == 400 and any(
            isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details or []
        )

    def apply_decoding(
        self, body: dict[str, Any], decoding: Decoding, *, n: int = 1, send_sampling: bool = True
    ) -> dict[str, Any]:
        gen = body.setdefault("generationConfig", {})
        gen["maxOutputTokens"] = decoding.max_new_tokens
        put(gen, "temperature", sent_temperature(decoding, send_sampling))
        put(gen, "topP", sent_top_p(decoding, send_sampling))
        put(gen, "seed", decoding.seed)
        if decoding.stop:
            gen["stopSequences"] = list(decoding.stop)
        if n > 1:
            gen["candidateCount"] = n
        return body

    def text_body(
        self,
        messages: Sequence[Message],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
    ) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in messages
            if m.role != "system"
        ]
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        return self.apply_decoding(body, decoding, n=n, send_sampling=send_sampling)

    def image_body(
        self,
        image: EncodedImage,
        system: str,
        instruction: str,
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
        json_output: bool = False,
        detail: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "systemInstruction": {"parts": [{"text": system}]},
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"inline_data": {"mime_type": image.mime, "data": image.data}},
                        {"text": instruction},
                    ],
                }
            ],
        }
        self.apply_decoding(body, decoding, n=n, send_sampling=send_sampling)
        if json_output:
            body["generationConfig"]["responseMimeType"] = "application/json"
            body["generationConfig"]["responseSchema"] = GEMINI_SCHEMA
        return body

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        if width <= 384 and height <= 384:
            return 258
        return 258 * math.ceil(width / 768) * math.ceil(height / 768)

    def parse(self, data: dict[str, Any]) -> Completion:
        candidates = data.get("candidates") or []
        if not candidates:
            reason = (data.get("promptFeedback") or {}).get("blockReason")
            raise RequestFailed(f"blocked by the provider: {reason}" if reason else "no candidates")
        texts, finish = [], None
        for cand in candidates:
            parts = (cand.get("content") or {}).get("parts") or []
            text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
            finish = finish or cand.get("finishReason")
            if not text and cand.get("finishReason") not in (None, "STOP", "MAX_TOKENS"):
                raise RequestFailed(f"no text: finishReason {cand.get('finishReason')}")
            texts.append(text)
        meta = data.get("usageMetadata") or {}
        output = int_or_zero(meta.get("candidatesTokenCount"))
        output += int_or_zero(meta.get("thoughtsTokenCount"))
        return Completion(
            texts,
            {"input_tokens": int_or_zero(meta.get("promptTokenCount")), "output_tokens": output},
            finish,
        )
