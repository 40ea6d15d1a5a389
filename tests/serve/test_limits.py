"""Every limit answers with its status and a one-line JSON error, and the server keeps
serving: bytes per image, images per request, request bytes, pixels, the queue, the token,
the bind address."""

from __future__ import annotations

import base64
import hmac
import threading
import time

import pytest
from serve_helpers import captioner, make_client, noise_png, one_line_error, png, upload

from captionkit.errors import ConfigError
from captionkit.serve.config import ServeConfig, UploadLimits, is_loopback
from helpers.images import huge_png_header


def still_serving(c) -> None:
    r = c.post("/v1/caption", files=upload("red"))
    assert r.status_code == 200 and r.json()["results"][0]["text"] == "a red image"


def test_bytes_per_image_413(fake):
    big = png("red", (600, 600))  # a PNG of a few KB
    with make_client(UploadLimits(max_image_bytes=len(big) - 1)) as c:
        r = c.post("/v1/caption", files=[("images", ("big.png", big, "image/png"))])
        assert "big.png" in one_line_error(r, 413, "LimitExceeded")
        b64 = base64.b64encode(big).decode()
        one_line_error(c.post("/v1/caption", json={"images": [{"base64": b64}]}), 413)
        assert captioner().calls == []
        still_serving(c)


def test_images_per_request_413(fake):
    with make_client(UploadLimits(max_images=2)) as c:
        r = c.post("/v1/caption", files=upload("red", "blue", "green"))
        assert "at most 2" in one_line_error(r, 413)
        b64 = base64.b64encode(png()).decode()
        r = c.post("/v1/caption", json={"images": [{"base64": b64}] * 3})
        assert "at most 2" in one_line_error(r, 413)
        assert captioner().calls == []
        still_serving(c)


def test_total_request_bytes_413_declared_and_streamed(fake):
    with make_client(UploadLimits(max_request_bytes=20_000, max_image_bytes=30_000)) as c:
        files = [("images", (f"{i}.png", noise_png((50, 50), i), "image/png")) for i in range(4)]
        assert "limit" in one_line_error(c.post("/v1/caption", files=files), 413, "RequestTooLarge")

        def chunks():  # no Content-Length: the cap counts what arrives
            for _ in range(30):
                yield b"x" * 1000

        r = c.post("/v1/caption", content=chunks(), headers={"content-type": "application/json"})
        one_line_error(r, 413, "RequestTooLarge")
        still_serving(c)


def test_pixels_422_decompression_bomb(fake):
    with make_client(UploadLimits(max_pixels=10_000)) as c:
        r = c.post("/v1/caption", files=[("images", ("bomb.png", huge_png_header(), "image/png"))])
        assert "pixel limit" in one_line_error(r, 422)
        r = c.post(
            "/v1/caption", files=[("images", ("a.png", png("red", (200, 200)), "image/png"))]
        )
        assert "200x200" in one_line_error(r, 422)
        assert captioner().calls == []
        still_serving(c)


def test_full_queue_503_with_retry_after(fake):
    """While 4 images wait, a request for 2 more is refused whole; then served again."""
    with make_client(UploadLimits(max_queue=5, max_images=5)) as c:
        captioner().caption_delay = 0.3
        first: list = []
        worker = threading.Thread(
            target=lambda: first.append(c.post("/v1/caption", files=upload(*["red"] * 4)))
        )
        worker.start()
        deadline = time.monotonic() + 5
        while c.get("/v1/health").json()["pending"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/caption", files=upload("blue", "green"))
        one_line_error(r, 503, "QueueFull")
        assert int(r.headers["retry-after"]) >= 1
        worker.join()
        assert first[0].status_code == 200
        assert c.get("/v1/metrics").json()["requests"]["rejected_queue_full"] == 1
        still_serving(c)
        assert "blue" not in captioner().captioned


def test_a_full_queue_refuses_before_reading_the_body(fake):
    with make_client(UploadLimits(max_queue=2, max_images=2)) as c:
        captioner().caption_delay = 0.3
        worker = threading.Thread(target=lambda: c.post("/v1/caption", files=upload("red", "red")))
        worker.start()
        deadline = time.monotonic() + 5
        while c.get("/v1/health").json()["pending"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Not even valid JSON: the middleware answers before any route parses the body.
        r = c.post("/v1/caption", content=b"{", headers={"content-type": "application/json"})
        one_line_error(r, 503, "QueueFull")
        assert r.headers["retry-after"].isdigit()
        worker.join()
        still_serving(c)


def test_bearer_token_required_and_compared_in_constant_time(fake, monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with make_client(token="s3cret") as c:
        one_line_error(c.post("/v1/caption", files=upload("red")), 401, "Unauthorized")
        bad = {"Authorization": "Bearer wrong"}
        r = c.post("/v1/caption", files=upload("red"), headers=bad)
        one_line_error(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        one_line_error(c.get("/v1/metrics", headers={"Authorization": "Basic s3cret"}), 401)
        assert (b"wrong", b"s3cret") in compared
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/caption", files=upload("red"), headers=good).status_code == 200
        assert c.get("/v1/metrics", headers=good).status_code == 200
        assert c.get("/v1/health").json()["auth"] is True  # the page asks for the token
        assert c.get("/").status_code == 200  # the page itself holds no data


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_non_loopback_bind_without_token_refuses(host):
    with pytest.raises(ConfigError, match="without a token"):
        ServeConfig(host=host).check()
    ServeConfig(host=host, token="t").check()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_binds_need_no_token(host):
    assert is_loopback(host)
    ServeConfig(host=host).check()


def test_cli_refuses_exposed_bind_in_one_line_before_loading(capsys):
    from captionkit.cli.main import run

    with pytest.raises(SystemExit) as exc:
        run(["serve", "--host", "0.0.0.0", "--model", "no-such-backend"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.splitlines() == [err] and "refusing to serve on 0.0.0.0 without a token" in err
