"""Why a Hugging Face checkpoint cannot be loaded, said in one line with its real cause.

Apart from ``hf_loading`` (which loads) because the diagnosis is its own job: a local path that
does not exist, a hub id neither cached nor reachable, remote code that no longer runs on this
transformers, a ``model_type`` transformers never learnt, a package the model needs. Each is its
own :class:`ModelLoadError`, never "could not be downloaded" for something else.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionkit.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from captionkit.captioners.hf_loading import Checkpoint

#: Original layouts whose ``model_type`` transformers never learnt: (family, the organisation
#: that publishes the converted checkpoints transformers loads natively, an example of those).
#: deepseek-ai/NAME is converted as deepseek-community/NAME.
CONVERTED_ELSEWHERE = {
    "multi_modality": ("DeepSeek-VL", "deepseek-community", "deepseek-vl-7b-chat"),
}


def looks_local(model_id: str) -> bool:
    """A filesystem path rather than a hub id: ``/x``, ``./x``, ``../x``, ``~/x``, ``C:\\x``,
    or anything that exists on disk. ``org/name`` is a hub id unless such a folder exists."""
    return (
        model_id in (".", "..")
        or model_id.startswith(("/", "./", "../", "~", ".\\", "..\\", "\\"))
        or re.match(r"^[A-Za-z]:[\\/]", model_id) is not None
        or Path(model_id).exists()
    )


def check_local(model_id: str) -> Path | None:
    """The folder for a local ``model_id``; a path that is not a folder is an error here,
    before anything asks the hub about it."""
    if not looks_local(model_id):
        return None
    path = Path(model_id).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"no model folder at {path.absolute()}: that path does not exist (check the path, "
            "or pass a hub id such as hf:org/name)"
        )
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is a file, not a model folder: pass the folder that holds config.json"
        )
    return path


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def not_downloadable(model_id: str) -> ModelLoadError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return ModelLoadError(
        f"cannot load '{model_id}': it is not a local folder and not in the Hugging Face cache "
        f"({hf_home}), and it could not be downloaded. Connect to the network once, or copy the "
        f"model folder here and pass --model hf:/path/to/dir (or set HF_HOME)"
    )


def remote_code_failure(exc: BaseException) -> bool:
    """Did the repo's own code (``trust_remote_code``) raise, or fail its import check?"""
    if "This modeling file requires the following packages" in str(exc):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return any("transformers_modules" in frame.filename for frame in frames)


def remote_code_error(model_id: str, exc: BaseException) -> ModelLoadError:
    import transformers

    return ModelLoadError(
        f"'{model_id}': its own code (-o trust_remote_code=true) does not run on transformers "
        f"{transformers.__version__}: {type(exc).__name__}: {first_line(exc)}"
    )


def missing_package(model_id: str, exc: ImportError) -> MissingDependencyError | None:
    """transformers' "X requires the Torchvision library" as one run-wide line naming the
    package (before: the processor silently failed and every image raised a TypeError)."""
    found = re.search(r"(\w+) requires the (\w[\w-]*) librar", str(exc))
    if not found:
        return None
    user, package = found.group(1), found.group(2).lower()
    import torch

    hint = (
        f" (the build that matches your torch {torch.__version__})"
        if package.startswith("torch")
        else ""
    )
    error = MissingDependencyError(package, "hf", user)
    error.args = (
        f"'{model_id}' needs {package} for {user}, but it is not installed: "
        f"pip install {package}{hint}",
    )
    return error


def unknown_type_error(model_id: str, raw: dict[str, Any], trust_remote_code: bool) -> Any:
    """The message for a ``model_type`` transformers does not know, by what would fix it."""
    import transformers

    model_type = raw.get("model_type")
    version = transformers.__version__
    if model_type in CONVERTED_ELSEWHERE:
        family, org, example = CONVERTED_ELSEWHERE[model_type]
        name = Path(model_id.rstrip("/\\")).name
        instead = (
            f"a converted checkpoint from {org}/ (e.g. --model hf:{org}/{example})"
            if looks_local(model_id)
            else f"the converted checkpoint: --model hf:{org}/{name}"
        )
        return ModelLoadError(
            f"'{model_id}' is {family} in its original layout (model_type '{model_type}'), which "
            f"transformers cannot load and whose repo ships no code for it; use {instead}"
        )
    if raw.get("auto_map") and not trust_remote_code:
        return ModelLoadError(
            f"'{model_id}' needs its own code (model_type '{model_type}' is not in transformers "
            f"{version}): rerun with -o trust_remote_code=true if you trust its authors"
        )
    if raw.get("auto_map"):
        return None  # remote code was allowed: its own failure, if any, is reported instead
    return ModelLoadError(
        f"'{model_id}' has model_type '{model_type}', which transformers {version} does not know, "
        "and the repo ships no code for it: upgrade transformers (pip install -U transformers) or "
        "use a checkpoint converted for transformers"
    )


def config_error(ckpt: Checkpoint, exc: Exception) -> ModelLoadError:
    model_id, raw = ckpt.model_id, ckpt.raw
    local = check_local(model_id)
    if remote_code_failure(exc):
        return remote_code_error(model_id, exc)
    if raw is None and local is None:
        return not_downloadable(model_id)
    if raw is None or not raw.get("model_type"):
        what = "no config.json" if raw is None else "config.json has no model_type"
        return ModelLoadError(
            f"cannot load the model in {local or model_id}: {what} (is it a complete "
            "save_pretrained folder?)"
        )
    return ModelLoadError(
        f"cannot load '{model_id}' (model_type '{raw.get('model_type')}'): "
        f"{type(exc).__name__}: {first_line(exc)}"
    )
