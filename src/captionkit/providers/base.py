"""What every hosted vendor shares: the :class:`Provider` interface, answers, keys and errors.

A vendor module subclasses :class:`Provider` and says, in one place each, where requests go
(:meth:`~Provider.endpoint`), how it authenticates (:meth:`~Provider.auth_headers`), which
decoding parameters it sends (:meth:`~Provider.apply_decoding`), how a text or text+image
request looks (:meth:`~Provider.text_body`, :meth:`~Provider.image_body`) and how an answer is
judged (:meth:`~Provider.parse`, :meth:`~Provider.check`). Sending, retries, rate limits and the
failure policy are here, shared: an error no later request can escape (bad key, unknown
model, exhausted quota, unreachable server) raises :class:`~captionkit.errors.BackendError`
and stops the run; a request's own failure (a rejected image, a refusal, retries used up)
raises :class:`RequestFailed` and fails only that image or conversation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from captionkit.errors import BackendError, ConfigError
from captionkit.http import APIClient, APIResponse, RetryPolicy, TransportFailure
from captionkit.types import Decoding

if TYPE_CHECKING:
    import httpx

    from captionkit.providers.images import EncodedImage

#: JSON Schema of the structured caption answer (OpenAI and Anthropic take it as is).
CAPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "caption": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["caption", "tags"],
    "additionalProperties": False,
}


class RequestFailed(Exception):
    """One request failed for its own reason (bad image, refusal, retries used up); the
    others go on. Auth, quota and unknown-model errors raise :class:`BackendError` instead."""


class Message(Protocol):
    """A chat turn: ``llm.base.ChatMessage`` or anything with ``role`` and ``content``."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass
class Completion:
    """One answer, vendor-neutral: the texts (one per candidate), tokens billed, why it ended."""

    texts: list[str]
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    finish_reason: str | None = None
    #: Retries the HTTP client spent on this answer (429/5xx/timeouts).
    retries: int = 0


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


def as_decoding(config: Any) -> Decoding:
    """A :class:`Decoding` from ``config``: a Decoding as is, or a legacy
    ``llm.base.GenerationConfig`` (temperature 0 = greedy) read field by field, so callers
    work on both sides of its migration onto Decoding."""
    if isinstance(config, Decoding):
        return config
    temperature = float(getattr(config, "temperature", 0.0) or 0.0)
    sample = bool(getattr(config, "do_sample", True)) and temperature > 0
    return Decoding(
        max_new_tokens=int(config.max_new_tokens),
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_p=float(getattr(config, "top_p", 1.0)),
        stop=tuple(getattr(config, "stop", ()) or ()),
        seed=getattr(config, "seed", None),
    )


def sent_temperature(decoding: Decoding, send_sampling: bool) -> float | None:
    """The temperature on the wire: 0 when greedy; None (send none) when sampling is omitted
    for models that accept only their default."""
    if not send_sampling:
        return None
    return decoding.temperature if decoding.do_sample else 0.0


def sent_top_p(decoding: Decoding, send_sampling: bool) -> float | None:
    """``top_p`` on the wire: only below 1 (1 is every vendor's default)."""
    return decoding.top_p if send_sampling and decoding.top_p < 1.0 else None


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when ``value`` is not None (an absent field means the vendor default)."""
    if value is not None:
        target[key] = value


def int_or_zero(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def error_message(resp: APIResponse) -> str:
    """The vendor's own message from an error body (all three nest it as error.message;
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


