"""Fixtures of the training tests (helpers live in train_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import train_helpers`
from train_helpers import build_decoder, build_encoder, make_subset


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return build_encoder(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> Path:
    return build_decoder(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def eight_images(tmp_path) -> Path:
    return make_subset(tmp_path / "eight", 8, per_image=1)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads make tiny models 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
