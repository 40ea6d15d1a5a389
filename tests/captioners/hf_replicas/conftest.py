"""Replicas of real Hugging Face repos (tests/helpers/replicas.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def replica(tmp_path_factory):
    """``replica("llava15")``: the built replica, built on first use and shared."""
    from helpers.replicas import BUILDERS

    built = {}

    def get(name: str):
        if name not in built:
            built[name] = BUILDERS[name](tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Three small photos of different sizes and shapes (so batches need padding)."""
    from helpers.images import write_image

    root = tmp_path_factory.mktemp("photos")
    write_image(root / "a.png", size=(50, 40), color=(200, 10, 10))
    write_image(root / "b.png", size=(64, 64), color=(0, 0, 200))
    write_image(root / "c.png", size=(30, 90), color=(10, 180, 10))
    return root


@pytest.fixture
def cli(capsys):
    """Run ``captionkit ARGS`` as the console script does: (exit code, stdout, stderr)."""
    from captionkit.cli.main import run

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            run([str(a) for a in args])
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.out, captured.err

    return invoke


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """Remote code is copied into a throwaway modules cache, never the user's."""
    import sys

    from transformers import dynamic_module_utils

    cache = tmp_path / "hf_modules"
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(cache))
    monkeypatch.syspath_prepend(str(cache))
    for name in [m for m in sys.modules if m.split(".")[0] == "transformers_modules"]:
        monkeypatch.delitem(sys.modules, name)
    return cache
