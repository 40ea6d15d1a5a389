"""``captionkit serve`` as a command: its help, and one-line refusals before anything loads."""

from __future__ import annotations

import sys

import pytest

from captionkit.cli.main import run


def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_help_lists_the_flags_and_imports_no_server(capsys):
    code, out, _ = call(capsys, "serve", "--help")
    assert code == 0
    for flag in ("--host", "--port", "--model", "--token", "--root", "--allow-private-urls"):
        assert flag in out
    assert "CAPTIONKIT_TOKEN" in out


def test_without_the_serve_extra_one_line_names_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    code, _, err = call(capsys, "serve")
    assert code == 2
    assert err.strip() == (
        "captionkit: error: 'fastapi' is needed for captionkit serve but is not installed: "
        'pip install "captionkit[serve]"'
    )


def test_an_unknown_model_is_one_line_before_binding(capsys):
    code, _, err = call(capsys, "serve", "--model", "no-such-backend", "--port", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no-such-backend" in err and "Traceback" not in err


def test_root_must_be_a_folder(capsys, tmp_path):
    code, _, err = call(capsys, "serve", "--root", str(tmp_path / "missing"), "--port", "1")
    assert code == 2 and "--root" in err and "not a folder" in err
