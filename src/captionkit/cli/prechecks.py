"""Checks, run before any work, that a command's file outputs can be written.

A command that computes for minutes and then cannot save its result wastes all of it; these
checks turn the common mistakes (a missing or read-only folder, ``/proc``, a folder where a
file is meant, an image extension Pillow cannot write) into one line before the work starts.
``captionkit caption`` checks its sinks with :func:`captionkit.engine.sinks.check_writable`;
the other commands' outputs (``facts --draw``, ``eval --output``, ``data clean --report``,
``train --output``) are checked here, with the same probe.
"""

from __future__ import annotations

from pathlib import Path

from captionkit.errors import OutputError


def folder_problem(folder: Path, *, create: bool = True) -> str | None:
    """Why no file can be written in ``folder``, or None when one can.

    ``create``: a missing folder is fine when the nearest existing folder above it is
    writable (it will be made). The probe creates and removes a real file, since permission
    bits say nothing for root, a read-only mount or ``/proc``.
    """
    from captionkit.cli.display import plain
    from captionkit.engine.sinks import probe_folder

    folder = folder.expanduser()
    if not create and not folder.is_dir():
        return (
            f"{plain(folder)} is not a folder"
            if folder.exists()
            else f"{plain(folder)} does not exist"
        )
    try:
        probe_folder(folder)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if not exc.filename:
            return why
        where = Path(exc.filename)
        if where.name.startswith(".captionkit-probe-"):  # the probe file: name its folder
            return f"cannot create files in {plain(where.parent)} ({why})"
        return f"{plain(where)}: {why}"
    return None


def check_output_file(path: str | Path, flag: str = "--output") -> None:
    """``path`` names a file (not a folder) whose folder exists or can be created."""
    from captionkit.cli.display import plain

    target = Path(path).expanduser()
    problem = "it is a folder; name a file" if target.is_dir() else folder_problem(target.parent)
    if problem:
        raise OutputError(f"cannot write {flag} {plain(path)}: {problem}")


def check_output_dir(path: str | Path, flag: str = "--output") -> None:
    """``path`` is a folder that exists or can be created, and files can be written in it."""
    from captionkit.cli.display import plain

    problem = folder_problem(Path(path))
    if problem:
        raise OutputError(f"cannot write to {flag} {plain(path)}: {problem}")


def check_image_output(path: str | Path, flag: str = "--draw") -> None:
    """Pillow can write ``path``'s format (from its extension), in a folder that exists."""
    from PIL import Image

    from captionkit.cli.display import plain

    target = Path(path).expanduser()
    Image.init()
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(
            f"cannot write {flag} {plain(path)}: Pillow cannot save "
            f"'{target.suffix or '(no extension)'}' images; use .png, .jpg or .webp"
        )
    problem = (
        "it is a folder; name a file"
        if target.is_dir()
        else folder_problem(target.parent, create=False)  # Pillow makes no folders
    )
    if problem:
        raise OutputError(f"cannot write {flag} {plain(path)}: {problem}")
