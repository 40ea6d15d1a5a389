"""``--root DIR``: the images under one folder and their sidecars, never anything outside it.

Every path a client sends is relative to the root and goes through :func:`resolve_image`:
absolute paths, ``..``, NUL bytes, hidden parts and symlinks that lead out of the root are
refused (the path is resolved and must stay ``is_relative_to`` the resolved root). Sidecar
names follow the CLI's rule (:class:`captionkit.engine.sinks.SidecarSink`), are checked the
same way, and are written with the CLI's atomic write, so a crash never leaves half a caption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from captionkit.engine.sinks import SidecarSink, atomic_write_text
from captionkit.errors import InputError, OutputError
from captionkit.inputs.sources import Source, looks_like_image, walk_folder

#: Sidecars larger than this are not shown or accepted (a caption, not a document).
MAX_SIDECAR_BYTES = 64 * 1024


class OutsideRoot(InputError):
    """A path that leads out of ``--root`` (``..``, absolute, a symlink out): 403."""


class NotUnderRoot(InputError):
    """A path under ``--root`` that is no image there: 404."""


@dataclass
class RootFolder:
    root: Path
    extension: str = ".txt"

    def __post_init__(self) -> None:
        self.root = self.root.expanduser().resolve(strict=True)
        self.sinks = SidecarSink(extension=self.extension, existing="overwrite")

    # -- the guard ----------------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        return path == self.root or path.is_relative_to(self.root)

    def resolve_image(self, rel: str) -> Path:
        """The real path of the image ``rel`` names under the root, or :class:`OutsideRoot`."""
        if not rel or "\x00" in rel or "\\" in rel:
            raise OutsideRoot(f"bad path: {rel!r}")
        parts = PurePosixPath(rel)
        if parts.is_absolute() or any(p in ("..", "") or p.startswith(".") for p in parts.parts):
            raise OutsideRoot(f"{rel}: paths are relative to --root, without '..' or hidden parts")
        candidate = self.root.joinpath(*parts.parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise NotUnderRoot(f"{rel}: no such image under --root") from None
        if not self._inside(real):
            raise OutsideRoot(f"{rel}: leads outside --root")
        if not real.is_file() or not looks_like_image(real):
            raise NotUnderRoot(f"{rel}: not an image")
        return candidate

    def sidecar_for(self, image: Path) -> Path:
        """The sidecar of ``image`` (the CLI's naming rule), refused if it leads outside."""
        target = self.sinks.path_for(Source(key=str(image), path=image))
        assert target is not None
        real = target.resolve(strict=False)  # follows a symlinked sidecar to where it points
        if not self._inside(real) or not self._inside(target.parent.resolve()):
            raise OutsideRoot(f"{self.rel(image)}: its sidecar would be outside --root")
        return target

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- reading and writing ------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        """Every image under the root (hidden ones and symlinks out of it left out) with its
        sidecar text (None when it has none)."""
        found = []
        for source in walk_folder(self.root, warn=False):
            assert source.path is not None
            try:
                if not self._inside(source.path.resolve(strict=True)):
                    continue
                sidecar = self.sidecar_for(source.path)
            except (OSError, OutsideRoot):
                continue
            found.append(
                {
                    "path": self.rel(source.path),
                    "sidecar": self.rel(sidecar),
                    "caption": self.read_sidecar(sidecar),
                }
            )
        return found

    @staticmethod
    def read_sidecar(path: Path) -> str | None:
        try:
            if not path.is_file() or path.stat().st_size > MAX_SIDECAR_BYTES:
                return None
            return path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None

    def save(self, rel: str, text: str) -> dict[str, Any]:
        """Write the sidecar of image ``rel`` atomically; returns its listing entry."""
        image = self.resolve_image(rel)
        target = self.sidecar_for(image)
        clean = " ".join(text.split("\n")).strip()
        if len(clean.encode()) > MAX_SIDECAR_BYTES:
            raise InputError("caption too long")
        if target.is_symlink():  # os.replace would swap the link itself; say so instead
            raise OutsideRoot(f"{self.rel(target)}: is a symlink; not overwritten")
        try:
            atomic_write_text(target, clean + "\n")
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.rel(target)}: {exc.strerror or type(exc).__name__}"
            ) from None
        return {"path": self.rel(image), "sidecar": self.rel(target), "caption": clean}

    def has_sidecar(self, image: Path) -> bool:
        return os.path.lexists(self.sidecar_for(image))
