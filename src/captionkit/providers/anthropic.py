"""Anthropic Messages: ``POST {base}/v1/messages`` with ``x-api-key`` and
``anthropic-version: 2023-06-01``.

Bodies: ``model``, ``max_tokens`` (required), a top-level ``system``, the turns as
``messages``; an image request is one ``user`` message whose content is an ``image`` block
(base64 source) followed by a ``text`` block, as the vision guide recommends. Claude
downsizes images over about 1.15 megapixels and refuses images over 5 MB. There is no ``n``:
N candidates are N requests. ``stop_reason: refusal`` or ``max_tokens`` fails the request
even with partial text; input usage counts cache writes and reads too. Temperature is 0 to 1;
``billing_error`` (HTTP 402) and "credit balance is too low" stop the run.
"""

from __future__ import annotations

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
    error_message,
    int_or_zero,
    put,
    quota_cause,
    sent_temperature,
    sent_top_p,
)
from captionkit.providers.images import EncodedImage
from captionkit.types import Decoding

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(Provider):
    """Claude models; key from ``api_key`` or ANTHROPIC_API_KEY."""

    name: ClassVar[str] = "anthropic"
    env_vars: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)
    default_base_url: ClassVar[str | None] = "https://api.anthropic.com"
    returns_n: ClassVar[bool] = False
    max_b64_bytes: ClassVar[int] = 5 * 1024 * 1024
    max_pixels: ClassVar[int | None] = 1_150_000
    optional_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "stop_sequences"}
    )
    max_temperature: ClassVar[float | None] = 1.0

    def unsupported_param(self, resp: APIResponse, sent: dict[str, Any]) -> str | None:
        """Anthropic's 400 ``invalid_request_error`` names the parameter only in its message
        ("`temperature` and `top_p` cannot both be specified for this model"); a range error
        ("temperature: range: 0..1") is the user's to fix, not a parameter to drop."""
        if error_body(resp).get("type") != "invalid_request_error":
            return None
        message = error_message(resp).lower()
        if "range" in message:
            return None
        for param in ("top_p", "top_k", "temperature", "stop_sequences"):
            if param in sent and param in message:
                return param
        return None

    def fatal_cause(self, resp: APIResponse) -> str | None:
        """402 ``billing_error``, and the 400 "Your credit balance is too low to access the
        Anthropic API": no request can pass until someone pays."""
        cause = quota_cause(resp)
        if cause:
            return cause
        if resp.status == 402:
            return "billing problem (HTTP 402)"
        if resp.status == 400 and "credit balance" in error_message(resp).lower():
            return "credit balance too low"
        return None

    def endpoint(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/messages"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}

    def apply_decoding(
        self,
        body: dict[str, Any],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
        greedy_temperature: bool = False,
    ) -> dict[str, Any]:
        # ``n`` is not a Messages parameter: callers send n requests (returns_n is False).
        body["max_tokens"] = decoding.max_new_tokens
        temperature = sent_temperature(decoding, send_sampling, greedy_temperature)
        top_p = sent_top_p(decoding, send_sampling)
        # Recent Claude models reject temperature and top_p together: send one.
        if top_p is not None and not temperature:
            body["top_p"] = top_p
        else:
            put(body, "temperature", temperature)
        if decoding.stop:
            body["stop_sequences"] = list(decoding.stop)
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
        turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        body: dict[str, Any] = {"model": self.model, "messages": turns}
        if system:
            body["system"] = system
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
        source = {"type": "base64", "media_type": image.mime, "data": image.data}
        body: dict[str, Any] = {
            "model": self.model,
            "system": system,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": source},
                        {"type": "text", "text": instruction},
                    ],
                }
            ],
        }
        if json_output:  # structured outputs (GA): the answer is JSON matching the schema
            body["output_config"] = {"format": {"type": "json_schema", "schema": CAPTION_SCHEMA}}
        return self.apply_decoding(
            body, decoding, n=n, send_sampling=send_sampling, greedy_temperature=greedy_temperature
        )

    def parse(self, data: dict[str, Any]) -> Completion:
        usage = data.get("usage") or {}
        inputs = sum(
            int_or_zero(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        billed = {"input_tokens": inputs, "output_tokens": int_or_zero(usage.get("output_tokens"))}
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise RequestFailed("response has no content", usage=billed)
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        stop = data.get("stop_reason")
        problem = "the model refused (stop_reason refusal)" if stop == "refusal" else None
        return Completion([text], billed, stop, finishes=[stop], problems=[problem])
