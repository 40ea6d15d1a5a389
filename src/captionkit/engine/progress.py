"""Progress reporting: a rich bar with rate and ETA on a terminal, silence elsewhere.

The engine talks to a :class:`Progress` protocol only, so the API (no bar), the CLI (rich)
and the HTTP server (counters) each choose their own.
"""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    def set_total(self, total: int | None) -> None: ...
    def advance(self, n: int = 1, *, failed: int = 0, cached: int = 0) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def set_total(self, total: int | None) -> None:
        pass

    def advance(self, n: int = 1, *, failed: int = 0, cached: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """A bar on stderr: done/total, images per second, ETA, failures and cache hits."""

    def __init__(self, description: str = "captioning") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._failed = 0
        self._cached = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[notes]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=None, rate="", notes="")
        self._progress.start()

    def set_total(self, total: int | None) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, n: int = 1, *, failed: int = 0, cached: int = 0) -> None:
        self._failed += failed
        self._cached += cached
        task = self._progress.tasks[0]
        speed = task.speed
        notes = []
        if self._cached:
            notes.append(f"{self._cached} cached")
        if self._failed:
            notes.append(f"[red]{self._failed} failed[/red]")
        self._progress.update(
            self._task,
            advance=n,
            rate=f"{speed:.2f} img/s" if speed else "",
            notes=", ".join(notes),
        )

    def close(self) -> None:
        self._progress.stop()


def make_progress(enabled: bool | None) -> Progress:
    """``None`` means: a bar when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress() if enabled else NullProgress()
