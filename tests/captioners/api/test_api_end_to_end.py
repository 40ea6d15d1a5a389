"""Whole runs through the engine: the Python API and the CLI against fake provider servers."""

from __future__ import annotations

import json

from PIL import Image
from provider_fakes import KEY, Reply, openai_error
from typer.testing import CliRunner

from captionkit.api import caption, load_captioner
from captionkit.captioners.rewrite import RewriteCaptioner
from captionkit.llm.openai_compat import OpenAICompatibleLLM


def photos(folder, names=("red", "blue", "green")):
    for name in names:
        Image.new("RGB", (40, 30), name).save(folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def test_python_api_folder_with_a_failing_image(fake_server, tmp_path):
    server = fake_server("openai")
    server.queue(*[Reply(500, openai_error("The server had an error", "server_error"))] * 2)
    results = caption(
        photos(tmp_path),
        model="openai:gpt-4o-mini",
        style="alt-text",
        store=False,
        api_key=KEY,
        base_url=server.base_url,
        max_retries=1,
        concurrency=1,
    )
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in results}
    assert by_name["broken.jpg"].error  # decode failure, never sent
    failed = [r for r in results if r.error and "HTTP 500 after 1 retries" in r.error]
    ok = [r for r in results if r.ok]
    assert len(failed) == 1 and len(ok) == 2
    assert ok[0].backend == "openai" and ok[0].model == "gpt-4o-mini"
    assert ok[0].extra["usage"] == {"input_tokens": 120, "output_tokens": 12}
    assert KEY not in json.dumps([r.to_dict() for r in results])
    assert len(server.requests) == 4  # 2 for the failing image, 1 each for the others


def test_cli_with_backend_options(fake_server, tmp_path):
    from captionkit.cli.main import app

    server = fake_server("gemini", text="Solid colour square.")
    out = tmp_path / "out.jsonl"
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(
        app,
        [
            "caption", str(photos(tmp_path / "in")),
            "--model", "gemini:gemini-2.5-flash",
            "-o", f"base_url={server.base_url}", "-o", f"api_key={KEY}",
            "--store", "none", "--format", "jsonl", "--output", str(out), "--no-sidecar",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # broken.jpg fails, the rest succeed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    texts = sorted(r["text"] for r in records if r.get("text"))
    assert texts == ["Solid colour square."] * 3
    assert KEY not in result.output and KEY not in out.read_text()


def test_describe_then_rewrite_through_the_engine(fake_server, tmp_path):
    vision = fake_server("anthropic", text="A plain red rectangle fills the whole frame.")
    text = fake_server("openai-compatible", text="Seeing red today! #red #minimal #colour")
    first = load_captioner("anthropic:claude-haiku-4-5", api_key=KEY, base_url=vision.base_url)
    llm = OpenAICompatibleLLM("smollm2", base_url=text.base_url)
    results = caption(
        photos(tmp_path, ("red",)), model=RewriteCaptioner(first, llm), style="social", store=False
    )
    ok = [r for r in results if r.ok]
    assert len(ok) == 1 and ok[0].text == "Seeing red today! #red #minimal #colour"
    assert ok[0].extra["description"] == "A plain red rectangle fills the whole frame."
    assert "detail" in json.dumps(vision.requests[0].json)  # the first stage was asked to describe
    sent = text.requests[0].json["messages"][-1]["content"]
    assert "A plain red rectangle" in sent and "hashtags" in sent


def test_cli_rewrite_with_openai_compatible_server(fake_server, tmp_path, monkeypatch):
    from captionkit.cli.main import app

    vision = fake_server("openai", text="A plain blue rectangle.")
    text = fake_server("openai-compatible", text="Feeling blue. #blue #calm #minimal")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", text.base_url)  # where --rewrite's server is
    out = tmp_path / "out.jsonl"
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(
        app,
        [
            "caption", str(photos(tmp_path / "in", ("blue",))),
            "--model", "openai:gpt-4o-mini", "-o", f"base_url={vision.base_url}",
            "--rewrite", "openai-compatible:smollm2", "--style", "social",
            "--store", "none", "--format", "jsonl", "--output", str(out), "--no-sidecar",
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # broken.jpg
    record = next(json.loads(x) for x in out.read_text().splitlines() if '"error": null' in x)
    assert record["text"] == "Feeling blue. #blue #calm #minimal"
    assert record["extra"]["description"] == "A plain blue rectangle."
    assert text.requests[0].json["model"] == "smollm2"
    assert KEY not in result.output and KEY not in out.read_text()
    assert "authorization" not in text.requests[0].headers  # the OpenAI key stays with OpenAI


def test_dry_run_needs_no_api_key(tmp_path):
    """A dry run only estimates: it must not ask for a key it never sends (issue #11)."""
    from captionkit.cli.main import app

    photos(tmp_path)
    for spec in ("openai:gpt-4o-mini", "gemini:gemini-2.5-flash", "anthropic:claude-haiku-4-5"):
        result = CliRunner().invoke(
            app,
            ["caption", str(tmp_path), "--model", spec, "--dry-run",
             "-o", "price_per_1k_input=0.001", "-o", "price_per_1k_output=0.002"],
        )  # fmt: skip
        assert result.exit_code == 0, (spec, result.output)
        assert result.stdout.startswith("3 images (+1") and "cost ~" in result.stdout
        assert "API key" not in result.output


def test_missing_key_stops_the_run_before_any_request(fake_server, tmp_path):
    import pytest

    from captionkit.errors import BackendError

    server = fake_server("openai")
    captioner = load_captioner("openai:gpt-4o-mini", base_url=server.base_url)  # no key: fine
    assert captioner.estimate([(800, 600)])["input_tokens"] > 0
    with pytest.raises(BackendError, match="OPENAI_API_KEY") as info:
        caption(photos(tmp_path), model=captioner, store=False)
    assert "\n" not in str(info.value)
    assert server.requests == []
