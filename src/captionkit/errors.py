"""Errors a user can cause, each carrying one actionable line.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; it never shows a traceback
for these. Anything else that escapes is a bug in captionkit and is shown in full.
"""

from __future__ import annotations


class CaptionkitError(Exception):
    """Base class: the message is one line telling the user what to do."""

    exit_code = 2


class ConfigError(CaptionkitError):
    """A flag, environment variable or config-file entry is invalid."""


class InputError(CaptionkitError):
    """A path, URL or list of inputs cannot be used."""


class ImageDecodeError(CaptionkitError):
    """One image cannot be read; the run continues with the others."""


class MissingDependencyError(CaptionkitError):
    """An optional package is needed; the message names the extra that brings it."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"'{package}' is needed{what} but is not installed: pip install \"captionkit[{extra}]\""
        )


class UnknownBackendError(CaptionkitError):
    """``--model`` names a backend that no installed package registers."""


class ModelLoadError(CaptionkitError):
    """Weights or their configuration could not be loaded."""


class OutputError(CaptionkitError):
    """An output (sidecar folder, ``--output`` file, results store, drawing) cannot be written.

    Raised before the model loads where the check is possible; mid-run it stops the run after
    the batch in hand is committed to the results store, so nothing computed is lost.
    """


class StoreError(CaptionkitError):
    """The results store cannot be opened or read (corrupt, locked, wrong file)."""


class BackendError(CaptionkitError):
    """A backend failed for a reason that is not one image's fault (bad key, server down)."""


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional module or raise the one-line hint naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # also catches a broken install of the package
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
