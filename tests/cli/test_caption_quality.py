"""``captionkit caption --rerank / --qa*``: the flags reach the wrappers (store key, JSONL
``extra``, the summary), and mistakes are one line before the model loads."""

from __future__ import annotations

import json

import pytest

from helpers.cli import run_cli
from helpers.fakes import FakeCaptioner, registered
from helpers.images import write_image


def _caption(capsys, *args: str) -> tuple[int, str]:
    """``captionkit caption ARGS`` with the fake backend: (exit code, stderr)."""
    with registered():
        code, _, err = run_cli(capsys, "caption", *args)
    return code, err


def test_qa_records_checks_in_jsonl_and_counts_them_in_the_summary(tmp_path, monkeypatch, capsys):
    img = write_image(tmp_path / "red.png")
    out = tmp_path / "rows.jsonl"
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        "none",
        "--no-progress",
        "--qa-clip-model",
        "none",
        "--no-qa-objects",
        "--format",
        "jsonl",
        "--output",
        str(out),
    )
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["extra"]["qa"]["passed"] is True and row["extra"]["qa"]["flags"] == []
    assert "qa checked: 1" in err


def test_rerank_with_a_local_clip_orders_candidates_and_keys_the_store(
    tmp_path, monkeypatch, capsys, tiny_clip
):
    img = write_image(tmp_path / "red.png")
    out = tmp_path / "rows.jsonl"
    store = str(tmp_path / "s.sqlite")
    args = [str(img), "--model", "fake", "--store", store, "--no-progress", "-n", "2",
            "--format", "jsonl", "--output", str(out), "--no-sidecar"]  # fmt: skip
    code, err = _caption(capsys, *args)
    assert code == 0, err
    plain = json.loads(out.read_text())
    assert "rerank" not in (plain["extra"] or {})
    code, err = _caption(capsys, *args, "--rerank", f"clip:{tiny_clip}")
    assert code == 0, err
    row = json.loads(out.read_text())
    assert not row["cached"]  # re-ranked results have their own store key
    scores = [c["score"] for c in row["candidates"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert row["extra"]["rerank"]["model"] == str(tiny_clip)
    assert row["text"] == row["candidates"][0]["text"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--rerank", "clip"], "--num-captions"),
        (["--rerank", "bm25", "-n", "2"], "--rerank"),
        (["--rerank", "clip", "-n", "2", "--rerank-facts-weight", "2"], "--rerank-facts-weight"),
        (["--qa-action", "explode"], "--qa"),
        (["--qa-retry", "-1"], "--qa-retry"),
        (["--qa-clip-model", "none", "--qa-min-clipscore", "0.5"], "CLIPScore"),
    ],
)
def test_quality_flag_mistakes_are_one_line_before_the_model_loads(
    tmp_path, monkeypatch, capsys, extra, fragment
):
    img = write_image(tmp_path / "a.png")
    code, err = _caption(
        capsys,
        str(img),
        "--model",
        "fake",
        "--store",
        "none",
        "--no-progress",
        *extra,
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) in (1, 3), err  # one line, or click's usage + one line
    assert fragment in err and "Traceback" not in err
    assert not FakeCaptioner.instances
