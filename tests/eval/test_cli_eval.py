"""``captionkit eval`` through typer's CliRunner: files in, table and reports out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from captionkit.cli.eval import command
from captionkit.types import CaptionResult
from helpers.fakes import registered


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(command)
    app.command("noop")(lambda: None)  # keep "eval" a subcommand
    return app


def _cands(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.jsonl"
    rows = [{"image": n, "caption": text} for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_candidates_file_to_html_and_json(app, tiny_dataset: Path, tmp_path: Path) -> None:
    cands = _cands(tmp_path, "a dog runs on the grass")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["eval", str(tiny_dataset), "-c", str(cands), "-c", f"other={cands}", "--metrics",
         "bleu,rouge,cider,chair,stats", "--output", str(out), "--json", "--bootstrap", "50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert [s["name"] for s in data["systems"]] == ["mine", "other"]
    assert data["systems"][0]["metrics"]["CIDEr-D"] > 0
    assert out.exists() and "data:image/png" in out.read_text(encoding="utf-8")


def test_model_uses_the_public_api(app, tiny_dataset: Path, monkeypatch) -> None:
    calls = []

    def fake_caption(paths, model, **kwargs):
        calls.append((model, kwargs))
        return [
            CaptionResult(source=p, text=None if p.endswith("d.jpg") else "a dog", cached=True,
                          error="boom" if p.endswith("d.jpg") else None)
            for p in paths
        ]  # fmt: skip

    import captionkit.api

    monkeypatch.setattr(captionkit.api, "caption", fake_caption)
    with registered():  # --model names are checked before any work: "fake" must exist
        result = CliRunner().invoke(
            app, ["eval", str(tiny_dataset), "--model", "fake", "--metrics", "bleu,cider"]
        )
    assert result.exit_code == 0, result.output
    assert calls[0][0] == "fake" and calls[0][1]["progress"] is True
    assert "1 image(s) failed" in result.output and "fake" in result.output


def test_nothing_to_score_is_an_error(app, tiny_dataset: Path) -> None:
    from captionkit.errors import ConfigError

    result = CliRunner().invoke(app, ["eval", str(tiny_dataset)])
    assert isinstance(result.exception, ConfigError)


def test_human_holds_out_the_first_reference(app, tiny_dataset: Path, tmp_path: Path) -> None:
    cands = _cands(tmp_path, "a dog runs on the grass")
    result = CliRunner().invoke(
        app,
        ["eval", str(tiny_dataset), "-c", str(cands), "--human", "--metrics", "bleu,cider",
         "--json", "--bootstrap", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    human = data["systems"][0]
    assert human["name"] == "human"
    assert human["per_image"]["a.jpg"]["caption"] == "A dog runs on the grass ."
    assert human["metrics"]["BLEU-1"] < 1.0  # scored against the other references only


def test_option_flags_reach_the_backend_of_model_runs(app, tiny_dataset: Path, monkeypatch) -> None:
    """``-o KEY=VALUE`` means --option, as in ``captionkit caption``, for every --model run."""
    calls = []

    def fake_caption(paths, model, **kwargs):
        calls.append((model, kwargs))
        return [CaptionResult(source=p, text="a dog") for p in paths]

    import captionkit.api

    monkeypatch.setattr(captionkit.api, "caption", fake_caption)
    result = CliRunner().invoke(
        app,
        ["eval", str(tiny_dataset), "--model", "grounded", "-o", "conf=0.5",
         "--option", "palette=css", "--metrics", "bleu", "--bootstrap", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls[0][1]["conf"] == 0.5 and calls[0][1]["palette"] == "css"


def test_bad_option_of_a_later_model_fails_before_any_captioning(
    app, tiny_dataset: Path, monkeypatch
) -> None:
    from captionkit.errors import ConfigError

    calls = []
    import captionkit.api

    monkeypatch.setattr(captionkit.api, "caption", lambda *a, **k: calls.append(a))
    result = CliRunner().invoke(
        app, ["eval", str(tiny_dataset), "-m", "grounded", "-m", "hf:x/y", "-o", "conf=0.5"]
    )
    assert isinstance(result.exception, ConfigError) and calls == []
    assert "conf" in str(result.exception) and "hf:x/y" in str(result.exception)


def test_old_dash_o_report_path_explains_the_change(app, tiny_dataset: Path, tmp_path) -> None:
    from captionkit.errors import ConfigError

    cands = _cands(tmp_path, "a dog")
    result = CliRunner().invoke(
        app, ["eval", str(tiny_dataset), "-c", str(cands), "-o", str(tmp_path / "r.html")]
    )
    assert isinstance(result.exception, ConfigError)
    assert "--output" in str(result.exception) and not (tmp_path / "r.html").exists()


def test_options_without_a_model_are_an_error(app, tiny_dataset: Path, tmp_path) -> None:
    from captionkit.errors import ConfigError

    cands = _cands(tmp_path, "a dog")
    result = CliRunner().invoke(app, ["eval", str(tiny_dataset), "-c", str(cands), "-o", "a=1"])
    assert isinstance(result.exception, ConfigError) and "--model" in str(result.exception)


def test_system_names_with_brackets_print_as_given(app, tiny_dataset: Path, tmp_path) -> None:
    cands = _cands(tmp_path, "a dog runs on the grass")
    result = CliRunner().invoke(
        app,
        ["eval", str(tiny_dataset), "-c", f"run[bold]={cands}", "-c", f"b[/]={cands}",
         "--metrics", "bleu,cider", "--bootstrap", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "run[bold]" in result.stdout and "b[/]" in result.stdout
