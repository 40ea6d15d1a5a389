"""Fixtures for the server's tests (helpers in serve_helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import serve_helpers`

from serve_helpers import make_client
from starlette.testclient import TestClient

from helpers.fakes import FakeCaptioner, registered


@pytest.fixture
def fake() -> Iterator[type[FakeCaptioner]]:
    with registered() as cls:
        yield cls


@pytest.fixture
def client(fake) -> Iterator[TestClient]:
    with make_client() as c:
        yield c
