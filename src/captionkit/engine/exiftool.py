"""The exiftool processes behind ``--metadata``: found and version-checked, kept running with
``-stay_open``, fed commands in exiftool's argument-file syntax.

Apart from :mod:`captionkit.engine.metadata` because this is how to drive one external tool
(its pipes, its markers, its quoting, its lifetime) and that is what changes when exiftool does;
what is written, and the rules for it, stay with the sink.

Arguments travel in argument-file syntax with the file name as raw bytes (``-charset
filename=utf8``), so non-UTF-8 names work (:func:`file_arg`). At the end of its input exiftool
does not exit, so on Linux each process runs under ``setpriv --pdeathsig TERM`` and dies with
captionkit, ``kill -9`` included (see :meth:`Exiftool.start`). exiftool comes from the system,
not from pip: a missing or too old one is one :class:`ExiftoolMissingError` line, checked
before any model loads (:func:`check_exiftool`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captionkit.errors import CaptionkitError, MissingDependencyError, OutputError

_INSTALL = (
    "apt install libimage-exiftool-perl (Debian/Ubuntu), brew install exiftool (macOS), "
    "or see https://exiftool.org"
)


class ExiftoolMissingError(MissingDependencyError):
    """exiftool is not installed (or too old): it comes from the system, not from pip."""

    def __init__(self, message: str) -> None:
        self.package = "exiftool"
        self.extra = ""
        CaptionkitError.__init__(self, message)


@functools.lru_cache(maxsize=4)
def _probe(exe: str) -> str:
    """exiftool's version, after checking it knows the IPTC alt-text tag (IPTC 2021.1)."""
    try:
        tags = subprocess.run(
            [exe, "-listw", "-XMP-iptcCore:all"], capture_output=True, text=True, timeout=60
        )
        version = subprocess.run([exe, "-ver"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExiftoolMissingError(
            f"exiftool at {exe} does not run ({exc}); reinstall it: {_INSTALL}"
        ) from None
    ver = version.stdout.strip() or "?"
    if "AltTextAccessibility" not in tags.stdout:
        raise ExiftoolMissingError(
            f"exiftool {ver} at {exe} is too old for --metadata (it lacks the IPTC 2021 "
            f"alt-text tag; 12.57 or newer works): {_INSTALL}"
        )
    return ver


def check_exiftool(exe: str | None = None) -> tuple[str, str]:
    """``(path, version)`` of a usable exiftool, or one :class:`ExiftoolMissingError` line.

    Called by :meth:`~captionkit.engine.metadata.MetadataSink.check`, that is before the model
    loads, so a missing tool never costs a caption."""
    found = exe or shutil.which("exiftool")
    if not found or not (os.path.isfile(found) and os.access(found, os.X_OK)):
        raise ExiftoolMissingError(
            f"exiftool is needed for --metadata but was not found on PATH: {_INSTALL}"
        )
    return found, _probe(found)


@functools.lru_cache(maxsize=1)
def _watchdog() -> tuple[str, ...]:
    """``setpriv --pdeathsig TERM`` where it exists (Linux), else nothing."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        ok = subprocess.run([setpriv, "--pdeathsig", "TERM", "true"], timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (setpriv, "--pdeathsig", "TERM") if ok else ()


class Exiftool:
    """One ``exiftool -stay_open`` process; :meth:`run` sends commands, returns each output.

    stderr is merged into stdout: exiftool writes a command's errors before it flushes that
    command's ``{readyN}``, so the text between two markers is exactly one command's output.
    Commands are written by a thread while this one reads, so neither pipe can fill up.
    """

    def __init__(self, exe: str, common: Sequence[str]) -> None:
        self.exe = exe
        self.common = list(common)
        self._proc: subprocess.Popen[bytes] | None = None
        self._seq = 0

    def start(self) -> subprocess.Popen[bytes]:
        """The running process, started (again) if needed, in the calling thread.

        At the end of its input exiftool does not exit: it polls for more, for ever. So that a
        ``kill -9`` of captionkit leaves no orphan, on Linux it runs under ``setpriv
        --pdeathsig TERM`` (util-linux): the kernel stops it when the thread that started it
        ends, which is why the sink starts its processes in the thread that drives it."""
        if self._proc is None or self._proc.poll() is not None:
            try:
                self._proc = subprocess.Popen(
                    [
                        *_watchdog(),
                        self.exe,
                        "-stay_open",
                        "True",
                        "-@",
                        "-",
                        "-common_args",
                        *self.common,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            except OSError as exc:
                raise ExiftoolMissingError(f"cannot start exiftool ({exc}): {_INSTALL}") from None
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def run(self, commands: Sequence[Sequence[bytes]]) -> list[str]:
        """Each command's output (stdout and stderr), in order."""
        if not commands:
            return []
        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        seqs = []
        chunks = []
        for args in commands:
            self._seq += 1
            seqs.append(self._seq)
            chunks.append(b"".join(a + b"\n" for a in args) + b"-execute%d\n" % self._seq)
        payload = b"".join(chunks)
        failed: list[BaseException] = []

        def feed() -> None:
            try:
                proc.stdin.write(payload)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError as exc:  # exiftool died; the reader sees EOF
                failed.append(exc)

        writer = threading.Thread(target=feed, name="ck-exiftool-feed", daemon=True)
        writer.start()
        outputs: list[str] = []
        lines: list[bytes] = []
        try:
            for seq in seqs:
                marker = b"{ready%d}" % seq
                while True:
                    line = proc.stdout.readline()
                    if not line:
                        raise OutputError(
                            "exiftool stopped unexpectedly while writing metadata; "
                            "captions made so far are kept in the results store: rerun to resume"
                        )
                    if line.rstrip(b"\r\n") == marker:
                        break
                    lines.append(line)
                # surrogateescape: a non-UTF-8 file name echoed back stays valid JSON text
                outputs.append(b"".join(lines).decode("utf-8", "surrogateescape"))
                lines = []
        finally:
            writer.join(timeout=60)
        return outputs

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(b"-stay_open\nFalse\n")
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def json_tags(output: str) -> dict[str, Any]:
    """The first object of ``exiftool -j`` output (warnings around it ignored); {} if none."""
    start, end = output.find("["), output.rfind("]")
    if start < 0 or end < start:
        return {}
    try:
        data = json.loads(output[start : end + 1])
    except ValueError:
        return {}
    return data[0] if data and isinstance(data[0], dict) else {}


def arg_line(text: str) -> bytes:
    """One argument-file line (``-TAG=VALUE``) as bytes; a line break in it would split it."""
    return text.encode("utf-8", "replace")


def file_arg(path: Path) -> bytes | None:
    """The file name as exiftool's argument file needs it: raw bytes, one line. A name with a
    line break goes as a C string (``#[CSTR]``); that syntax mangles ``$`` and ``@``, so a name
    with both cannot be passed (None)."""
    raw = os.fsencode(os.path.abspath(path))
    if b"\n" not in raw and b"\r" not in raw:
        return raw
    if b"$" in raw or b"@" in raw:
        return None
    escaped = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return b"#[CSTR]" + escaped
