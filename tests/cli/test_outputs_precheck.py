"""Outputs that cannot be written stop the command with one line, exit 2, before the model
loads (issue #11 item 3): sidecars in a read-only folder, a bad --output-dir or --output,
``facts --draw`` to a bad place or format, ``eval --output`` without what it needs.

Runs go through ``captionkit.cli.main.run`` in-process with the fake backend, so "before the
model loads" is checked exactly: no FakeCaptioner was ever built.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from captionkit.cli.main import run
from helpers.fakes import FakeCaptioner, registered, write_image

FAKE = ("--model", "fake", "--store", "none", "--no-progress")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``captionkit ARGS`` as the console script does: (exit code, stderr)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp, registered(), pytest.raises(SystemExit) as exc:
        mp.setattr(sys, "argv", ["captionkit", *args])
        run()
    return exc.value.code, capsys.readouterr().err  # type: ignore[return-value]


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("captionkit: error: ")
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    write_image(folder / "red.jpg", "red")
    return folder


def deny_files_in(monkeypatch, folder: Path) -> None:
    """Creating a file in ``folder`` fails as in a read-only folder (as root too)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_unwritable_photo_folder_stops_before_the_model_loads(capsys, photos, monkeypatch):
    deny_files_in(monkeypatch, photos)
    code, err = cli(capsys, "caption", str(photos), *FAKE)
    one_line_error(code, err, str(photos), "Permission denied", "--output-dir", "--no-sidecar")
    assert FakeCaptioner.instances == []
    # the same folder is fine when sidecars go elsewhere or nowhere
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--output-dir", str(photos.parent / "c"))
    assert code == 0, err
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--no-sidecar")
    assert code == 0, err


@pytest.mark.skipif(ROOT, reason="root can write into a mode-555 folder")
def test_read_only_photo_folder_for_real(capsys, photos):
    photos.chmod(0o555)
    try:
        code, err = cli(capsys, "caption", str(photos / "red.jpg"), *FAKE)
    finally:
        photos.chmod(0o755)
    one_line_error(code, err, "cannot write sidecars", str(photos))
    assert FakeCaptioner.instances == []


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("afile/captions", "Not a directory"),  # a file where a folder must be created
        ("/proc/captionkit-test-captions", "No such file or directory"),
    ],
)
def test_output_dir_that_cannot_be_created(capsys, photos, tmp_path, where, fragment):
    (tmp_path / "afile").write_text("x")
    target = where if where.startswith("/") else str(tmp_path / where)
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--output-dir", target)
    one_line_error(code, err, "--output-dir", target, fragment)
    assert FakeCaptioner.instances == []


def test_output_dir_that_does_not_exist_yet_is_created(capsys, photos, tmp_path):
    target = tmp_path / "new" / "deeper"
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--output-dir", str(target))
    assert code == 0, err
    assert (target / "red.txt").read_text().strip() == "a red image"


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("/proc/captionkit-test.jsonl", "No such file or directory"),
        ("afile/out.jsonl", "Not a directory"),
        ("adir", "Is a directory"),
    ],
)
def test_output_file_that_cannot_be_written(capsys, photos, tmp_path, where, fragment):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    target = where if where.startswith("/") else str(tmp_path / where)
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--format", "jsonl", "-O", target)
    one_line_error(code, err, "--output", target, fragment)
    assert FakeCaptioner.instances == []
    assert not (photos / "red.txt").exists()  # nothing half-done


def test_dry_run_writes_nothing_so_checks_nothing(capsys, photos, monkeypatch):
    deny_files_in(monkeypatch, photos)
    code, err = cli(capsys, "caption", str(photos), *FAKE, "--dry-run")
    assert code == 0, err


