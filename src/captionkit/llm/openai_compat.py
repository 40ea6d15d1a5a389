"""Text LLMs over HTTP: any OpenAI-protocol server (vLLM, Ollama, llama.cpp, LM Studio), OpenAI,
Gemini and Anthropic, plus the providers' wire formats that the API captioners share.

The wire formats (endpoint, auth headers, sampling fields, response and error parsing) live
here, at the lowest floor that needs them, so the image captioners in ``captioners/api``
(floor 3) and these text models (floor 1) parse every provider the same way. Request and
response shapes follow each provider's REST reference: OpenAI Chat Completions, Gemini
``generateContent``, Anthropic Messages (``anthropic-version: 2023-06-01``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from captionkit.errors import BackendError, ConfigError
from captionkit.http import APIClient, APIResponse, RetryPolicy, TransportFailure
from captionkit.llm.base import ChatMessage, GenerationConfig, TextLLM

ANTHROPIC_VERSION = "2023-06-01"


class RequestFailed(Exception):
    """One request failed for its own reason (bad image, refusal, retries used up); the
    others go on. Auth, quota and unknown-model errors raise :class:`BackendError` instead."""


# -- keys -----------------------------------------------------------------------------------


def resolve_key(explicit: Any, env_vars: Sequence[str], who: str, *, required: bool = True) -> str:
    """The API key: an explicit value (str or pydantic SecretStr) first, then ``env_vars`` in
    order. A missing required key raises a one-line error naming the variable to set."""
    if explicit is not None:
        value = explicit.get_secret_value() if hasattr(explicit, "get_secret_value") else explicit
        if value:
            return str(value)
    for name in env_vars:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    if required:
        names = " or ".join(env_vars) if env_vars else "an API key"
        raise BackendError(f"{who}: no API key; set {names} or pass --api-key")
    return ""


# -- sampling and parsed answers --------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Generation settings in provider-neutral form; ``temperature=None`` sends none (some
    models accept only their default)."""

    max_tokens: int = 80
    temperature: float | None = 0.0
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1

    @classmethod
    def from_config(cls, config: GenerationConfig) -> Sampling:
        top_p = config.top_p if config.top_p < 1.0 else None
        return cls(
            config.max_new_tokens, config.temperature, top_p, tuple(config.stop), config.seed
        )


@dataclass
class Completion:
    texts: list[str]
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    finish_reason: str | None = None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def parse_openai(data: dict[str, Any]) -> Completion:
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
            "input_tokens": _int(usage.get("prompt_tokens")),
            "output_tokens": _int(usage.get("completion_tokens")),
        },
        finish,
    )


def parse_gemini(data: dict[str, Any]) -> Completion:
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
    output = _int(meta.get("candidatesTokenCount")) + _int(meta.get("thoughtsTokenCount"))
    return Completion(
        texts, {"input_tokens": _int(meta.get("promptTokenCount")), "output_tokens": output}, finish
    )


