"""Prompt templates (captionkit.prompts): every variable, literal braces, prompt files with
weighted choice, and what users get wrong (unknown variables, bad files, missing columns) —
one line each, before any model loads. The engine renders per image, keys the store by the
rendered prompt, and never mixes two prompts in one model call."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from captionkit.engine.batch import caption_records
from captionkit.engine.runner import Runner, RunOptions
from captionkit.engine.store import ResultStore
from captionkit.errors import ConfigError
from captionkit.inputs.sources import Source, iter_sources
from captionkit.prompts import (
    Earlier,
    MissingValue,
    load_prompt_file,
    make_renderer,
    parse_template,
    prompt_set,
    render_values,
    resolve,
)
from captionkit.types import Candidate, CaptionOutput, CaptionRequest
from helpers.cli import run_cli as cli
from helpers.fakes import FakeCaptioner, registered, write_image


class EchoCaptioner(FakeCaptioner):
    """Answers with the prompt it was given and the image's colour: shows what was rendered."""

    name: ClassVar[str] = "echo"

    def _caption(self, inputs: list[Any], request: CaptionRequest, n: int) -> list[CaptionOutput]:
        with self._lock:
            self.in_flight -= len(inputs)
        return [CaptionOutput([Candidate(f"{request.prompt} | {c}")]) for c in inputs]


def _render(text: str, source: Source, earlier: Earlier | None = None) -> str:
    return parse_template(text).render(render_values(source, earlier))


# -- variables ---------------------------------------------------------------------------------


def test_each_variable_renders(tmp_path):
    src = Source(key="x", path=tmp_path / "cats" / "tabby.jpg", meta={"artist": "Ann", "n": 3})
    assert _render("{name}", src) == "tabby"
    assert _render("{directory}", src) == "cats"
    assert _render("by {column:artist}, #{column:n}", src) == "by Ann, #3"
    before = Earlier(caption="a cat on a mat", tags="cat, mat")
    assert _render("Shorten: {caption}", src, before) == "Shorten: a cat on a mat"
    assert _render("Tags: {tags}.", src, before) == "Tags: cat, mat."
    assert _render("{{literal}} {name}", src) == "{literal} tabby"


def test_name_and_directory_of_urls_video_frames_and_memory_images():
    url = Source(key="https://h/a/b/photo.png?x=1", url="https://h/a/b/photo.png?x=1")
    assert (_render("{name}", url), _render("{directory}", url)) == ("photo", "b")
    frame = Source(key="clips/v.mp4#t=1.000", meta={"video": "clips/v.mp4", "t": 1.0})
    assert (_render("{name}@{column:t}", frame), _render("{directory}", frame)) == (
        "v@1.0",
        "clips",
    )
    assert _render("[{directory}]", Source(key="<image 0>")) == "[]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Describe {nmae}", "unknown variable {nmae}"),
        ("Describe {column}", "unknown variable {column}"),
        ("Describe {name!r}", "unknown variable {name!r}"),
        ("Describe {name:>9}", "unknown variable {name:>9}"),
        ("Describe {0}", "unknown variable {0}"),
        ('JSON {"a": 1}', "unknown variable"),
        ("Describe {name", "expected '}'"),
        ("Describe name}", "Single '}'"),
        ("   ", "the prompt is empty"),
    ],
)
def test_template_mistakes_are_one_line(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_template(text)
    assert "\n" not in str(err.value)


def test_a_missing_value_fails_only_that_image(tmp_path):
    src = Source(key="x", path=tmp_path / "a.jpg", meta={"title": "t"})
    with pytest.raises(MissingValue, match=r"no column 'artist'.*columns: title"):
        _render("{column:artist}", src)
    with pytest.raises(MissingValue, match=r"no \{caption\}"):
        _render("{caption}", src)


# -- prompt files --------------------------------------------------------------------------------


def test_prompt_file_forms(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("Describe {name} in detail.\n", encoding="utf-8")
    assert [t.text for t in load_prompt_file(plain).templates] == ["Describe {name} in detail."]
    listed = tmp_path / "p.json"
    listed.write_text(json.dumps(["A {name}", {"prompt": "B", "weight": 3}]), encoding="utf-8")
    got = load_prompt_file(listed).templates
    assert [(t.text, t.weight) for t in got] == [("A {name}", 1.0), ("B", 3.0)]
    bracket = tmp_path / "list.txt"  # a JSON list in a .txt file is still a list
    bracket.write_text('["x", "y"]', encoding="utf-8")
    assert len(load_prompt_file(bracket).templates) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"prompt": "a", "weight": 0}]', "entry 1: weight must be a positive number"),
        ('[{"prompt": "a", "wieght": 2}]', "entry 1: unknown key 'wieght'"),
        ('["ok", {"weight": 2}]', "entry 2: expected a prompt string"),
        ('["ok", "bad {x}"]', "entry 2: unknown variable {x}"),
    ],
)
def test_prompt_file_mistakes_are_one_line(tmp_path, content, message):
    path = tmp_path / "prompts.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_prompt_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_prompt_and_prompt_file_together_and_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        resolve("a", tmp_path / "p.txt")
    with pytest.raises(ConfigError, match="no such file"):
        resolve(None, tmp_path / "nope.txt")


