"""The shared HTTP client: downloads, retries with backoff and Retry-After, rate and concurrency
limits, against a tiny scripted server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from captionkit.errors import InputError
from captionkit.http import (
    APIClient,
    RateLimiter,
    RetryPolicy,
    TransportFailure,
    download,
    format_size,
    over_limit_message,
    retry_after_seconds,
)


class Server:
    """Replies from ``script`` (status, headers, body, delay) in order, then 200 {"ok": true}."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, dict[str, str], bytes, float]] = deque()
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self) -> None:
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("content-length", 0)))
                server.hits += 1
                status, headers, body, delay = (
                    server.script.popleft() if server.script else (200, {}, b'{"ok": true}', 0)
                )
                time.sleep(delay)
                try:
                    self.send_response(status)
                    headers = {"content-type": "application/json", **headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _reply

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make_client(**kw: Any) -> tuple[APIClient, list[float]]:
    waits: list[float] = []
    kw.setdefault("retry", RetryPolicy(max_retries=3, backoff=1.0, max_backoff=8.0, jitter=0.5))
    client = APIClient(timeout=kw.pop("timeout", 5.0), **kw)
    client.sleep = waits.append
    return client, waits


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "JPEG")
    return buf.getvalue()


def test_download_keeps_its_behaviour(server):
    body = jpeg()
    server.script.append((200, {"content-type": "image/jpeg"}, body, 0))
    assert download(f"{server.url}/a.jpg", max_bytes=10_000) == body
    server.script.append((200, {"content-type": "text/html"}, b"<html>", 0))
    with pytest.raises(InputError, match="not an image"):
        download(f"{server.url}/b", max_bytes=10_000)
    server.script.append((200, {"content-type": "image/jpeg"}, body, 0))
    with pytest.raises(InputError, match=r"over the 10-byte file-size limit$"):
        download(f"{server.url}/c", max_bytes=10)
    server.script.append((404, {}, b"", 0))
    with pytest.raises(InputError, match="HTTP 404"):
        download(f"{server.url}/d", max_bytes=10)


def test_size_messages_say_sizes_a_person_reads():
    assert format_size(int(73.2 * 2**20)) == "73.2 MB"
    assert format_size(50 * 2**20) == "50 MB"
    assert format_size(3 * 2**30 // 2) == "1.5 GB"
    assert format_size(5003) == "4.9 KB"
    assert format_size(512) == "512 bytes"
    hint = "raise it with --max-file-mb"
    assert over_limit_message(int(73.2 * 2**20), 50 * 2**20, hint) == (
        "73.2 MB is over the 50 MB file-size limit (raise it with --max-file-mb)"
    )
    assert over_limit_message(None, 50 * 2**20) == "the body is over the 50 MB file-size limit"
    assert over_limit_message(11, 10) == "11 bytes is over the 10-byte file-size limit"


@pytest.fixture
def trickler():
    """A raw socket server: headers at once, then one body byte every 0.1 s."""
    import socket

    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(5)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 500\r\n\r\n"
            )
            for _ in range(500):
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow.jpg"
    stop.set()
    sock.close()
    thread.join(timeout=5)


def test_download_total_time_is_bounded_not_only_each_read(trickler):
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"timed out after 0\.6 s \(the whole download; only "):
        download(trickler, max_bytes=10_000, timeout=5, total_timeout=0.6)
    assert time.perf_counter() - start < 1.5


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds({"retry-after": date}) <= 30
    google = {"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "12s"}]}}
    assert retry_after_seconds({}, google) == 12
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_retries_429_honouring_retry_after(server):
    server.script.extend([(429, {"retry-after": "2"}, b"{}", 0), (503, {}, b"{}", 0)])
    client, waits = make_client()
    resp = client.post_json(f"{server.url}/v1/x", {"a": 1})
    assert resp.status == 200 and resp.json() == {"ok": True} and resp.retries == 2
    assert 2.0 <= waits[0] <= 2.3  # what the server asked, plus a little jitter
    assert 1.0 <= waits[1] <= 2.0 + 0.5  # exponential backoff with jitter
    assert (client.requests, client.retries) == (3, 2)


def test_backoff_grows_and_gives_up_returning_last_answer(server):
    server.script.extend([(500, {}, b'{"error": {"message": "boom"}}', 0)] * 4)
    client, waits = make_client()
    resp = client.post_json(f"{server.url}/v1/x", {})
    assert resp.status == 500 and resp.retries == 3 and server.hits == 4
    assert waits == sorted(waits) and waits[-1] <= 8.0 + 0.5


def test_client_errors_are_not_retried(server):
    server.script.append((400, {}, b'{"error": {"message": "bad"}}', 0))
    client, waits = make_client()
    assert client.post_json(f"{server.url}/v1/x", {}).status == 400
    assert waits == [] and server.hits == 1


def test_final_hook_stops_retrying(server):
    server.script.append((429, {}, b'{"error": {"code": "insufficient_quota"}}', 0))
    client, waits = make_client()
    resp = client.post_json(f"{server.url}/v1/x", {}, final=lambda r: "quota" in r.text)
    assert resp.status == 429 and waits == []


def test_long_retry_after_gives_up_at_once(server):
    server.script.append((429, {"retry-after": "3600"}, b"{}", 0))
    client, waits = make_client()
    assert client.post_json(f"{server.url}/v1/x", {}).status == 429
    assert waits == [] and server.hits == 1


def test_timeouts_retried_then_transport_failure(server):
    server.script.extend([(200, {}, b"{}", 1.0)] * 2)
    client, waits = make_client(timeout=0.2, retry=RetryPolicy(max_retries=1))
    with pytest.raises(TransportFailure, match=r"timed out after 0.2 s \(2 attempts\)") as err:
        client.post_json(f"{server.url}/v1/x?key=SECRET", {})
    assert err.value.timed_out and err.value.retries == 1 and len(waits) == 1
    assert not err.value.unreachable
    assert "SECRET" not in str(err.value)  # query strings never reach messages


def test_connection_refused():
    client, _ = make_client(retry=RetryPolicy(max_retries=1))
    with pytest.raises(TransportFailure, match="ConnectError") as err:
        client.post_json("http://127.0.0.1:9/v1/x", {})
    assert not err.value.timed_out and err.value.unreachable


def test_rate_limiter_spaces_requests():
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)

    limiter = RateLimiter(120, clock=lambda: now[0], sleep=sleep)  # one every 0.5 s
    for _ in range(4):
        limiter.acquire()
    assert slept == pytest.approx([0.5, 1.0, 1.5])
    now[0] += 10  # idle time is not banked into a burst beyond one slot
    slept.clear()
    limiter.acquire()
    limiter.acquire()
    assert slept == pytest.approx([0.5])
    assert RateLimiter(None).acquire() == 0.0