# -- facts --draw ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draw", "fragment"),
    [
        ("boxes.xyz", "Pillow cannot save '.xyz'"),
        ("boxes", "Pillow cannot save '(no extension)'"),
        ("missing/boxes.png", "does not exist"),
        ("/proc/captionkit-boxes.png", "cannot create files in /proc"),
    ],
)
def test_facts_draw_to_a_bad_place_stops_before_the_detector(
    capsys, monkeypatch, tmp_path, draw, fragment
):
    image = write_image(tmp_path / "red.jpg", "red")
    target = draw if draw.startswith("/") else str(tmp_path / draw)
    import captionkit.captioners.registry as registry

    built: list[object] = []
    monkeypatch.setattr(registry, "create", lambda *a, **k: built.append(a))
    code, err = cli(capsys, "facts", str(image), "--draw", target)
    one_line_error(code, err, "--draw", fragment)
    assert built == []


# -- eval --output ----------------------------------------------------------------------------


@pytest.fixture
def refs_and_candidates(tmp_path) -> tuple[Path, Path]:
    import json

    write_image(tmp_path / "images" / "a.jpg", "green")
    refs = tmp_path / "references.json"
    refs.write_text(json.dumps({"a.jpg": ["a dog on grass", "a dog runs"]}))
    cands = tmp_path / "mine.jsonl"
    cands.write_text(json.dumps({"image": "a.jpg", "caption": "a dog"}) + "\n")
    return tmp_path, cands


def _no_scoring(monkeypatch) -> list[object]:
    import captionkit.eval.evaluate as evaluate

    calls: list[object] = []
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: calls.append(a))
    return calls


def test_eval_unknown_report_extension_fails_before_scoring(
    capsys, monkeypatch, refs_and_candidates
):
    refs, cands = refs_and_candidates
    calls = _no_scoring(monkeypatch)
    code, err = cli(capsys, "eval", str(refs), "-c", str(cands), "--output", "r.pdf")
    one_line_error(code, err, "--output must end in .html, .md or .json")
    assert calls == []


def test_eval_html_report_without_matplotlib_fails_before_scoring(
    capsys, monkeypatch, refs_and_candidates, tmp_path
):
    refs, cands = refs_and_candidates
    calls = _no_scoring(monkeypatch)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "report.html"
    code, err = cli(capsys, "eval", str(refs), "-c", str(cands), "--output", str(out))
    one_line_error(code, err, "matplotlib", 'pip install "captionkit[eval]"', ".json")
    assert calls == [] and not out.exists()


def test_eval_report_in_an_unwritable_place_fails_before_scoring(
    capsys, monkeypatch, refs_and_candidates
):
    refs, cands = refs_and_candidates
    calls = _no_scoring(monkeypatch)
    out = "/proc/captionkit-report.json"
    code, err = cli(capsys, "eval", str(refs), "-c", str(cands), "--output", out)
    one_line_error(code, err, "--output", "cannot create files in /proc")
    assert calls == []


# -- data clean --report, train --output --------------------------------------------------------


def test_data_clean_report_in_an_unwritable_place_fails_before_the_scan(
    capsys, monkeypatch, photos
):
    import captionkit.train.clean as cleaning

    scans: list[object] = []
    monkeypatch.setattr(cleaning, "scan", lambda *a, **k: scans.append(a))
    code, err = cli(capsys, "data", "clean", str(photos), "--report", "/proc/ck-report.csv")
    one_line_error(code, err, "--report", "cannot create files in /proc")
    assert scans == []


def test_train_output_under_a_file_fails_before_training(capsys, monkeypatch, tmp_path):
    import captionkit.train.loop as loop  # imports no torch: the run below is replaced

    runs: list[object] = []
    monkeypatch.setattr(loop, "run", lambda *a, **k: runs.append(a))
    (tmp_path / "afile").write_text("x")
    target = str(tmp_path / "afile" / "run")
    code, err = cli(capsys, "train", "--data", str(tmp_path), "--encoder", "e", "--decoder", "d",
                    "--output", target)  # fmt: skip
    one_line_error(code, err, "--output", "Not a directory")
    assert runs == []
