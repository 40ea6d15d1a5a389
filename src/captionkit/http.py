"""The one HTTP client of captionkit: timeouts, size limits, retries and rate limits in one place.

Image downloads (``inputs/fetch.py``) and the hosted-API backends both go through here, so
proxies, timeouts and retry rules are configured once. :class:`APIClient` is what every
provider backend and HTTP text LLM uses: it bounds concurrency, spaces requests to a
requests-per-minute budget, and retries 408/409/429/5xx/timeouts with exponential backoff
plus jitter (tenacity), waiting at least what the server's ``Retry-After`` asks for and
honouring ``x-should-retry``, as the vendors' SDKs do.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from captionkit import __version__
from captionkit.errors import InputError

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"captionkit/{__version__}"
DEFAULT_TIMEOUT = 30.0


def client(
    timeout: float = DEFAULT_TIMEOUT, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Client:
    """A configured ``httpx.Client`` (follows redirects, honours proxy environment variables);
    ``kwargs`` go to ``httpx.Client`` (``limits``, ``transport``...)."""
    import httpx

    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        **kwargs,
    )


def format_size(n: int) -> str:
    """``73.2 MB``, ``4.9 KB``, ``512 bytes`` (binary units, as the ``--max-file-mb`` limit)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n:,} bytes"


def over_limit_message(size: int | None, limit: int, hint: str = "") -> str:
    """``73.2 MB is over the 50 MB file-size limit (hint)``: one wording for files and URLs.

    ``size`` None is a streamed body cut off at the limit. When the two round to the same
    figure the exact byte counts are given, so the message never reads "50 MB is over 50 MB".
    """
    shown = format_size(limit) if limit >= 1 << 10 else f"{limit:,}-byte"
    if size is None:
        what = "the body"
    elif format_size(size) == format_size(limit) and limit >= 1 << 10:
        what, shown = f"{size:,} bytes", f"{shown} ({limit:,}-byte)"
    else:
        what = format_size(size)
    return f"{what} is over the {shown} file-size limit" + (f" ({hint})" if hint else "")


