"""Published checkpoints that transformers cannot run as they are, loaded by captionkit's code.

``AutoModel*`` picks a class from ``config.json``'s ``model_type``. For a few popular repos that
choice is wrong or impossible on current transformers: Florence-2's original (remote-code) layout
has the same ``model_type`` as the native port but other weight names, so the native class loads
8 of 668 tensors; Phi-3.5-vision's remote code imports modules transformers 5 removed. Each
module here recognises one such layout from the raw ``config.json`` and loads it correctly.

A module in :data:`MODULES` exposes:

* ``model_type: str`` — the behaviour ``hf.py`` applies (``"florence2"``: task tokens; others:
  chat);
* ``matches(config: dict) -> bool`` — is this raw ``config.json`` that layout?
* ``load(model_id, config, *, device, dtype, revision) -> (model, processor)`` — the model (a
  ``GenerationMixin`` on ``device`` in ``dtype``, every checkpoint tensor loaded or a
  ``ModelLoadError``) and a processor with ``image_processor``/``tokenizer`` attributes.
  ``load`` may also accept ``processor_options: dict`` (``-o num_crops=...``, ``min_pixels``,
  ``max_pixels``: only those the user set); one that does not is refused a user's options with
  a one-line ``ConfigError`` rather than given them silently.

``hf_loading.inspect_checkpoint`` reads the raw config once (:func:`read_raw_config`), asks
:func:`find`, and passes that same dict to ``load``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

#: Tried in order; the first whose ``matches`` accepts the config loads the checkpoint.
MODULES = ("florence2_original", "phi3v")


def repo_file(model_id: str, name: str, revision: str | None = None) -> Path | None:
    """One file of a checkpoint: from its local folder, or the hub cache/download.

    None when it is absent or cannot be had (no network, not cached): every caller has a
    better error to give than the hub's, or treats a missing optional file as "not there".
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local / name if (local / name).is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(
            model_id,
            name,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except Exception:  # any hub failure: the caller reports it properly
        return None
    return Path(found) if found else None


def read_raw_config(model_id: str, revision: str | None = None) -> dict[str, Any] | None:
    """``config.json`` as a plain dict, from a local folder or the hub cache/download.

    None when it cannot be had: the caller then says why (wrong id, no network, not a model
    folder).
    """
    path = repo_file(model_id, "config.json", revision)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find(config: dict[str, Any] | None) -> ModuleType | None:
    """The module that handles this raw config, or None for what transformers loads itself."""
    if not config:
        return None
    for name in MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":  # not built yet in this checkout
                continue
            raise
        if module.matches(config):
            return module
    return None
