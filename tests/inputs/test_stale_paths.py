"""A path that vanished between listing and reading fails alone (issue #11, item 8).

`find photos -name '*.png' | captionkit caption -` while another process deletes a file: the
deleted file is that image's failure, every other image is captioned, the exit code is 1.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from captionkit.cli.main import app
from captionkit.engine.runner import Runner, RunOptions
from captionkit.errors import CaptionkitError
from captionkit.inputs.sources import iter_sources
from captionkit.types import CaptionRequest
from helpers.fakes import FakeCaptioner, caption_for, registered, write_image


def _listing(tmp_path: Path) -> tuple[str, Path]:
    red = write_image(tmp_path / "red.png", "red")
    gone = write_image(tmp_path / "gone.png", "green")
    blue = write_image(tmp_path / "blue.png", "blue")
    listing = f"{red}\n{gone}\n{blue}\n"
    gone.unlink()  # deleted after `find` listed it
    return listing, gone


def test_engine_turns_a_vanished_stdin_path_into_one_failure(tmp_path):
    listing, gone = _listing(tmp_path)
    runner = Runner(FakeCaptioner(), CaptionRequest(), options=RunOptions(collect=True, workers=2))
    summary = runner.run(iter_sources(["-"], stdin=io.StringIO(listing)))
    assert summary.captioned == 2 and summary.exit_code == 1
    assert summary.failures == [(str(gone), "no such file")]
    assert [r.text for r in summary.results] == [caption_for("red"), None, caption_for("blue")]


def test_vanished_file_in_a_walked_folder_fails_alone(tmp_path):
    write_image(tmp_path / "a_red.png", "red")
    gone = write_image(tmp_path / "b_gone.png", "green")
    write_image(tmp_path / "c_blue.png", "blue")
    sources = iter_sources([str(tmp_path)])
    first = next(sources)  # the folder is listed; a file is deleted before it is read

    def rest():
        yield first
        gone.unlink()
        yield from sources

    summary = Runner(FakeCaptioner(), CaptionRequest(), options=RunOptions(workers=1)).run(rest())
    assert summary.captioned == 2
    assert summary.failures == [(str(gone), "no such file")]


def test_cli_stdin_list_with_a_deleted_file_captions_the_rest(tmp_path):
    listing, _ = _listing(tmp_path)
    with registered():
        result = CliRunner().invoke(
            app,
            ["caption", "-", "--model", "fake", "--store", "none", "--format", "jsonl"],
            input=listing,
        )
    # Through the console script a CaptionkitError escaping here is "exit 2, nothing done".
    assert not isinstance(result.exception, CaptionkitError), result.exception
    assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    by_name = {Path(r["source"]).name: r for r in rows}
    assert by_name["red.png"]["text"] == caption_for("red")
    assert by_name["blue.png"]["text"] == caption_for("blue")
    assert by_name["gone.png"]["error"] == "no such file"
