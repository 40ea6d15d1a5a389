"""Fixtures of the API backend tests: fake provider servers (see provider_fakes.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

sys.path.append(str(Path(__file__).parent))  # the test modules import provider_fakes

from provider_fakes import FakeProvider


@pytest.fixture
def fake_server():
    servers: list[FakeProvider] = []

    def start(kind: str, **kwargs: Any) -> FakeProvider:
        server = FakeProvider(kind, **kwargs)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch):
    """Tests never see the developer's real keys."""
    for name in (
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_COMPATIBLE_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A 3000x2000 RGB image with some texture (so JPEG sizes are realistic)."""
    grey = Image.effect_noise((3000, 2000), 60)
    return Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey))