def parse_anthropic(data: dict[str, Any]) -> Completion:
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise RequestFailed("response has no content")
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    if not text and data.get("stop_reason") == "refusal":
        raise RequestFailed("the model refused")
    usage = data.get("usage") or {}
    inputs = sum(
        _int(usage.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Completion(
        [text],
        {"input_tokens": inputs, "output_tokens": _int(usage.get("output_tokens"))},
        data.get("stop_reason"),
    )


# -- provider descriptions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What differs between providers at the HTTP level."""

    name: str
    env_vars: tuple[str, ...]
    default_base_url: str | None
    key_required: bool
    parse: Callable[[dict[str, Any]], Completion]
    #: Environment variable naming the server when no base_url is given.
    base_url_env: str | None = None

    def base_url(self, explicit: str | None) -> str | None:
        from_env = os.environ.get(self.base_url_env, "").strip() if self.base_url_env else ""
        return explicit or from_env or self.default_base_url

    def endpoint(self, base_url: str, model: str) -> str:
        base = base_url.rstrip("/")
        if self.name == "gemini":
            name = model.removeprefix("models/")  # both spellings appear in Google's docs
            return f"{base}/v1beta/models/{name}:generateContent"
        if self.name == "anthropic":
            return f"{base}/v1/messages"
        return f"{base}/chat/completions"

    def headers(self, key: str) -> dict[str, str]:
        if self.name == "gemini":
            return {"x-goog-api-key": key}  # a header, never the ?key= query (URLs get logged)
        if self.name == "anthropic":
            return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        return {"Authorization": f"Bearer {key}"} if key else {}

    def apply_sampling(self, body: dict[str, Any], s: Sampling) -> dict[str, Any]:
        """Put ``s`` into ``body`` under this provider's field names."""
        if self.name == "gemini":
            gen = body.setdefault("generationConfig", {})
            gen["maxOutputTokens"] = s.max_tokens
            _put(gen, "temperature", s.temperature)
            _put(gen, "topP", s.top_p)
            _put(gen, "seed", s.seed)
            if s.stop:
                gen["stopSequences"] = list(s.stop)
            if s.n > 1:
                gen["candidateCount"] = s.n
        elif self.name == "anthropic":
            body["max_tokens"] = s.max_tokens
            # Recent Claude models reject temperature and top_p together: send one.
            if s.top_p is not None and not s.temperature:
                body["top_p"] = s.top_p
            else:
                _put(body, "temperature", s.temperature)
            if s.stop:
                body["stop_sequences"] = list(s.stop)
        else:
            # OpenAI deprecated max_tokens for max_completion_tokens (required by its reasoning
            # models); servers speaking the protocol mostly know only max_tokens.
            field_name = "max_completion_tokens" if self.name == "openai" else "max_tokens"
            body[field_name] = s.max_tokens
            _put(body, "temperature", s.temperature)
            _put(body, "top_p", s.top_p)
            _put(body, "seed", s.seed)
            if s.stop:
                body["stop"] = list(s.stop)
            if s.n > 1:
                body["n"] = s.n
        return body


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(
        "openai", ("OPENAI_API_KEY",), "https://api.openai.com/v1", True, parse_openai
    ),
    # Not OPENAI_API_KEY: a user's OpenAI key must never be sent to some other server.
    "openai-compatible": Provider(
        "openai-compatible",
        ("OPENAI_COMPATIBLE_API_KEY",),
        None,
        False,
        parse_openai,
        base_url_env="OPENAI_BASE_URL",  # the variable OpenAI's own SDKs read
    ),
    "gemini": Provider(
        "gemini",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "https://generativelanguage.googleapis.com",
        True,
        parse_gemini,
    ),
    "anthropic": Provider(
        "anthropic", ("ANTHROPIC_API_KEY",), "https://api.anthropic.com", True, parse_anthropic
    ),
}


def error_message(resp: APIResponse) -> str:
    """The provider's own message from an error body (all three nest it as error.message;
    some OpenAI-compatible servers send a bare string)."""
    body = resp.json()
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"]).strip()
    if isinstance(err, str) and err:
        return err.strip()
    if isinstance(body, dict) and body.get("detail"):  # FastAPI-based servers
        return str(body["detail"])
    text = " ".join(resp.text.split())
    return text[:200] or "(empty body)"


def fatal_quota(resp: APIResponse) -> bool:
    """A 429 that waiting will not cure: no credit left, a monthly spend cap."""
    body = resp.json()
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return False
    code = str(err.get("code") or err.get("type") or "")
    details = err.get("details")
    spend = (
        isinstance(details, dict) and details.get("error_code") == "enforced_spend_limit_reached"
    )
    return code in ("insufficient_quota", "billing_error") or spend


def check(provider: Provider, resp: APIResponse, who: str) -> dict[str, Any]:
    """The parsed JSON of a successful answer; raises BackendError for failures no request can
    escape (auth, unknown model, no quota) and RequestFailed for this request's own failure."""
    status = resp.status
    if 200 <= status < 300:
        data = resp.json()
        if not isinstance(data, dict):
            raise RequestFailed(f"malformed JSON in the response (HTTP {status})")
        return data
    message = error_message(resp)
    if status in (401, 403):
        hint = " or ".join(provider.env_vars) or "--api-key"
        raise BackendError(f"{who}: HTTP {status}: {message} (check {hint})")
    if status == 404:
        raise BackendError(f"{who}: HTTP 404: {message} (check the model name and --base-url)")
    if status == 429 and fatal_quota(resp):
        raise BackendError(f"{who}: HTTP 429: {message}")
    after = f" after {resp.retries} retries" if resp.retries else ""
    raise RequestFailed(f"HTTP {status}{after}: {message}")


def transport_error(exc: TransportFailure, who: str) -> Exception:
    """An unreachable server stops the run (BackendError); a timeout fails one request."""
    if exc.unreachable:
        return BackendError(f"{who}: cannot connect: {exc}; is the server running?")
    return RequestFailed(str(exc))


# -- text LLMs ---------------------------------------------------------------------------


class HTTPTextLLM(TextLLM):
    """A :class:`TextLLM` answering through one provider's HTTP API, conversations in parallel.

    Token usage is summed in :attr:`usage`. Options: ``timeout``, ``max_retries``,
    ``concurrency``, ``rpm`` (requests per minute).
    """

    provider_name = "openai-compatible"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: Any = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        rpm: float | None = None,
        client: APIClient | None = None,
    ) -> None:
        self.provider = PROVIDERS[self.provider_name]
        if not model:
            raise ConfigError(f"{self.provider_name}: name a model, e.g. {self.provider_name}:NAME")
        self.model = model
        self.base_url = self.provider.base_url(base_url)
        if not self.base_url:
            raise ConfigError(
                f"{self.provider_name}:{model} needs the server's URL: "
                "pass --base-url http://HOST:PORT/v1 or set OPENAI_BASE_URL"
            )
        self.who = f"{self.provider_name}:{model}"
        key = resolve_key(
            api_key, self.provider.env_vars, self.who, required=self.provider.key_required
        )
        self._headers = self.provider.headers(key)
        self.label = self.who
        self.concurrency = max(1, concurrency)
        self.client = client or APIClient(
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            rpm=rpm,
            concurrency=self.concurrency,
        )
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self._lock = threading.Lock()

    def body(self, conversation: list[ChatMessage], sampling: Sampling) -> dict[str, Any]:
        messages = [{"role": m.role, "content": m.content} for m in conversation]
        return self.provider.apply_sampling({"model": self.model, "messages": messages}, sampling)

    def _one(self, conversation: list[ChatMessage], sampling: Sampling) -> str:
        url = self.provider.endpoint(self.base_url or "", self.model)
        try:
            resp = self.client.post_json(
                url, self.body(conversation, sampling), headers=self._headers
            )
        except TransportFailure as exc:
            raise transport_error(exc, self.who) from None
        completion = self.provider.parse(check(self.provider, resp, self.who))
        with self._lock:
            for k in self.usage:
                self.usage[k] += completion.usage.get(k, 0)
        return completion.texts[0].strip()

    def chat(self, conversations: list[list[ChatMessage]], config: GenerationConfig) -> list[str]:
        sampling = Sampling.from_config(config)
        if len(conversations) <= 1:
            return [self._one(c, sampling) for c in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._one(c, sampling), conversations))

    def close(self) -> None:
        self.client.close()


