"""Against a real ``captionkit serve`` process (uvicorn) on 127.0.0.1, on a free port, started
and stopped by each test: captioning, the token from the environment, client disconnects
freeing their queued images, and SIGTERM finishing in-flight requests before a clean exit."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import png, server

HERE = Path(__file__).resolve().parent


def files(*colours: str):
    return [("images", (f"{c}{i}.png", png(c), "image/png")) for i, c in enumerate(colours)]


def test_real_server_captions_with_a_token_from_the_environment():
    with server(env={"CAPTIONKIT_TOKEN": "tok"}) as (url, _):
        assert httpx.post(f"{url}/v1/caption", files=files("red")).status_code == 401
        r = httpx.post(
            f"{url}/v1/caption", files=files("red", "blue"), headers={"Authorization": "Bearer tok"}
        )
        assert r.status_code == 200
        assert [x["text"] for x in r.json()["results"]] == ["a red image", "a blue image"]
        assert httpx.get(f"{url}/").status_code == 200


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly():
    with server(delay=0.6) as (url, proc):
        answers: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{url}/v1/caption", files=files("red", "green"), timeout=20)
            )
        )
        client.start()
        time.sleep(0.25)  # the request is inside the model now
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=20)
        assert answers and answers[0].status_code == 200
        assert [x["text"] for x in answers[0].json()["results"]] == ["a red image", "a green image"]
        assert proc.wait(timeout=15) == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in err
        with pytest.raises(httpx.TransportError):  # and it no longer listens
            httpx.get(f"{url}/v1/health", timeout=1)


def test_a_client_that_disconnects_frees_its_queued_images():
    """20 images, one per model call of 0.2 s: the client gives up after 0.5 s; the images
    still waiting for the submit window never reach the model."""
    with server("--max-batch", "1", "--max-images", "20", delay=0.2) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/caption", files=files(*["red"] * 20), timeout=httpx.Timeout(5, read=0.5)
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = httpx.get(f"{url}/v1/metrics").json()
            if m["pending_images"] == 0 and m["images"].get("cancelled", 0):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # let anything still in the model finish
        m = httpx.get(f"{url}/v1/metrics").json()
        assert m["pending_images"] == 0
        assert m["images"]["cancelled"] >= 10
        assert m["requests"]["client_disconnected"] == 1
        assert m["batches"]["total"] <= 10  # far fewer than 20 model calls
        ok = httpx.post(f"{url}/v1/caption", files=files("blue"), timeout=10)  # still serving
        assert ok.json()["results"][0]["text"] == "a blue image"


def test_port_in_use_says_so_and_exits():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                str(HERE / "fake_server.py"),
                "serve",
                "--model",
                "fake",
                "--store",
                "none",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0
    assert "address already in use" in proc.stderr.lower() and "Traceback" not in proc.stderr
