"""The error boundary: how a ``captionkit.errors`` type (or Ctrl-C) becomes what a face
shows: one line and an exit code (the CLI), or a JSON body and an HTTP status (the server).

Anything else is a bug in captionkit and is left to the face to show in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from captionkit.errors import CaptionkitError

#: HTTP status of each error kind, for faces that answer in JSON (the server).
HTTP_STATUS = {
    "ConfigError": 400,
    "InputError": 400,
    "ImageDecodeError": 422,
    "UnknownBackendError": 400,
    "MissingDependencyError": 501,
    "ModelLoadError": 500,
    "OutputError": 500,
    "StoreError": 500,
    "BackendError": 502,
}


@dataclass(frozen=True)
class ErrorReport:
    """One user-caused error as every face shows it: one line, an exit code, a JSON body."""

    kind: str
    message: str
    exit_code: int
    http_status: int

    def line(self, prog: str = "captionkit") -> str:
        if self.kind == "Interrupted":
            return f"{prog}: interrupted"
        return f"{prog}: error: {self.message}"

    def json(self) -> dict[str, Any]:
        return {"error": {"type": self.kind, "message": self.message}}


def error_report(exc: BaseException) -> ErrorReport | None:
    """The report of a ``captionkit.errors`` type (or an interrupt); None for anything else,
    which is a bug in captionkit and is shown in full by the face."""
    if isinstance(exc, KeyboardInterrupt):
        return ErrorReport("Interrupted", "interrupted", 130, 499)
    if not isinstance(exc, CaptionkitError):
        return None
    kind = type(exc).__name__
    base = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in HTTP_STATUS), "")
    message = re.sub(r"\s*\n\s*", " ", str(exc).strip()) or kind
    return ErrorReport(kind, message, exc.exit_code, HTTP_STATUS.get(base, 500))
