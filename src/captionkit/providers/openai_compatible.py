"""Any server speaking OpenAI Chat Completions: vLLM, Ollama, llama.cpp server, LM Studio.

The OpenAI wire format with three differences: the server is named by ``--base-url`` (or
``OPENAI_BASE_URL``, the variable OpenAI's own SDKs read) and has no default; the key is
optional (local servers take none) and comes from OPENAI_COMPATIBLE_API_KEY, never
OPENAI_API_KEY, which must not leak to some other server; and the output cap is sent as
``max_tokens``, the name these servers know.
"""

from __future__ import annotations

from typing import ClassVar

from captionkit.providers.openai import OpenAIProvider


class OpenAICompatibleProvider(OpenAIProvider):
    name: ClassVar[str] = "openai-compatible"
    env_vars: ClassVar[tuple[str, ...]] = ("OPENAI_COMPATIBLE_API_KEY",)
    default_base_url: ClassVar[str | None] = None
    base_url_env: ClassVar[str | None] = "OPENAI_BASE_URL"
    key_required: ClassVar[bool] = False
    max_tokens_field: ClassVar[str] = "max_tokens"
