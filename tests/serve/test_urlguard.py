"""Image URLs: the address check as a function over many addresses, the fetch's rules with a
mock transport (one DNS lookup, connect to the checked address, redirects re-checked), and
real requests to 127.0.0.1 only (size and time limits, the API's 422/413)."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from serve_helpers import make_client, one_line_error, png

from captionkit.errors import InputError
from captionkit.serve.urlguard import (
    URLLimits,
    URLRefused,
    URLTooLarge,
    address_refusal,
    check_url,
    fetch_image,
)

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "0.0.0.0",
    "::",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "169.254.169.254",
    "169.254.170.2",
    "169.254.0.5",
    "100.100.100.200",
    "fd00:ec2::254",
    "100.64.0.1",
    "100.127.255.254",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "2001:db8::1",
    "198.18.0.1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:0001::1",
    "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "not-an-ip",
]
ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "151.101.1.69",
    "172.32.0.1",
    "172.15.255.255",
    "100.63.255.255",
    "100.128.0.1",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address):
    assert address_refusal(address) is None


def test_metadata_is_named():
    assert address_refusal("169.254.169.254") == "a cloud metadata address"
    assert "metadata" in (address_refusal("::ffff:169.254.169.254") or "")


def run(coro):
    return asyncio.run(coro)


def resolver(table: dict[str, list[str]], calls: list[str]):
    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        answer = table[host]
        if isinstance(answer[0], list):  # a rebinding server: a new answer each time
            return answer.pop(0)
        return answer

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/a.png",
        "gopher://x/",
        "data:image/png;base64,AA",
        "http://user:pw@example.org/a.png",
        "http:///a.png",
        "javascript:alert(1)",
    ],
)
def test_scheme_and_shape_refused(url):
    with pytest.raises(URLRefused):
        run(check_url(url, URLLimits(), resolver({}, [])))


def test_private_resolution_refused_unless_allowed():
    calls: list[str] = []
    table = {"intranet.example": ["93.184.216.34", "10.1.2.3"]}  # any bad address refuses
    with pytest.raises(URLRefused, match=r"10\.1\.2\.3, a private address"):
        run(check_url("http://intranet.example/a.png", URLLimits(), resolver(table, calls)))
    target = run(
        check_url(
            "http://intranet.example/a.png", URLLimits(allow_private=True), resolver(table, calls)
        )
    )
    assert target.address == "93.184.216.34"
    with pytest.raises(URLRefused, match="loopback"):
        run(check_url("http://127.0.0.1:8000/x", URLLimits(), resolver({}, [])))
    with pytest.raises(URLRefused, match="loopback"):
        run(check_url("http://[::1]/x", URLLimits(), resolver({}, [])))


def test_one_lookup_and_the_connection_goes_to_the_checked_address():
    """DNS rebinding: the second answer (127.0.0.1) is never asked for."""
    calls: list[str] = []
    table = {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"img", headers={"content-type": "image/png"})

    data = run(
        fetch_image(
            "http://rebind.example/p.png?x=1",
            URLLimits(),
            resolve=resolver(table, calls),
            transport=httpx.MockTransport(handler),
        )
    )
    assert data == b"img" and calls == ["rebind.example"]
    assert seen[0].url.host == "93.184.216.34" and seen[0].url.query == b"x=1"
    assert seen[0].headers["host"] == "rebind.example"


def test_redirects_are_checked_again():
    calls: list[str] = []
    table = {"public.example": ["93.184.216.34"], "inside.example": ["192.168.1.1"]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": "http://inside.example/secret"})
        if request.url.path == "/meta":
            return httpx.Response(301, headers={"location": "http://169.254.169.254/latest/"})
        return httpx.Response(200, content=b"fine")

    mock = httpx.MockTransport(handler)
    with pytest.raises(URLRefused, match=r"192\.168\.1\.1"):
        run(
            fetch_image(
                "http://public.example/start",
                URLLimits(),
                resolve=resolver(table, calls),
                transport=mock,
            )
        )
    assert calls == ["public.example", "inside.example"]
    with pytest.raises(URLRefused, match="metadata"):
        run(
            fetch_image(
                "http://public.example/meta",
                URLLimits(),
                resolve=resolver(table, calls),
                transport=mock,
            )
        )


def test_redirect_loops_end():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/again"})

    resolve = resolver({"public.example": ["93.184.216.34"]}, [])
    with pytest.raises(InputError, match="more than 5 redirects"):
        run(
            fetch_image(
                "http://public.example/",
                URLLimits(),
                resolve=resolve,
                transport=httpx.MockTransport(handler),
            )
        )


# -- real requests, to 127.0.0.1 only ----------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    image = png("yellow")

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/photo.png":
            self._send(self.image)
        elif self.path == "/big.png":
            self._send(b"x" * 50_000)
        elif self.path == "/chunked.png":  # no Content-Length: cut off while streaming
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x" * 1000)
        elif self.path == "/slow.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", "/photo.png")
            self.end_headers()
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_real_fetch_limits_on_127_0_0_1(local_server):
    open_ = URLLimits(allow_private=True, max_bytes=10_000, timeout=0.8)
    assert run(fetch_image(f"{local_server}/photo.png", open_)) == _Handler.image
    assert run(fetch_image(f"{local_server}/hop", open_)) == _Handler.image
    with pytest.raises(URLTooLarge):
        run(fetch_image(f"{local_server}/big.png", open_))
    with pytest.raises(URLTooLarge):
        run(fetch_image(f"{local_server}/chunked.png", open_))
    start = time.monotonic()
    with pytest.raises(InputError, match="timed out"):
        run(fetch_image(f"{local_server}/slow.png", open_))
    assert time.monotonic() - start < 1.5
    with pytest.raises(URLRefused, match="loopback"):
        run(fetch_image(f"{local_server}/photo.png", URLLimits()))


def test_api_urls_refused_422_allowed_with_the_flag(fake, local_server):
    body = {"images": [{"url": f"{local_server}/photo.png"}]}
    with make_client() as c:
        assert "loopback" in one_line_error(c.post("/v1/caption", json=body), 422)
        one_line_error(c.post("/v1/caption", json={"images": [{"url": "file:///etc/passwd"}]}), 422)
    with make_client(allow_private_urls=True) as c:
        r = c.post("/v1/caption", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == "a yellow image"
        big = {"images": [{"url": f"{local_server}/big.png"}]}
        assert c.post("/v1/caption", json=big).status_code == 200  # 50 KB < 20 MB default
        missing = c.post(
            "/v1/caption", json={"images": [{"url": f"{local_server}/nope.png"}, *body["images"]]}
        )
        first, second = missing.json()["results"]
        assert "HTTP 404" in first["error"] and second["text"] == "a yellow image"


def test_api_url_over_the_image_limit_413(fake, local_server):
    from captionkit.serve.config import UploadLimits

    with make_client(UploadLimits(max_image_bytes=10_000), allow_private_urls=True) as c:
        body = {"images": [{"url": f"{local_server}/big.png"}]}
        assert "limit" in one_line_error(c.post("/v1/caption", json=body), 413)
