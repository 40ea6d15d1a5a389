"""Reading a source's bytes: local files and URLs (a local HTTP server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from captionkit.errors import ImageDecodeError
from captionkit.inputs.fetch import FetchLimits, read_source
from captionkit.inputs.sources import Source


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
#: path -> (status, content-type or None, body, seconds to wait before answering)
ROUTES: dict[str, tuple[int, str | None, bytes, float]] = {
    "/ok.png": (200, "image/png", PNG, 0),
    "/octet": (200, "application/octet-stream", PNG, 0),
    "/page.html": (200, "text/html; charset=utf-8", b"<html>hi</html>", 0),
    "/big.jpg": (200, "image/jpeg", b"\xff\xd8\xff" + b"\x00" * 5000, 0),
    "/slow.png": (200, "image/png", PNG, 2.0),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/chunked.jpg":  # no Content-Length: the streamed limit must cut it
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                block = b"\x00" * 1000
                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/trickle.png":  # one byte every 0.2 s: every read is quick
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the client gave up: what the test wants
            return
        if self.path not in ROUTES:
            self.send_error(404, "Not Found")
            return
        status, ctype, body, delay = ROUTES[self.path]
        time.sleep(delay)
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # the client hanging up early (timeout, size limit) is what the tests provoke


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def url_source(url: str) -> Source:
    return Source(key=url, url=url)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(key, raising=False)


def test_url_image_bytes(server):
    assert read_source(url_source(f"{server}/ok.png")) == PNG


def test_octet_stream_left_to_the_decoder(server):
    assert read_source(url_source(f"{server}/octet")) == PNG


def test_wrong_content_type_refused(server):
    with pytest.raises(ImageDecodeError, match="content-type is 'text/html"):
        read_source(url_source(f"{server}/page.html"))


def test_404_is_a_per_image_error(server):
    url = f"{server}/missing.jpg"
    with pytest.raises(ImageDecodeError) as info:
        read_source(url_source(url))
    assert str(info.value) == f"{url}: HTTP 404 Not Found"


HINT = "(raise it with --max-file-mb)"


def test_declared_size_over_limit_refused(server):
    url = f"{server}/big.jpg"
    with pytest.raises(ImageDecodeError) as info:
        read_source(url_source(url), FetchLimits(max_bytes=1000))
    assert str(info.value) == f"{url}: 4.9 KB is over the 1,000-byte file-size limit {HINT}"
    assert len(read_source(url_source(url), FetchLimits(max_bytes=6000))) == 5003


def test_streamed_body_over_limit_cut_off(server):
    url = f"{server}/chunked.jpg"
    with pytest.raises(ImageDecodeError) as info:
        read_source(url_source(url), FetchLimits(max_bytes=2500))
    assert str(info.value) == f"{url}: the body is over the 2.4 KB file-size limit {HINT}"


def test_trickling_server_is_cut_off_at_the_timeout(server):
    # Each read returns within the timeout, so only a deadline on the whole download stops
    # it (issue #11, item 12: --timeout 3 used to hold a run for 100 s).
    url = f"{server}/trickle.png"
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError) as info:
        read_source(url_source(url), FetchLimits(timeout=1))
    elapsed = time.perf_counter() - start
    assert 0.9 < elapsed < 2.0, elapsed
    message = str(info.value)
    assert message.startswith(f"{url}: timed out after 1 s (the whole download; only ")
    assert message.endswith(" of 1,000 bytes arrived)") and "\n" not in message


def test_timeout(server):
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"timed out after 0\.3 s"):
        read_source(url_source(f"{server}/slow.png"), FetchLimits(timeout=0.3))
    assert time.perf_counter() - start < 1.8


def test_connection_refused_is_a_per_image_error():
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ImageDecodeError, match="ConnectError"):
        read_source(url_source(f"http://127.0.0.1:{port}/x.png"), FetchLimits(timeout=2))


def test_local_file(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    assert read_source(Source(key=str(path), path=path)) == PNG


def test_local_file_over_limit(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    with pytest.raises(ImageDecodeError, match=r"file-size limit \(raise it with --max-file-mb\)"):
        read_source(Source(key=str(path), path=path), FetchLimits(max_bytes=len(PNG) - 1))


def test_local_file_over_the_default_limit_names_file_size_and_flag(tmp_path):
    path = tmp_path / "photo.tif"
    with open(path, "wb") as fh:  # sparse: 73.2 MB on paper, nothing on disk
        fh.truncate(int(73.2 * 1024 * 1024))
    with pytest.raises(ImageDecodeError) as info:
        read_source(Source(key=str(path), path=path))
    assert str(info.value) == (
        "photo.tif: 73.2 MB is over the 50 MB file-size limit (raise it with --max-file-mb)"
    )
    assert len(read_source(Source(key=str(path), path=path), FetchLimits(max_bytes=80 << 20))) == (
        int(73.2 * 1024 * 1024)
    )


def test_local_size_equal_to_the_limit_when_rounded_says_exact_bytes(tmp_path):
    path = tmp_path / "edge.jpg"
    with open(path, "wb") as fh:
        fh.truncate((50 << 20) + 10)
    with pytest.raises(ImageDecodeError) as info:
        read_source(Source(key=str(path), path=path))
    assert str(info.value).startswith(
        "edge.jpg: 52,428,810 bytes is over the 50 MB (52,428,800-byte) file-size limit"
    )


def test_local_file_vanished_or_directory(tmp_path):
    gone = tmp_path / "gone.png"
    with pytest.raises(ImageDecodeError, match="no such file"):
        read_source(Source(key=str(gone), path=gone))
    with pytest.raises(ImageDecodeError, match="directory"):
        read_source(Source(key=str(tmp_path), path=Path(tmp_path)))
