"""OpenAI Chat Completions: ``POST {base}/chat/completions`` with a Bearer key.

Text requests are the chat turns as ``messages``; an image request is a ``system`` message
and one ``user`` message holding a ``text`` part and an ``image_url`` part whose URL is a
``data:image/jpeg;base64,...`` URL. OpenAI fits an image into 2048x2048 and then its short
side to 768 before tiling (``detail: high``), so sending more only costs upload time. A
``message.refusal`` fails the request; usage is ``prompt_tokens``/``completion_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from captionkit.providers.base import (
    CAPTION_SCHEMA,
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


class OpenAIProvider(Provider):
    """api.openai.com; key from ``api_key`` or OPENAI_API_KEY."""

    name: ClassVar[str] = "openai"
    env_vars: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    max_b64_bytes: ClassVar[int] = 20 * 1024 * 1024  # requests may carry up to 50 MB in all
    #: OpenAI deprecated max_tokens for max_completion_tokens (required by its reasoning
    #: models); servers speaking the protocol mostly know only max_tokens.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"

    def endpoint(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def apply_decoding(
        self, body: dict[str, Any], decoding: Decoding, *, n: int = 1, send_sampling: bool = True
    ) -> dict[str, Any]:
        body[self.max_tokens_field] = decoding.max_new_tokens
        put(body, "temperature", sent_temperature(decoding, send_sampling))
        put(body, "top_p", sent_top_p(decoding, send_sampling))
        put(body, "seed", decoding.seed)
        if decoding.stop:
            body["stop"] = list(decoding.stop)
        if n > 1:
            body["n"] = n
        return body

    def text_body(
        self,
        messages: Sequence[Message],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
    ) -> dict[str, Any]:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        body = {"model": self.model, "messages": turns}
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
        picture: dict[str, Any] = {"url": image.data_url}
        if detail and detail != "auto":  # the default; omitted so minimal servers do not choke
            picture["detail"] = detail
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": instruction},
                        {"type": "image_url", "image_url": picture},
                    ],
                },
            ],
        }
        if json_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "caption", "strict": True, "schema": CAPTION_SCHEMA},
            }
        return self.apply_decoding(body, decoding, n=n, send_sampling=send_sampling)

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        if detail == "low":
            return 85
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        tiles = math.ceil(w * scale / 512) * math.ceil(h * scale / 512)
        return 85 + 170 * tiles

    def parse(self, data: dict[str, Any]) -> Completion:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise RequestFailed("response has no choices")
        texts, finish = [], None
        for choice in choices:
            message = choice.get("message") or {}
            if message.get("refusal"):
                raise RequestFailed(f"the model refused: {message['refusal']}")
            content = message.get("content")
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            texts.append(content or "")
            finish = finish or choice.get("finish_reason")
        usage = data.get("usage") or {}
        return Completion(
            texts,
            {
                "input_tokens": int_or_zero(usage.get("prompt_tokens")),
                "output_tokens": int_or_zero(usage.get("completion_tokens")),
            },
            finish,
        )