def download(
    url: str,
    *,
    max_bytes: int,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = None,
    accept_prefix: str = "image/",
    limit_hint: str = "",
    http: httpx.Client | None = None,
) -> bytes:
    """Fetch ``url`` into memory, refusing bodies over ``max_bytes`` or of the wrong type.

    Streams the body so a huge file is cut off early instead of filling memory. ``timeout``
    bounds the connection and each read; ``total_timeout`` (default: ``timeout``) bounds the
    whole download, checked as the body streams in, so a server trickling a byte at a time
    cannot hold the caller for minutes. ``limit_hint`` ends the over-size message (how to
    raise the limit). Raises :class:`InputError` with one line naming the URL and the reason.
    """
    import httpx

    total = timeout if total_timeout is None else total_timeout
    deadline = time.monotonic() + total
    own = http is None
    http = http or client(timeout)
    try:
        with http.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise InputError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}")
            ctype = resp.headers.get("content-type", "")
            # Some servers say application/octet-stream for images: let the decoder judge.
            lowered = ctype.lower()
            if (
                accept_prefix
                and ctype
                and not lowered.startswith(accept_prefix)
                and not lowered.startswith("application/octet-stream")
            ):
                raise InputError(f"{url}: content-type is '{ctype}', not an image")
            declared = resp.headers.get("content-length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise InputError(f"{url}: {over_limit_message(expected, max_bytes, limit_hint)}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise InputError(f"{url}: {over_limit_message(None, max_bytes, limit_hint)}")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    of = f" of {expected:,}" if expected is not None else ""
                    raise InputError(
                        f"{url}: timed out after {total:g} s "
                        f"(the whole download; only {size:,}{of} bytes arrived)"
                    )
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise InputError(f"{url}: timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise InputError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        if own:
            http.close()


# -- retries, rate limits and concurrency for API calls ------------------------------------

log = logging.getLogger("captionkit.http")

#: Worth retrying, as the vendors' own SDKs do (openai-python and anthropic-sdk-python
#: ``_base_client._should_retry``): 408 timeout, 409 conflict, 429 rate limit and every 5xx
#: (Cloudflare's 520-524 and Anthropic's 529 "overloaded" included). Everything else is the
#: request's own fault and is not retried, unless the server says ``x-should-retry: true``.
RETRY_STATUSES = frozenset({408, 409, 429, *range(500, 600)})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``max_retries`` after the first attempt, waits doubling from
    ``backoff`` up to ``max_backoff`` plus up to ``jitter`` random seconds (so parallel
    workers do not retry in lockstep). A ``Retry-After`` from the server replaces the computed
    wait; one longer than ``max_retry_after`` (a daily quota, say) ends the retries at once."""

    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    jitter: float = 1.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = RETRY_STATUSES


class RateLimiter:
    """Spaces request starts evenly so no more than ``rpm`` begin per minute.

    Hand-written because it is a dozen lines: each caller reserves the next free slot under
    a lock and sleeps until it. Even spacing (rather than bursts of ``rpm``) also keeps clear
    of providers' per-second limits. ``rpm=None`` or 0 disables it.
    """

    def __init__(
        self,
        rpm: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self._clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self.sleep(delay)
        return max(delay, 0.0)


@dataclass
class APIResponse:
    """One HTTP answer, after retries: what the providers' parsers need, nothing more."""

    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    retries: int = 0

    def json(self) -> Any | None:
        """The parsed body, or None when it is not JSON (a proxy's HTML page, a cut body)."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None


class TransportFailure(Exception):
    """No HTTP answer at all after every retry: timeouts, refused or dropped connections."""

    def __init__(
        self, message: str, retries: int, timed_out: bool, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.retries = retries
        self.timed_out = timed_out
        #: The server could not even be connected to: no later request will fare better.
        self.unreachable = unreachable


class _RetryableStatus(Exception):
    def __init__(self, response: APIResponse, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response
        self.retry_after = retry_after


def retry_after_seconds(headers: dict[str, str], body: Any = None) -> float | None:
    """The wait a server asked for: ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP
    date), or Google's ``RetryInfo.retryDelay`` ("30s") in the error body."""
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000.0, 0.0)
        value = headers.get("retry-after")
        if value:
            try:
                return max(float(value), 0.0)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        pass
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if isinstance(details, list):
        for item in details:
            delay = item.get("retryDelay") if isinstance(item, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(float(delay[:-1]), 0.0)
                except ValueError:
                    continue
    return None


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


class APIClient:
    """POSTs JSON to a provider with bounded concurrency, a rate limit and retries.

    Thread-safe: the hosted backends call :meth:`post_json` from a thread pool. Headers are
    never logged (they carry keys); log lines name the URL without its query string.
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        rpm: float | None = None,
        concurrency: int = 4,
        headers: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (``httpx.MockTransport`` in tests: every
        request answered in-process, exactly, with no socket); None is the real one."""
        import httpx

        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self.sleep = sleep
        self.limiter = RateLimiter(rpm, sleep=lambda s: self.sleep(s))
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._http = client(
            timeout,
            headers=headers or {},
            limits=httpx.Limits(max_connections=self.concurrency * 2),
            transport=transport,
        )
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def _count(self, requests: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries

    def post_json(
        self,
        url: str,
        body: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        final: Callable[[APIResponse], bool] | None = None,
    ) -> APIResponse:
        """The final answer for ``body`` (a 4xx is returned, not raised); a retryable status
        that outlives the retries is returned too, with ``retries`` set. ``final`` marks
        answers that waiting cannot cure (a 429 for an exhausted quota), returned at once.
        Raises :class:`TransportFailure` when no answer came at all."""
        import httpx
        from tenacity import Retrying, retry_if_exception_type, wait_exponential, wait_random
        from tenacity.wait import wait_base

        policy = self.retry
        backoff: wait_base = wait_exponential(multiplier=policy.backoff, max=policy.max_backoff)
        if policy.jitter:
            backoff = backoff + wait_random(0, policy.jitter)
        attempts = 0

        def attempt() -> APIResponse:
            nonlocal attempts
            attempts += 1
            self.limiter.acquire()
            with self._slots:
                self._count(requests=1)
                raw = self._http.post(url, json=body, headers=headers)
            resp = APIResponse(
                raw.status_code, raw.text, {k.lower(): v for k, v in raw.headers.items()}
            )
            if final and final(resp):
                return resp
            # The server's own word first, as the SDKs read it: "true" retries any status,
            # "false" none; without it the status decides.
            should = resp.headers.get("x-should-retry", "").strip().lower()
            retry = should == "true" or (should != "false" and raw.status_code in policy.statuses)
            if retry and raw.status_code >= 400:
                raise _RetryableStatus(resp, retry_after_seconds(resp.headers, resp.json()))
            return resp

        def wait(state: Any) -> float:
            exc = state.outcome.exception()
            asked = getattr(exc, "retry_after", None)
            if asked is not None:  # the server knows best; a little jitter spreads workers
                return asked + random.uniform(0, min(policy.jitter, asked * 0.1 + 0.01))
            return float(backoff(state))

        def stop(state: Any) -> bool:
            exc = state.outcome.exception()
            # A refused connection is a server that is not running: two more tries, not four.
            limit = min(policy.max_retries, 2) if isinstance(exc, httpx.ConnectError) else None
            if state.attempt_number > (policy.max_retries if limit is None else limit):
                return True
            asked = getattr(exc, "retry_after", None)
            return asked is not None and asked > policy.max_retry_after

        def before_sleep(state: Any) -> None:
            self._count(retries=1)
            exc = state.outcome.exception()
            why = str(exc) if isinstance(exc, _RetryableStatus) else type(exc).__name__
            log.warning(
                "POST %s: %s; retry %d/%d in %.1f s",
                _strip_query(url),
                why,
                state.attempt_number,
                policy.max_retries,
                state.next_action.sleep if state.next_action else 0.0,
            )

        def give_up(state: Any) -> APIResponse:
            exc = state.outcome.exception()
            if isinstance(exc, _RetryableStatus):
                exc.response.retries = attempts - 1
                return exc.response
            timed_out = isinstance(exc, httpx.TimeoutException)
            what = f"timed out after {self.timeout:g} s" if timed_out else f"{type(exc).__name__}"
            detail = "" if timed_out else f": {exc}"
            raise TransportFailure(
                f"{_strip_query(url)}: {what}{detail} ({attempts} attempts)",
                attempts - 1,
                timed_out,
                unreachable=isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)),
            ) from None

        retrying = Retrying(
            retry=retry_if_exception_type(
                (_RetryableStatus, httpx.TimeoutException, httpx.TransportError)
            ),
            stop=stop,
            wait=wait,
            sleep=lambda s: self.sleep(s),
            before_sleep=before_sleep,
            retry_error_callback=give_up,
        )
        response = retrying(attempt)
        response.retries = attempts - 1
        return response

    def close(self) -> None:
        self._http.close()
