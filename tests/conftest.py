"""Shared fixtures: tiny saved models, real and broken image files, the ../shared folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.images import huge_png_header, write_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLICKR = SHARED / "data" / "flickr8k-dev"

# Tests never touch a model hub, and never write into the user's real cache or config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models are all overhead: one intra-op thread is faster than two on a 2-core CI box.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    for key in [k for k in os.environ if k.startswith("CAPTIONKIT_")]:
        monkeypatch.delenv(key)


def need_shared() -> Path:
    if not FLICKR.is_dir():
        pytest.skip(f"needs ../shared beside the repo ({FLICKR} is absent)")
    return FLICKR


@pytest.fixture(scope="session")
def flickr_images() -> list[Path]:
    root = need_shared()
    return sorted((root / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_vit_gpt2(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_vit_gpt2

    return build_vit_gpt2(tmp_path_factory.mktemp("vit-gpt2"))


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_blip

    return build_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="session")
def tiny_git(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_git

    return build_git(tmp_path_factory.mktemp("git"))


@pytest.fixture(scope="session")
def tiny_florence2(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_florence2

    return build_florence2(tmp_path_factory.mktemp("florence2"))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("idefics3"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from helpers.tiny_models import build_llava

    return build_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers.tiny_models import build_clip

    return build_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """Good images (JPEG, PNG, one in a sub-folder) plus every kind of bad input."""
    root = tmp_path / "photos"
    write_image(root / "red.jpg", color=(220, 20, 20))
    write_image(root / "blue.png", color=(20, 20, 220))
    write_image(root / "sub" / "green.jpg", color=(20, 200, 20))
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    good = (root / "red.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "text.jpg").write_text("this is not an image\n")
    write_image(bad / "tiny.png", size=(1, 1))
    (bad / "huge.png").write_bytes(huge_png_header())
    return root
