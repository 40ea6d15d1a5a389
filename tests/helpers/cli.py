"""The command line run in-process, as the console script runs it."""

from __future__ import annotations

import sys

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``captionkit ARGS``: (exit code, stdout, stderr); output captured before is dropped."""
    from captionkit.cli.main import run

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["captionkit", *args])
        with pytest.raises(SystemExit) as exc:
            run()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