def test_weighted_choice_is_stable_per_image_and_follows_the_weights():
    prompts = prompt_set("x")  # one prompt: always it
    assert prompts.choose("abc").text == "x"
    many = load_prompt_file_from([{"prompt": "A", "weight": 3}, {"prompt": "B", "weight": 1}])
    hashes = [f"{i:064x}" for i in range(800)]
    first = [many.choose(h).text for h in hashes]
    assert first == [many.choose(h).text for h in hashes]  # a rerun picks the same
    share = Counter(first)["A"] / len(first)
    assert 0.68 < share < 0.82


def load_prompt_file_from(entries, tmp=Path("/tmp")):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=tmp) as fh:
        json.dump(entries, fh)
    try:
        return load_prompt_file(fh.name)
    finally:
        Path(fh.name).unlink()


def test_static_prompts_keep_their_store_keys():
    """A prompt without variables is sent as typed (its old store keys still hit); ``{{``
    is undone once; a template or a choice is dynamic (rendered per image)."""
    assert not prompt_set("Describe it.").dynamic
    assert prompt_set("Describe it.").request_prompt == "Describe it."
    assert prompt_set("Return {{json}}").request_prompt == "Return {json}"
    assert prompt_set("Describe {name}").dynamic


# -- the engine renders per image ------------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "shots"
    for i, colour in enumerate(["red", "green", "blue", "white", "black", "yellow"]):
        write_image(root / f"{i}_{colour}.png", colour, size=(16 + i, 16))
    return root


def _run(captioner, folder, prompts, store=None, batch_size=6):
    request = CaptionRequest(prompt=prompts.request_prompt)
    options = RunOptions(
        collect=True, workers=2, batch_size=batch_size, render=make_renderer(prompts)
    )
    runner = Runner(captioner, request, store=store, options=options)
    return runner.run(iter_sources([str(folder)]))


def test_runner_renders_per_image_and_groups_one_prompt_per_call(tmp_path):
    folder = _folder(tmp_path)
    prompts = load_prompt_file_from(["Say {name} (A)", "Say {name} (B)"], tmp_path)
    echo = EchoCaptioner()
    summary = _run(echo, folder, prompts)
    for result in summary.results:
        stem = Path(result.source).stem
        assert result.prompt in (f"Say {stem} (A)", f"Say {stem} (B)")
        assert result.text.startswith(result.prompt + " | ")
    # one call per distinct prompt (each name differs): never two prompts in one call
    assert len(echo.calls) == 6 and all(len(c) == 1 for c in echo.calls)
    assert [r.prompt for r in echo.requests] == [r.prompt for r in summary.results]


