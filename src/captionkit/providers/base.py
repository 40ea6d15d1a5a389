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

import logging
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

log = logging.getLogger("captionkit.providers")

#: Finish reasons meaning the output cap cut the answer (OpenAI, Anthropic, Gemini).
TRUNCATED = frozenset({"length", "max_tokens", "MAX_TOKENS"})
#: Finish reasons meaning the vendor refused or filtered the answer.
BLOCKED = frozenset(
    {
        "refusal",
        "content_filter",
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "LANGUAGE",
        "OTHER",
    }
)

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
    others go on. Auth, quota and unknown-model errors raise :class:`BackendError` instead.

    ``usage`` is what the vendor billed for the failed answer (a refused, blocked or
    truncated answer is still paid for), so ``--max-cost`` and the summary count it."""

    def __init__(self, message: str, usage: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.usage: dict[str, int] = dict(usage or {})


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
    #: Per candidate, as parsed: its finish reason and a vendor-specific problem (a refusal
    #: message); :meth:`Provider.judge` turns them into ``failures`` and drops those texts.
    finishes: list[str | None] = field(default_factory=list)
    problems: list[str | None] = field(default_factory=list)
    #: Why the candidates that were dropped failed (the good ones stay in ``texts``).
    failures: list[str] = field(default_factory=list)


def resolve_key(
    explicit: Any,
    env_vars: Sequence[str],
    who: str,
    *,
    required: bool = True,
    key_source: str = "--api-key",
) -> str:
    """The API key: an explicit value (str or pydantic SecretStr) first, then ``env_vars`` in
    order. A missing required key raises a one-line error naming every source tried
    (``key_source`` says where an explicit key would have come from: a flag, a config table)
    and what to set."""
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
        raise BackendError(
            f"{who}: no API key; set {names} or pass {key_source} (none of them is set)"
        )
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


def sent_temperature(
    decoding: Decoding, send_sampling: bool, greedy_temperature: bool = False
) -> float | None:
    """The temperature on the wire: the decoding's when it samples; None (send none, the
    vendor's default) when greedy, unless the user set temperature 0 explicitly
    (``greedy_temperature``). Reasoning models and some newer Claude models reject any
    temperature, so a parameter nobody asked for is never sent."""
    if not send_sampling:
        return None
    if decoding.do_sample:
        return decoding.temperature
    return 0.0 if greedy_temperature else None


def sent_top_p(decoding: Decoding, send_sampling: bool) -> float | None:
    """``top_p`` on the wire: only when sampling, and only below 1 (every vendor's default);
    greedy decoding has nothing to cut."""
    sampling = send_sampling and decoding.do_sample
    return decoding.top_p if sampling and decoding.top_p < 1.0 else None


def put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when ``value`` is not None (an absent field means the vendor default)."""
    if value is not None:
        target[key] = value


def int_or_zero(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def error_body(resp: APIResponse) -> dict[str, Any]:
    """The ``error`` object of an error answer (all three vendors nest it so), or {}."""
    body = resp.json()
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


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
    return quota_cause(resp) is not None


def quota_cause(resp: APIResponse) -> str | None:
    """Why no request can succeed for money reasons (OpenAI ``insufficient_quota``, Anthropic
    ``billing_error`` and the monthly ``enforced_spend_limit_reached``), or None."""
    body = resp.json()
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return None
    code = str(err.get("code") or err.get("type") or "")
    details = err.get("details")
    if isinstance(details, dict) and details.get("error_code") == "enforced_spend_limit_reached":
        return "monthly spend limit reached (enforced_spend_limit_reached)"
    if code == "insufficient_quota":
        return "out of quota or credit (insufficient_quota)"
    if code == "billing_error" or err.get("type") == "billing_error":
        return "billing problem (billing_error)"
    return None


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
    #: Parameters that may be left out when a model rejects them (the rest are essential).
    optional_params: ClassVar[frozenset[str]] = frozenset()
    #: The highest temperature the vendor accepts (None: not checked; local servers vary).
    max_temperature: ClassVar[float | None] = None
    #: The seed's range where the vendor documents one (Gemini: int32).
    seed_range: ClassVar[tuple[int, int] | None] = None

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
        key_source: str = "--api-key",
    ) -> None:
        self.model = model
        self.key_source = key_source
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
        #: Parameters never sent to this model: its known constraints, plus those the server
        #: rejected during this run (learned once, shared by every thread).
        self.unsupported: set[str] = set(self.known_unsupported())
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
                    self._api_key,
                    self.env_vars,
                    self.who,
                    required=self.key_required,
                    key_source=self.key_source,
                )
                self._headers = self.auth_headers(key)
            return self._headers

    # -- what is sent ---------------------------------------------------------------------------
    def known_unsupported(self) -> set[str]:
        """Parameters this model is documented to reject (OpenAI reasoning models: no
        temperature/top_p/stop); dropped before sending."""
        return set()

    def check_decoding(self, decoding: Decoding) -> None:
        """One-line ConfigError for settings this vendor rejects, before any request (rather
        than a 400 for every image)."""
        limit = self.max_temperature
        if limit is not None and decoding.do_sample and decoding.temperature > limit:
            raise ConfigError(
                f"{self.who}: --temperature {decoding.temperature:g} is out of range: "
                f"{self.name} accepts 0 to {limit:g}"
            )
        if self.seed_range and decoding.seed is not None:
            low, high = self.seed_range
            if not low <= decoding.seed <= high:
                raise ConfigError(
                    f"{self.who}: --seed {decoding.seed} is out of range: "
                    f"{self.name} accepts {low} to {high}"
                )

    def strip(self, body: dict[str, Any], names: set[str]) -> dict[str, Any]:
        """``body`` without the parameters ``names`` (top-level keys; vendors that nest
        generation settings override)."""
        return {k: v for k, v in body.items() if k not in names}

    def unsupported_param(self, resp: APIResponse, sent: dict[str, Any]) -> str | None:
        """The optional parameter a 400 says this model does not take, if it names one that
        was sent; None for any other 400."""
        return None

    def output_cap(self, body: dict[str, Any]) -> int | None:
        """The output-token cap ``body`` sent (for error messages)."""
        for key in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(key), int):
                return int(body[key])
        return None

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
        greedy_temperature: bool = False,
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

    def judge(self, completion: Completion, sent: dict[str, Any]) -> Completion:
        """Keep the candidates that are captions: one cut by the output cap (``length``,
        ``max_tokens``, ``MAX_TOKENS``) or refused/blocked (``refusal``, ``content_filter``,
        ``SAFETY``, ``RECITATION``...) fails, even with partial text ("A dog runs across"),
        and its reason goes to ``failures``; the good ones are kept. No good candidate raises
        :class:`RequestFailed` carrying the usage, which is billed all the same."""
        good: list[str] = []
        finishes: list[str | None] = []
        failures: list[str] = []
        cap = self.output_cap(sent)
        for i, text in enumerate(completion.texts):
            finish = completion.finishes[i] if i < len(completion.finishes) else None
            problem = completion.problems[i] if i < len(completion.problems) else None
            if problem:
                failures.append(problem)
            elif finish in TRUNCATED:
                at = f" of {cap} tokens" if cap else ""
                what = f"partial text {text.strip()[:40]!r}" if text.strip() else "no text"
                failures.append(
                    f"cut off by the output cap{at} (finish reason {finish}; {what}; "
                    "reasoning tokens count against the cap)"
                )
            elif finish in BLOCKED:
                failures.append(f"blocked by the provider (finish reason {finish})")
            else:
                good.append(text)
                finishes.append(finish)
        completion.texts = good
        completion.failures = failures
        if good:
            completion.finish_reason = finishes[0] or completion.finish_reason
        elif failures:
            raise RequestFailed("; ".join(dict.fromkeys(failures)), usage=completion.usage)
        return completion

    def key_rejected(self, resp: APIResponse) -> bool:
        """Did the vendor refuse the key or its permissions? (Then no request can succeed.)"""
        return resp.status in (401, 403)

    def fatal_cause(self, resp: APIResponse) -> str | None:
        """Why no request can succeed however long we wait (no credit, a spent quota), named
        for the one-line error; None for answers a retry or the next image may escape."""
        return quota_cause(resp)

    def is_final(self, resp: APIResponse) -> bool:
        """Answers that waiting cannot cure (returned at once instead of retried)."""
        return self.fatal_cause(resp) is not None

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
        cause = self.fatal_cause(resp)
        if cause:
            raise BackendError(f"{self.who}: {cause}: HTTP {status}: {message}")
        if self.key_rejected(resp):
            hint = " or ".join(self.env_vars) or "--api-key"
            raise BackendError(f"{self.who}: HTTP {status}: {message} (check {hint})")
        if status == 404:
            raise BackendError(
                f"{self.who}: HTTP 404: {message} (check the model name and --base-url)"
            )
        after = f" after {resp.retries} retries" if resp.retries else ""
        raise RequestFailed(f"HTTP {status}{after}: {message}")

    def transport_error(self, exc: TransportFailure) -> Exception:
        """An unreachable server stops the run (BackendError); a timeout fails one request."""
        if exc.unreachable:
            return BackendError(f"{self.who}: cannot connect: {exc}; is the server running?")
        return RequestFailed(str(exc))

    def send(self, body: dict[str, Any]) -> Completion:
        """POST ``body`` (retrying 429/5xx/timeouts, honouring Retry-After), parse and judge
        the answer; raises BackendError or RequestFailed as :meth:`check` and :meth:`judge`
        decide.

        Parameters in :attr:`unsupported` are left out. A 400 naming an optional parameter
        the model does not take (OpenAI ``unsupported_parameter``/``unsupported_value``,
        Anthropic ``invalid_request_error`` on ``temperature``...) is retried once without
        it, and the parameter is not sent again for the rest of the run."""
        retries = 0
        for _ in range(len(self.optional_params) + 2):
            sent = self.strip(body, self.unsupported) if self.unsupported else body
            try:
                resp = self.client.post_json(
                    self.endpoint(), sent, headers=self.headers(), final=self.is_final
                )
            except TransportFailure as exc:
                raise self.transport_error(exc) from None
            retries += resp.retries
            param = self.unsupported_param(resp, sent) if resp.status == 400 else None
            if param is None:
                break
            self.drop(param, error_message(resp))
        completion = self.parse(self.check(resp))
        completion.retries = retries
        return self.judge(completion, sent)

    def drop(self, param: str, why: str) -> None:
        """Stop sending ``param`` for the rest of the run (logged once)."""
        with self._lock:
            if param in self.unsupported:
                return
            self.unsupported.add(param)
        log.warning("%s rejects '%s' (%s): sending it no more this run", self.who, param, why)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.who!r}, {self.base_url!r})"
