"""End-to-end: the `captionkit` command on real files with a tiny saved model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from captionkit.cli.main import app
from helpers.images import write_image

pytest.importorskip("transformers")

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_folder_sidecars_jsonl_and_bad_inputs(photo_dir, tiny_vit_gpt2, tmp_path):
    store = tmp_path / "store.sqlite"
    out = tmp_path / "captions.jsonl"
    result = invoke(
        "caption",
        str(photo_dir),
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--store",
        str(store),
        "--format",
        "jsonl",
        "--output",
        str(out),
        "--sidecar",
        "--max-new-tokens",
        "6",
    )
    assert result.exit_code == 1, result.output  # some inputs are bad
    for name in ("red.txt", "blue.txt", "sub/green.txt"):
        assert (photo_dir / name).read_text().strip()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {Path(r["source"]).name: r for r in records}
    assert set(by_name) == {
        "red.jpg",
        "blue.png",
        "green.jpg",
        "empty.jpg",
        "truncated.jpg",
        "text.jpg",
        "tiny.png",
        "huge.png",
    }
    errors = {k: v["error"] for k, v in by_name.items() if v["error"]}
    assert set(errors) == {"empty.jpg", "truncated.jpg", "text.jpg", "tiny.png", "huge.png"}
    assert "empty" in errors["empty.jpg"]
    assert "pixel limit" in errors["huge.png"]
    assert "too small" in errors["tiny.png"]
    assert not list((photo_dir / "bad").glob("*.txt"))  # no sidecar for a failure
    assert "3 captioned" in result.output and "5 failed" in result.output

    # Rerun: nothing recomputed, every good image comes from the store, file rewritten whole.
    again = invoke(
        "caption",
        str(photo_dir),
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--store",
        str(store),
        "--format",
        "jsonl",
        "--output",
        str(out),
        "--sidecar",
        "--max-new-tokens",
        "6",
        "--existing",
        "overwrite",
    )
    assert "0 captioned, 3 from the store" in again.output
    assert len(out.read_text().splitlines()) == 8


def test_prefix_suffix_trigger_and_output_dir(tmp_path, tiny_vit_gpt2):
    src = tmp_path / "in"
    write_image(src / "a" / "one.jpg")
    dest = tmp_path / "captions"
    result = invoke(
        "caption",
        str(src),
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--store",
        "none",
        "--output-dir",
        str(dest),
        "--trigger-word",
        "ohwx",
        "--prefix",
        "[",
        "--suffix",
        "]",
        "--extension",
        ".caption",
        "--max-new-tokens",
        "5",
    )
    assert result.exit_code == 0, result.output
    text = (dest / "a" / "one.caption").read_text().strip()
    assert text.startswith("[ohwx, ") and text.endswith("]")
    assert not (src / "a" / "one.txt").exists()


def test_existing_sidecar_policies(tmp_path, tiny_vit_gpt2):
    img = write_image(tmp_path / "p.jpg")
    side = tmp_path / "p.txt"
    side.write_text("mine\n")
    args = ["caption", str(img), "--model", f"hf:{tiny_vit_gpt2}", "--max-new-tokens", "4"]
    skipped = invoke(*args)
    assert "1 skipped" in skipped.output and side.read_text() == "mine\n"
    invoke(*args, "--existing", "append")
    assert side.read_text().startswith("mine ") and len(side.read_text()) > 6
    invoke(*args, "--existing", "overwrite")
    assert not side.read_text().startswith("mine")


def test_stdin_list_to_jsonl_stdout(tmp_path, tiny_vit_gpt2):
    paths = [write_image(tmp_path / f"{i}.png", color=(i * 40, 0, 0)) for i in range(3)]
    result = invoke(
        "caption",
        "-",
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--format",
        "jsonl",
        "--max-new-tokens",
        "4",
        input="\n".join(map(str, paths)) + "\n",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [Path(r["source"]).name for r in lines] == ["0.png", "1.png", "2.png"]
    assert not list(tmp_path.glob("*.txt"))  # --format to stdout means no sidecars


def test_seed_cli_flags(tmp_path, tiny_vit_gpt2):
    folder = tmp_path / "d"
    write_image(folder / "x.jpg")
    single = write_image(tmp_path / "y.jpg")
    result = invoke(
        "caption",
        "--image-dir",
        str(folder),
        "--image-file",
        str(single),
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--max-new-tokens",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert (folder / "x.txt").exists() and (tmp_path / "y.txt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["caption", "/no/such/dir", "--model", "hf:x/y"], "no such file or folder"),
        (["caption", ".", "--model", "nosuch:thing"], "unknown backend 'nosuch'"),
        (["caption", ".", "--style", "haiku"], "unknown style"),
        (["caption", ".", "--model", "hf:nobody/missing-model-xyz"], "hf:/path/to/dir"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    write_image(tmp_path / "a.jpg")  # something to caption: the error must be the model's
    proc = subprocess.run(
        [sys.executable, "-m", "captionkit.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_backends_and_help_are_fast():
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "captionkit.cli.main", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "caption" in proc.stdout
    assert time.perf_counter() - start < 5  # generous for CI; measured ~0.4 s
    listing = invoke("backends", "--json")
    names = {b["name"] for b in json.loads(listing.stdout)}
    assert {"hf", "grounded", "openai"} <= names


def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_vit_gpt2):
    photos = tmp_path / "photos"
    for i in range(60):
        write_image(photos / f"{i:03d}.png", color=(i * 4, 255 - i * 4, 90))
    store = tmp_path / "store.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "captionkit.cli.main",
        "caption",
        str(photos),
        "--model",
        f"hf:{tiny_vit_gpt2}",
        "--store",
        str(store),
        "--batch-size",
        "1",
        "--max-new-tokens",
        "40",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(photos.glob("*.txt"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(photos.glob("*.txt")))
    assert 5 <= done_before < 60, "the run must be killed mid-way"
    assert not list(photos.glob(".*.tmp"))  # atomic sidecars: no half-written file

    out = tmp_path / "all.jsonl"
    rerun = subprocess.run(
        [*cmd, "--format", "jsonl", "--output", str(out), "--sidecar", "--existing", "overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(photos.glob("*.txt"))) == 60
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 60 and len({r["source"] for r in records}) == 60
    assert sum(r["cached"] for r in records) >= done_before
    import sqlite3

    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 60


def test_dry_run_estimates_without_captioning(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / f"{i}.jpg", size=(800, 600))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-sent")
    result = invoke(
        "caption",
        str(tmp_path),
        "--model",
        "openai:gpt-4o-mini",
        "--dry-run",
        "-o",
        "price_per_1k_input=0.001",
        "-o",
        "price_per_1k_output=0.002",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 images: ~") and "cost ~" in result.stdout
    assert not list(tmp_path.glob("*.txt"))  # nothing captioned, nothing written


# -- issue #20: tag-rule flags and caption layouts (fake backends, in-process) -------------------


def fake_image(path, colour="red"):
    from helpers.fakes import write_image as write

    return write(path, colour)


def _cli(capsys, *args: str) -> tuple[int, str]:
    from captionkit.cli.main import run

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["captionkit", *args])
        with pytest.raises(SystemExit) as exc:
            run()
    return exc.value.code, capsys.readouterr().err  # type: ignore[return-value]


def _tagging_fake():
    from typing import ClassVar

    from captionkit.types import Candidate, CaptionOutput
    from helpers.fakes import FakeCaptioner

    class Tagging(FakeCaptioner):
        name: ClassVar[str] = "tagging"

        def _caption(self, inputs, request, n):
            with self._lock:
                self.in_flight -= len(inputs)
            rows = [["solid", 0.5, "general"], [f"{inputs[0]}_fill", 0.9, "general"],
                    ["watermark", 0.8, "general"], ["square", 0.7, "general"]]  # fmt: skip
            return [
                CaptionOutput([Candidate(", ".join(r[0] for r in rows))], extra={"tags": rows})
                for _ in inputs
            ]

    return Tagging


def test_tag_rule_flags_shape_a_taggers_output(tmp_path, capsys):
    from helpers.fakes import registered

    fake_image(tmp_path / "a.png", (220, 20, 20))
    base = ("caption", str(tmp_path), "-m", "tagging", "--store", "none", "--no-progress")
    with registered(_tagging_fake()):
        code, err = _cli(capsys, *base, "--exclude-tags", "water*", "--max-tags", "2")
        assert code == 0, err
        assert (tmp_path / "a.txt").read_text() == "red fill, square\n"  # by score, cut at 2
        code, err = _cli(
            capsys, *base, "--existing", "overwrite", "--always-first", "solid",
            "--replace-tags", "square=box", "--keep-underscores", "--tag-separator", " | ",
            "--trigger-word", "sks",
        )  # fmt: skip
        assert code == 0, err
        assert (tmp_path / "a.txt").read_text() == "sks | solid | red_fill | watermark | box\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tag-sort", "random"], "tag rules: sort"),
        (["--replace-tags", "oops"], "--replace-tags 'oops': write OLD=NEW"),
        (["--captions-layout", "files"], "--captions-layout"),
    ],
)
def test_tag_and_layout_flag_mistakes_are_one_line(tmp_path, capsys, args, message):
    from helpers.fakes import FakeCaptioner, registered

    fake_image(tmp_path / "a.png")
    with registered():
        code, err = _cli(capsys, "caption", str(tmp_path), "-m", "fake", "--store", "none", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert FakeCaptioner.instances == [] and not (tmp_path / "a.txt").exists()


def test_max_tags_zero_is_a_usage_error(capsys):
    code, err = _cli(capsys, "caption", "x.png", "--max-tags", "0")
    assert code == 2 and "--max-tags" in err


def test_numbered_layout_from_the_cli_skips_and_resumes(tmp_path, capsys):
    from helpers.fakes import FakeCaptioner, registered

    fake_image(tmp_path / "a.png", "red")
    fake_image(tmp_path / "b.png", "blue")
    store = str(tmp_path / "s.sqlite")
    args = ("caption", str(tmp_path), "-m", "fake", "-n", "2", "--captions-layout", "numbered",
            "--store", store, "--no-progress")  # fmt: skip
    with registered():
        code, err = _cli(capsys, *args)
        assert code == 0, err
        assert (tmp_path / "a.txt").read_text() == "a red image\n"
        assert (tmp_path / "a.1.txt").read_text() == "a red image again\n"
        (tmp_path / "b.1.txt").unlink()  # as if killed between the two files
        FakeCaptioner.instances.clear()
        code, err = _cli(capsys, *args)
        assert code == 0 and "1 from the store" in err and "1 skipped" in err, err
        assert (tmp_path / "b.1.txt").read_text() == "a blue image again\n"
        assert FakeCaptioner.instances[0].calls == []  # nothing recomputed
