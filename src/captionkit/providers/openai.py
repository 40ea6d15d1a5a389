"""OpenAI Chat Completions: ``POST {base}/chat/completions`` with a Bearer key.

Text requests are the chat turns as ``messages``; an image request is a ``system`` message
and one ``user`` message holding a ``text`` part and an ``image_url`` part whose URL is a
``data:image/jpeg;base64,...`` URL. OpenAI fits an image into 2048x2048 and then its short
side to 768 before tiling (``detail: high``), so sending more only costs upload time. A
``message.refusal`` fails its candidate; usage is ``prompt_tokens``/``completion_tokens``.

Reasoning models (``o1``, ``o3``, ``o4-mini``, ``gpt-5``...) reject ``temperature``,
``top_p`` and ``stop`` ("Unsupported parameter: 'temperature' is not supported with this
model", code ``unsupported_parameter``) and spend output tokens thinking before they answer:
they get none of those, and ``reasoning_effort`` low (``minimal`` on gpt-5) so a short cap
still leaves room for the caption.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from captionkit.http import APIResponse
from captionkit.providers.base import (
    CAPTION_SCHEMA,
    Completion,
    Message,
    Provider,
    RequestFailed,
    error_body,
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
    optional_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "seed", "stop", "reasoning_effort"}
    )
    max_temperature: ClassVar[float | None] = 2.0

    def reasoning(self) -> bool:
        """Is the model one of OpenAI's reasoning models (o1/o3/o4 families, gpt-5 except
        the non-reasoning gpt-5-chat)? Matched on the last path part, so proxies' names
        (``openai/o3``) count too."""
        name = self.model.lower().rsplit("/", 1)[-1]
        return bool(re.match(r"(o\d|gpt-5)", name)) and "chat" not in name

    def reasoning_effort(self) -> str | None:
        """The effort sent to a reasoning model: ``minimal`` for the gpt-5 family that has
        it, else ``low`` (o-series, gpt-5.1+); a model refusing the value gets none."""
        if not self.reasoning():
            return None
        name = self.model.lower().rsplit("/", 1)[-1]
        return "minimal" if re.match(r"gpt-5(-mini|-nano)?(-\d{4}-\d\d-\d\d)?$", name) else "low"

    def known_unsupported(self) -> set[str]:
        return {"temperature", "top_p", "stop"} if self.reasoning() else set()

    def unsupported_param(self, resp: APIResponse, sent: dict[str, Any]) -> str | None:
        """OpenAI's 400 names the parameter: ``{"error": {"code": "unsupported_parameter"
        (or "unsupported_value"), "param": "temperature", ...}}``. ``max_tokens`` ("Use
        'max_completion_tokens' instead", a reasoning model behind an OpenAI-compatible
        proxy) is renamed rather than dropped."""
        err = error_body(resp)
        param = str(err.get("param") or "")
        if err.get("code") not in ("unsupported_parameter", "unsupported_value"):
            return None
        renamable = param == "max_tokens"
        return param if (param in self.optional_params or renamable) and param in sent else None

    def strip(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
        out = super().strip(body, names)
        if "max_tokens" in names and "max_tokens" in body:
            out["max_completion_tokens"] = body["max_tokens"]
        return out

    def endpoint(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def apply_decoding(
        self,
        body: dict[str, Any],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
        greedy_temperature: bool = False,
    ) -> dict[str, Any]:
        body[self.max_tokens_field] = decoding.max_new_tokens
        put(body, "temperature", sent_temperature(decoding, send_sampling, greedy_temperature))
        put(body, "top_p", sent_top_p(decoding, send_sampling))
        put(body, "seed", decoding.seed)
        put(body, "reasoning_effort", self.reasoning_effort())
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
        greedy_temperature: bool = False,
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
        return self.apply_decoding(
            body, decoding, n=n, send_sampling=send_sampling, greedy_temperature=greedy_temperature
        )

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        if detail == "low":
            return 85
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        tiles = math.ceil(w * scale / 512) * math.ceil(h * scale / 512)
        return 85 + 170 * tiles

    def parse(self, data: dict[str, Any]) -> Completion:
        usage = data.get("usage") or {}
        billed = {  # read first: a refused or truncated answer is billed all the same
            "input_tokens": int_or_zero(usage.get("prompt_tokens")),
            "output_tokens": int_or_zero(usage.get("completion_tokens")),
        }
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            raise RequestFailed("response has no choices", usage=billed)
        texts, finishes, problems = [], [], []
        for choice in choices:
            message = choice.get("message") or {}
            content = message.get("content")
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            texts.append(content or "")
            finishes.append(choice.get("finish_reason"))
            refusal = message.get("refusal")
            problems.append(f"the model refused: {refusal}" if refusal else None)
        first = next((f for f in finishes if f), None)
        return Completion(texts, billed, first, finishes=finishes, problems=problems)