class Provider:
    """One hosted vendor's HTTP protocol, bound to one model and one server.

    Subclasses set the class attributes and implement the wire methods; the constructor
    resolves the base URL at once (a missing one is a ConfigError) and the key lazily, on the
    first request or :meth:`headers` call (a dry run or a rerun from the store needs none).
    Thread-safe: the captioners send from a thread pool.
    """

    name: ClassVar[str] = ""
    #: Environment variables holding the key, in order of preference.
    env_vars: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str | None] = None
    #: Environment variable naming the server when no base URL is given.
    base_url_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = True
    #: Can one request return n candidates (OpenAI ``n``, Gemini ``candidateCount``)? False:
    #: n candidates are n requests.
    returns_n: ClassVar[bool] = True
    #: Base64 bytes allowed per image, and a pixel cap where the vendor documents one.
    max_b64_bytes: ClassVar[int] = 15 * 1024 * 1024
    max_pixels: ClassVar[int | None] = None

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: Any = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        rpm: float | None = None,
        client: APIClient | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.model = model
        self.who = f"{self.name}:{model}"
        url = self.resolve_base_url(base_url)
        if not url:
            env = f" or set {self.base_url_env}" if self.base_url_env else ""
            raise ConfigError(
                f"{self.who} needs the server's URL: pass --base-url http://HOST:PORT/v1{env}"
            )
        self.base_url: str = url
        self._api_key = api_key
        self._headers: dict[str, str] | None = None
        self._lock = threading.Lock()
        self.client = client or APIClient(
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            rpm=rpm,
            concurrency=concurrency,
            transport=transport,
        )

    # -- where and who -------------------------------------------------------------------------
    def resolve_base_url(self, explicit: str | None) -> str | None:
        env = self.base_url_env
        from_env = os.environ.get(env, "").strip() if env else ""
        return explicit or from_env or self.default_base_url

    def endpoint(self) -> str:
        """The URL a generation request is POSTed to."""
        raise NotImplementedError

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers carrying ``key`` (and any version header the vendor requires)."""
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        """The request headers; a missing required key stops the run with one line
        (BackendError) before anything is sent."""
        with self._lock:
            if self._headers is None:
                key = resolve_key(
                    self._api_key, self.env_vars, self.who, required=self.key_required
                )
                self._headers = self.auth_headers(key)
            return self._headers

    # -- what is sent ---------------------------------------------------------------------------
    def apply_decoding(
        self, body: dict[str, Any], decoding: Decoding, *, n: int = 1, send_sampling: bool = True
    ) -> dict[str, Any]:
        """Put ``decoding`` (and ``n`` candidates) into ``body`` under this vendor's names: the
        one place that decides which generation parameters are sent. ``send_sampling=False``
        sends no temperature/top_p (models that refuse them)."""
        raise NotImplementedError

    def text_body(
        self,
        messages: Sequence[Message],
        decoding: Decoding,
        *,
        n: int = 1,
        send_sampling: bool = True,
    ) -> dict[str, Any]:
        """A chat request (system turns included) for the text LLMs."""
        raise NotImplementedError

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
        """A one-image request: ``system`` prompt, the image and ``instruction``;
        ``json_output`` asks for :data:`CAPTION_SCHEMA`; ``detail`` is an image-fidelity hint
        vendors without one ignore."""
        raise NotImplementedError

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        """Input tokens one image of this size costs (the vendor's documented rule)."""
        return -(-width * height // 750)

    # -- what comes back -----------------------------------------------------------------------
    def parse(self, data: dict[str, Any]) -> Completion:
        """Texts, usage and finish reason of a successful answer; a refusal or block raises
        :class:`RequestFailed`: the one place that judges an answer."""
        raise NotImplementedError

    def key_rejected(self, resp: APIResponse) -> bool:
        """Did the vendor refuse the key or its permissions? (Then no request can succeed.)"""
        return resp.status in (401, 403)

    def is_final(self, resp: APIResponse) -> bool:
        """Answers that waiting cannot cure (returned at once instead of retried)."""
        return fatal_quota(resp)

    def check(self, resp: APIResponse) -> dict[str, Any]:
        """The JSON of a successful answer; BackendError for failures no request can escape
        (auth, unknown model, no quota), RequestFailed for this request's own failure."""
        status = resp.status
        if 200 <= status < 300:
            data = resp.json()
            if not isinstance(data, dict):
                raise RequestFailed(f"malformed JSON in the response (HTTP {status})")
            return data
        message = error_message(resp)
        if self.key_rejected(resp):
            hint = " or ".join(self.env_vars) or "--api-key"
            raise BackendError(f"{self.who}: HTTP {status}: {message} (check {hint})")
        if status == 404:
            raise BackendError(
                f"{self.who}: HTTP 404: {message} (check the model name and --base-url)"
            )
        if status == 429 and self.is_final(resp):
            raise BackendError(f"{self.who}: HTTP 429: {message}")
        after = f" after {resp.retries} retries" if resp.retries else ""
        raise RequestFailed(f"HTTP {status}{after}: {message}")

    def transport_error(self, exc: TransportFailure) -> Exception:
        """An unreachable server stops the run (BackendError); a timeout fails one request."""
        if exc.unreachable:
            return BackendError(f"{self.who}: cannot connect: {exc}; is the server running?")
        return RequestFailed(str(exc))

    def send(self, body: dict[str, Any]) -> Completion:
        """POST ``body`` (retrying 429/5xx/timeouts, honouring Retry-After) and parse the
        answer; raises BackendError or RequestFailed as :meth:`check` decides."""
        try:
            resp = self.client.post_json(
                self.endpoint(), body, headers=self.headers(), final=self.is_final
            )
        except TransportFailure as exc:
            raise self.transport_error(exc) from None
        completion = self.parse(self.check(resp))
        completion.retries = resp.retries
        return completion

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.who!r}, {self.base_url!r})"