def test_concurrency_is_bounded(server):
    server.script.extend([(200, {}, b"{}", 0.3)] * 6)
    client, _ = make_client(concurrency=2)
    starts: list[float] = []

    def go() -> None:
        starts.append(time.monotonic())
        client.post_json(f"{server.url}/v1/x", {})

    t0 = time.monotonic()
    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 0.85  # 6 requests of 0.3 s, two at a time
    client.close()


def test_malformed_json_is_none(server):
    server.script.append((200, {}, b"{not json", 0))
    client, _ = make_client()
    resp = client.post_json(f"{server.url}/v1/x", {})
    assert resp.status == 200 and resp.json() is None and json.loads('{"a":1}')


def test_api_client_takes_an_httpx_transport():
    """The seam provider tests use: a MockTransport answers in-process, and the client's
    retries, Retry-After handling and headers run unchanged on top of it."""
    import httpx

    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(429, json={}, headers={"retry-after": "2"}),
        httpx.Response(200, json={"ok": 1}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    client, waits = make_client(transport=httpx.MockTransport(handler))
    resp = client.post_json("https://api.test/v1/x", {"a": 1}, headers={"x-k": "v"})
    client.close()
    assert (resp.status, resp.json(), resp.retries) == (200, {"ok": 1}, 1)
    assert len(waits) == 1 and 2.0 <= waits[0] < 2.5
    assert [str(r.url) for r in seen] == ["https://api.test/v1/x"] * 2
    assert json.loads(seen[0].content) == {"a": 1} and seen[0].headers["x-k"] == "v"
    assert seen[0].headers["user-agent"].startswith("captionkit/")
    assert (client.requests, client.retries) == (2, 1)


def _scripted(*answers: tuple[int, dict[str, str]]) -> tuple[APIClient, list[float], list[int]]:
    """An APIClient on MockTransport answering ``answers`` in order, then 200; backoff waits
    recorded, not slept."""
    import httpx

    script = deque(answers)
    seen: list[int] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers = script.popleft() if script else (200, {})
        seen.append(status)
        return httpx.Response(status, json={"error": {"message": "x"}}, headers=headers)

    client = APIClient(
        retry=RetryPolicy(max_retries=3, jitter=0.0),
        transport=httpx.MockTransport(handler),
        sleep=waits.append,
    )
    return client, waits, seen


@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 505, 520, 521, 522, 523, 524, 529])
def test_statuses_the_sdks_retry_are_retried(status):
    """openai-python and anthropic-sdk-python ``_base_client._should_retry`` (Stainless): 408,
    409, 429 and any status >= 500 are retried with backoff; Cloudflare's 520-524 in front of
    a vendor are 5xx like any other."""
    client, waits, seen = _scripted((status, {}))
    resp = client.post_json("http://api.test/v1", {})
    assert resp.status == 200 and seen == [status, 200] and len(waits) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_client_errors_are_not_retried(status):
    client, waits, seen = _scripted((status, {}))
    assert client.post_json("http://api.test/v1", {}).status == status
    assert seen == [status] and waits == []


def test_x_should_retry_header_is_honoured():
    """The same ``_should_retry``: ``x-should-retry: true`` retries whatever the status,
    ``false`` retries nothing, before the status is looked at."""
    client, waits, seen = _scripted((503, {"x-should-retry": "false"}))
    resp = client.post_json("http://api.test/v1", {})
    assert resp.status == 503 and seen == [503] and waits == []
    client, waits, seen = _scripted((400, {"x-should-retry": "true"}))
    assert client.post_json("http://api.test/v1", {}).status == 200 and seen == [400, 200]


def test_retry_after_ms_and_retry_after_still_win():
    """``retry-after-ms`` (OpenAI/Anthropic SDKs read it first), then ``Retry-After``."""
    client, waits, _ = _scripted((429, {"retry-after-ms": "1500"}), (503, {"retry-after": "2"}))
    assert client.post_json("http://api.test/v1", {}).status == 200
    assert 1.5 <= waits[0] < 1.7 and 2.0 <= waits[1] < 2.3
