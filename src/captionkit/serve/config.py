"""What one ``captionkit serve`` process is allowed to do: its model, limits and security.

Kept apart from the app so the CLI, tests and the load benchmark build the same value, and
so the refusal to bind a non-loopback address without a token lives in one place
(:meth:`ServeConfig.check`), before any model is loaded.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError

MB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """Per request: images, bytes per image, bytes in all, pixels per image (bombs)."""

    max_images: int = 32
    max_image_bytes: int = 20 * MB
    max_request_bytes: int = 100 * MB
    max_pixels: int = 50_000_000
    #: Images admitted (waiting or captioning) across all requests; beyond: 503.
    max_queue: int = 256


@dataclass(frozen=True)
class ServeConfig:
    """One server: bind address, model, token, ``--root`` folder and every limit."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: ``build_run`` values (``model``, ``store``, ``style``, ``config``...): the same
    #: settings layering as the CLI; None values are "not given".
    run: dict[str, Any] = field(default_factory=dict)
    #: Backend options (``-o``) the model is loaded with.
    options: dict[str, Any] = field(default_factory=dict)
    #: Backend option names a request may set (each distinct set loads one more model copy).
    allow_options: tuple[str, ...] = ()
    max_variants: int = 2
    token: str | None = None
    root: Path | None = None
    limits: UploadLimits = UploadLimits()
    url_timeout: float = 10.0
    allow_private_urls: bool = False
    max_batch: int | None = None  # None: the backend's default batch size
    max_wait_ms: float = 10.0
    concurrency: int = 4

    def check(self) -> None:
        """Refuse settings that would expose the server or can never work (one line)."""
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it "
                "could use it; set --token (or CAPTIONKIT_TOKEN), or bind 127.0.0.1"
            )
        limits = self.limits
        if limits.max_images > limits.max_queue:
            raise ConfigError("--max-images cannot be over --max-queue")
        if min(limits.max_images, limits.max_image_bytes, limits.max_request_bytes) < 1:
            raise ConfigError("upload limits must be positive")
        if self.root is not None and not self.root.is_dir():
            raise ConfigError(f"--root {self.root}: not a folder")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
