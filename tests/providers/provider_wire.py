"""Helpers of the provider tests. They run on ``httpx.MockTransport``: every request is
answered in-process from a script, so bodies, headers, retries and error mapping are checked
exactly and fast. Retries, stalls and the real socket path keep their local fake servers
(tests/captioners/api, tests/test_http.py)."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import httpx

from captionkit.http import APIClient, RetryPolicy
from captionkit.providers import get_provider
from captionkit.providers.base import Provider
from captionkit.providers.images import EncodedImage

KEY = "sk-test-SECRET-0123456789"
IMAGE = EncodedImage("image/jpeg", "QUJD", 4, 3)  # base64 of "ABC": shapes only, not decoded


class Wire:
    """Answers requests from ``script`` in order (a (status, body, headers) triple or an
    exception to raise), then ``ok``; records every request."""

    def __init__(self, ok: Any) -> None:
        self.ok = ok
        self.script: deque[Any] = deque()
        self.requests: list[httpx.Request] = []

    def queue(self, *items: Any) -> Wire:
        self.script.extend(items)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.popleft() if self.script else (200, self.ok, {})
        if isinstance(item, Exception):
            raise item
        status, body, headers = item
        content = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return httpx.Response(
            status, content=content, headers={"content-type": "application/json", **headers}
        )

    @property
    def body(self) -> Any:
        """The JSON of the last request."""
        return json.loads(self.requests[-1].content)


def make(kind: str, wire: Wire, *, max_retries: int = 2, **kwargs: Any) -> Provider:
    """A ``kind`` provider for model ``m1`` whose client answers from ``wire``; backoff waits
    are recorded in ``provider.waits`` instead of slept."""
    waits: list[float] = []
    client = APIClient(
        retry=RetryPolicy(max_retries=max_retries),
        transport=httpx.MockTransport(wire.handler),
        sleep=waits.append,
    )
    kwargs.setdefault("api_key", KEY)
    if kind == "openai-compatible":
        kwargs.setdefault("base_url", "http://llm.test:8000/v1")
    provider = get_provider(kind)("m1", client=client, **kwargs)
    provider.waits = waits  # type: ignore[attr-defined]
    return provider