class OpenAICompatibleLLM(HTTPTextLLM):
    """Any server speaking OpenAI Chat Completions (vLLM, Ollama, llama.cpp, LM Studio).

    ``base_url`` is required and ends in ``/v1``; the key (optional for local servers) comes
    from ``api_key`` or ``OPENAI_COMPATIBLE_API_KEY``.
    """

    provider_name = "openai-compatible"


class OpenAILLM(HTTPTextLLM):
    """OpenAI itself: key from ``api_key`` or ``OPENAI_API_KEY``."""

    provider_name = "openai"


class GeminiLLM(HTTPTextLLM):
    """Gemini ``generateContent``; key from ``api_key``, GEMINI_API_KEY or GOOGLE_API_KEY."""

    provider_name = "gemini"

    def body(self, conversation: list[ChatMessage], sampling: Sampling) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in conversation if m.role == "system")
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in conversation
            if m.role != "system"
        ]
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        return self.provider.apply_sampling(body, sampling)


class AnthropicLLM(HTTPTextLLM):
    """Anthropic Messages: key from ``api_key`` or ``ANTHROPIC_API_KEY``."""

    provider_name = "anthropic"

    def body(self, conversation: list[ChatMessage], sampling: Sampling) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in conversation if m.role == "system")
        messages = [
            {"role": m.role, "content": m.content} for m in conversation if m.role != "system"
        ]
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if system:
            body["system"] = system
        return self.provider.apply_sampling(body, sampling)
