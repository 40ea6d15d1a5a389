"""Gemini ``generateContent``: ``POST {base}/v1beta/models/{model}:generateContent``.

The key travels in the ``x-goog-api-key`` header, never the ``?key=`` query (URLs get
logged). Bodies: ``systemInstruction``, ``contents`` (roles ``user``/``model``; an image is an
``inline_data`` part, mime type + base64, before the ``text`` part), sampling in
``generationConfig``. Gemini scales images to fit 3072x3072 and inline requests are limited
to about 20 MB. A prompt blocked by safety has no candidates but a
``promptFeedback.blockReason``; thought parts are not answer text but are billed, and they
count against ``maxOutputTokens``: Gemini 2.5 Flash gets ``thinkingBudget: 0``, 2.5 Pro (which
cannot stop thinking) its minimum 128, Gemini 3 ``thinkingLevel: low``. A bad key is a 400
``API_KEY_INVALID``; a spent per-day quota is a 429 whose ``QuotaFailure`` names a
``...PerDay...`` quota: both stop the run. ``seed`` is an int32.
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
    error_body,
    error_message,
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
    optional_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "topP", "seed", "stopSequences", "thinkingConfig"}
    )
    max_temperature: ClassVar[float | None] = 2.0
    seed_range: ClassVar[tuple[int, int] | None] = (-(2**31), 2**31 - 1)

    def thinking_config(self) -> dict[str, Any] | None:
        """The smallest thinking this model allows, so thought tokens do not eat the cap."""
        name = self.model.lower().removeprefix("models/")
        if "image" in name or "tts" in name:  # no thinking at all
            return None
        if name.startswith("gemini-2.5-pro"):
            return {"thinkingBudget": 128}  # its minimum: 2.5 Pro cannot turn thinking off
        if name.startswith("gemini-2.5-flash"):
            return {"thinkingBudget": 0}
        if name.startswith("gemini-3"):
            return {"thinkingLevel": "low"}
        return None

    def strip(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
        gen = body.get("generationConfig")
        if not isinstance(gen, dict):
            return body
        return {**body, "generationConfig": {k: v for k, v in gen.items() if k not in names}}

    def unsupported_param(self, resp: APIResponse, sent: dict[str, Any]) -> str | None:
        """A 400 INVALID_ARGUMENT whose message names a generation setting that was sent
        ("Budget 0 is invalid. This model only works in thinking mode.")."""
        if error_body(resp).get("status") != "INVALID_ARGUMENT":
            return None
        message = error_message(resp).lower()
        gen = sent.get("generationConfig") or {}
        if "thinkingConfig" in gen and ("thinking" in message or "budget" in message):
            return "thinkingConfig"
        snake = {"topP": "top_p", "stopSequences": "stop_sequences"}
        for param in ("temperature", "topP", "seed", "stopSequences"):
            if param in gen and (param.lower() in message or snake.get(param, "@") in message):
                return param
        return None

    def output_cap(self, body: dict[str, Any]) -> int | None:
        cap = (body.get("generationConfig") or {}).get("maxOutputTokens")
        return cap if isinstance(cap, int) else None

    def fatal_cause(self, resp: APIResponse) -> str | None:
        """A 429 RESOURCE_EXHAUSTED whose ``QuotaFailure`` violations include a per-day quota
        (``GenerateRequestsPerDayPerProjectPerModel-FreeTier``): its ``RetryInfo`` asks for
        seconds, but no request passes before tomorrow."""
        if resp.status != 429:
            return None
        for detail in error_body(resp).get("details") or []:
            if not isinstance(detail, dict) or "QuotaFailure" not in str(detail.get("@type")):
                continue
            for violation in detail.get("violations") or []:
                quota = str(violation.get("quotaId") or "") if isinstance(violation, dict) else ""
                if "PerDay" in quota:
                    return f"daily quota exhausted ({quota})"
        return None

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
        self,
        body: dict[str, Any],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
        greedy_temperature: bool = False,
    ) -> dict[str, Any]:
        gen = body.setdefault("generationConfig", {})
        gen["maxOutputTokens"] = decoding.max_new_tokens
        put(gen, "temperature", sent_temperature(decoding, send_sampling, greedy_temperature))
        put(gen, "topP", sent_top_p(decoding, send_sampling))
        put(gen, "seed", decoding.seed)
        if decoding.stop:
            gen["stopSequences"] = list(decoding.stop)
        if n > 1:
            gen["candidateCount"] = n
        put(gen, "thinkingConfig", self.thinking_config())
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
        greedy_temperature: bool = False,
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
        self.apply_decoding(
            body, decoding, n=n, send_sampling=send_sampling, greedy_temperature=greedy_temperature
        )
        if json_output:
            body["generationConfig"]["responseMimeType"] = "application/json"
            body["generationConfig"]["responseSchema"] = GEMINI_SCHEMA
        return body

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        if width <= 384 and height <= 384:
            return 258
        return 258 * math.ceil(width / 768) * math.ceil(height / 768)

    def parse(self, data: dict[str, Any]) -> Completion:
        meta = data.get("usageMetadata") or {}  # read first: blocked answers are billed too
        output = int_or_zero(meta.get("candidatesTokenCount"))
        output += int_or_zero(meta.get("thoughtsTokenCount"))
        billed = {
            "input_tokens": int_or_zero(meta.get("promptTokenCount")),
            "output_tokens": output,
        }
        candidates = data.get("candidates") or []
        if not candidates:
            reason = (data.get("promptFeedback") or {}).get("blockReason")
            what = f"blocked by the provider: {reason}" if reason else "no candidates"
            raise RequestFailed(what, usage=billed)
        texts, finishes, problems = [], [], []
        for cand in candidates:
            parts = (cand.get("content") or {}).get("parts") or []
            text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
            finish = cand.get("finishReason")
            texts.append(text)
            finishes.append(finish)
            odd = finish not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED")
            problems.append(f"no text: finishReason {finish}" if odd and not text else None)
        first = next((f for f in finishes if f), None)
        return Completion(texts, billed, first, finishes=finishes, problems=problems)