def test_same_prompt_shares_a_batch_and_inputs_keep_their_order(tmp_path):
    folder = _folder(tmp_path)
    prompts = load_prompt_file_from(["one {directory}", "two {directory}"], tmp_path)
    echo = EchoCaptioner()
    summary = _run(echo, folder, prompts)
    assert sorted(len(c) for c in echo.calls) == sorted(
        Counter(r.prompt for r in summary.results).values()
    )
    assert len(echo.calls) <= 2
    assert [r.text.split(" | ")[1] for r in summary.results] == [
        "red", "green", "blue", "white", "black", "yellow"
    ]  # fmt: skip


def test_rendered_prompt_is_part_of_the_store_key(tmp_path):
    folder = _folder(tmp_path)
    store = ResultStore(tmp_path / "s.sqlite")
    try:
        _run(EchoCaptioner(), folder, prompt_set("Say {name}"), store)
        again = EchoCaptioner()
        assert _run(again, folder, prompt_set("Say {name}"), store).cached == 6
        assert again.calls == []
        other = EchoCaptioner()
        summary = _run(other, folder, prompt_set("Tell {name}"), store)
        assert summary.captioned == 6 and summary.cached == 0
    finally:
        store.close()


def test_records_fill_column_variables_from_their_row(tmp_path):
    folder = _folder(tmp_path)
    rows = [
        {"image": str(p), "artist": a}
        for p, a in zip(sorted(folder.iterdir()), "abcdef", strict=True)
    ]
    options = RunOptions(workers=1, render=make_renderer(prompt_set("by {column:artist}")))
    out = caption_records(EchoCaptioner(), rows, CaptionRequest(prompt="x"), options=options)
    assert [r["caption"].split(" | ")[0] for r in out] == [f"by {a}" for a in "abcdef"]
    missing = make_renderer(prompt_set("by {column:nope}"))
    out = caption_records(
        EchoCaptioner(), rows[:1], CaptionRequest(prompt="x"), options=RunOptions(render=missing)
    )
    assert out[0]["caption"] is None and "no column 'nope'" in out[0]["error"]


# -- the command line ----------------------------------------------------------------------




@pytest.fixture
def echo_backend():
    with registered(EchoCaptioner):
        yield


def test_cli_prompt_template_and_prompt_file(tmp_path, echo_backend, capsys):
    folder = _folder(tmp_path)
    store = str(tmp_path / "s.sqlite")
    base = ("caption", str(folder), "-m", "echo", "--store", store, "--no-progress")
    code, _, err = cli(capsys, *base, "-p", "About {name} in {directory}")
    assert code == 0, err
    assert (folder / "0_red.txt").read_text() == "About 0_red in shots | red\n"
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps([{"prompt": "A {name}", "weight": 1}]), encoding="utf-8")
    code, _, err = cli(capsys, *base, "--prompt-file", str(pf), "--existing", "overwrite")
    assert code == 0, err
    assert (folder / "1_green.txt").read_text() == "A 1_green | green\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "Describe {nmae}"], "--prompt: unknown variable {nmae}"),
        (["-p", "Shorten {caption}"], "{caption} is the output of an earlier stage"),
        (["-p", "Use {tags}"], "{tags} is the output of an earlier stage"),
        (["-p", "By {column:artist}"], "{column:artist}: .* have no column 'artist'"),
        (["-p", "a", "--prompt-file", "x.txt"], "--prompt or --prompt-file, not both"),
        (["--prompt-file", "missing.json"], "no such file"),
    ],
)
def test_cli_prompt_mistakes_exit_2_before_the_model_loads(
    tmp_path, echo_backend, capsys, args, message
):
    folder = _folder(tmp_path)
    code, _, err = cli(capsys, "caption", str(folder), "-m", "echo", "--store", "none", *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("captionkit: error:"), err
    assert re.search(message, lines[0]), lines[0]
    assert EchoCaptioner.instances == []  # no model was loaded
    assert not list(folder.glob("*.txt"))


def test_cli_typo_in_a_new_flag_is_a_usage_error(capsys):
    code, _, err = cli(capsys, "caption", "x.jpg", "--prompt-fil", "p.txt")
    assert code == 2 and "No such option: --prompt-fil" in err
