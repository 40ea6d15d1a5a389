"""Helpers for the server's tests: an app on the fake backend, images as upload bytes."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from captionkit.serve.app import create_app
from captionkit.serve.config import ServeConfig, UploadLimits
from helpers.fakes import PALETTE, FakeCaptioner


def png(colour: str = "red", size: tuple[int, int] = (32, 24)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, PALETTE[colour]).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(*colours: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{c}.png", png(c), "image/png")) for c in colours]


def make_client(limits: UploadLimits | None = None, **config: Any) -> TestClient:
    run = {"model": "fake", "store": "none", **config.pop("run", {})}
    cfg = ServeConfig(run=run, limits=limits or UploadLimits(), **config)
    return TestClient(create_app(cfg))


def captioner() -> FakeCaptioner:
    """The fake the running app loaded."""
    return FakeCaptioner.instances[-1]


def one_line_error(response, status: int, kind: str | None = None) -> str:
    """The response is ``status`` with ``{"error": {"type", "message"}}``, message one line."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return message


def noise_png(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    """A PNG of random pixels: about 3 bytes per pixel, whatever the compressor does."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    img = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


HERE = Path(__file__).resolve().parent


def launcher(fake: bool = True) -> list[str]:
    """The command that runs ``captionkit``: with the fake backend as ``--model fake``
    (``fake_server.py``), or the real CLI."""
    if fake:
        return [sys.executable, str(HERE / "fake_server.py")]
    return [sys.executable, "-m", "captionkit.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(
    *args: str, delay: float = 0.0, env: dict | None = None, fake: bool = True
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``captionkit serve`` process on 127.0.0.1 and a free port, up until the block ends
    (``fake``: the fake backend, ``FAKE_DELAY`` seconds per model call)."""
    port = free_port()
    model = ["--model", "fake"] if fake else []
    proc = subprocess.Popen(
        [*launcher(fake), "serve", *model, "--store", "none", "--port", str(port), *args],
        env={**os.environ, "FAKE_DELAY": str(delay), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {proc.communicate()[1]}")
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
