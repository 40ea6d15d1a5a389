"""Fixtures of the provider tests (helpers: provider_wire.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))  # the test modules import provider_wire


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch):
    """Tests never see the developer's real keys or servers."""
    for name in (
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_COMPATIBLE_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
