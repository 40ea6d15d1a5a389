"""Multi-stage runs (captionkit.multistage, ``captionkit caption --stages FILE``): each stage a
full engine run, its output kept in ``extra["stages"]``, the last one written; every stage
resumable through the store (keyed by the previous stage's output); stages-file mistakes are
one line before any model loads. Fake backends and a fake text LLM only: fast."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from captionkit import multistage
from captionkit.cli.main import run
from captionkit.errors import ConfigError
from captionkit.inputs.sources import iter_sources
from captionkit.llm import loader
from captionkit.llm.base import TextLLM
from captionkit.types import Candidate, CaptionOutput, CaptionRequest
from helpers.fakes import FakeCaptioner, registered, write_image

COLOURS = ["red", "green", "blue", "white"]


class EchoCaptioner(FakeCaptioner):
    """A VLM stage: answers with its prompt and the image's colour."""

    name: ClassVar[str] = "echo"

    def _caption(self, inputs: list[Any], request: CaptionRequest, n: int) -> list[CaptionOutput]:
        with self._lock:
            self.in_flight -= len(inputs)
        return [CaptionOutput([Candidate(f"{request.prompt} | {c}")]) for c in inputs]


class TagFake(FakeCaptioner):
    """A tagger-like stage: ranked tags in ``extra["tags"]``, as the tagger backend gives."""

    name: ClassVar[str] = "tagfake"

    def _caption(self, inputs: list[Any], request: CaptionRequest, n: int) -> list[CaptionOutput]:
        with self._lock:
            self.in_flight -= len(inputs)
        return [
            CaptionOutput(
                [Candidate(f"{c}_colour, solid")],
                extra={"tags": [[f"{c}_colour", 0.9, "general"], ["solid", 0.6, "general"]]},
            )
            for c in inputs
        ]


class ShoutLLM(TextLLM):
    """A text LLM: answers SHORT(<the user turn>); counts its calls."""

    calls: ClassVar[list[str]] = []

    def __init__(self, model: str = "") -> None:
        self.label = f"shout:{model}"

    def chat(self, conversations, config):
        answers = [f"SHORT({c[-1].content})" for c in conversations]
        ShoutLLM.calls.extend(c[-1].content for c in conversations)
        return answers


@pytest.fixture
def backends():
    ShoutLLM.calls = []
    with registered(), registered(EchoCaptioner), registered(TagFake):
        loader.LLMS.register(ShoutLLM, "shout")
        try:
            yield
        finally:
            loader.LLMS.unregister("shout")


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "pics"
    for i, colour in enumerate(COLOURS):
        write_image(root / f"{i}_{colour}.png", colour, size=(16 + i, 16))
    return root


TWO_STAGES = """
[[stage]]
name = "describe"
model = "fake"
style = "detailed"

[[stage]]
name = "short"
llm = "shout:tiny"
prompt = "Shorten: {caption}"
"""


def write(tmp_path: Path, text: str, name: str = "stages.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def fakes(name: str) -> list[FakeCaptioner]:
    return [f for f in FakeCaptioner.instances if f.name == name]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["captionkit", *args])
        with pytest.raises(SystemExit) as exc:
            run()
    out, err = capsys.readouterr()
    return exc.value.code, out, err  # type: ignore[return-value]


# -- a run ---------------------------------------------------------------------------------------


def test_two_stages_describe_then_shorten(tmp_path, folder, backends, capsys):
    stages = write(tmp_path, TWO_STAGES)
    store = str(tmp_path / "s.sqlite")
    out_file = tmp_path / "all.jsonl"
    code, _, err = cli(
        capsys, "caption", str(folder), "--stages", str(stages), "--store", store,
        "--format", "jsonl", "--output", str(out_file), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "stage 1/2: describe" in err and "stage 2/2: short" in err
    assert (folder / "0_red.txt").read_text() == "SHORT(Shorten: a red image)\n"
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 4
    red = next(r for r in rows if r["source"].endswith("0_red.png"))
    assert red["extra"]["stages"] == {
        "describe": "a red image",
        "short": "SHORT(Shorten: a red image)",
    }
    assert red["backend"] == "llm" and red["prompt"] == "Shorten: a red image"
    assert sorted(ShoutLLM.calls) == sorted(f"Shorten: a {c} image" for c in COLOURS)


def test_killed_between_stages_resumes_without_recomputing_the_first(tmp_path, folder, backends):
    store = str(tmp_path / "s.sqlite")

    def planned():
        return multistage.plan(write(tmp_path, TWO_STAGES), [str(folder)], store=store)

    def stop_at_second(i: int, stage: multistage.Stage) -> None:
        if i == 1:
            raise KeyboardInterrupt  # killed as stage 2 starts

    with pytest.raises(KeyboardInterrupt):
        multistage.execute(planned(), iter_sources([str(folder)]), on_stage=stop_at_second)
    (first,) = fakes("fake")
    assert first.captioned == COLOURS  # stage 1 ran in full
    assert not list(folder.glob("*.txt")) and ShoutLLM.calls == []

    FakeCaptioner.instances.clear()
    outcome = multistage.execute(planned(), iter_sources([str(folder)]))
    (again,) = fakes("fake")
    assert again.calls == []  # stage 1 came back from the store
    assert len(ShoutLLM.calls) == 4 and outcome.summary.captioned == 4
    assert (folder / "2_blue.txt").read_text() == "SHORT(Shorten: a blue image)\n"

    # a third run: everything is in the sidecars: skipped before any stage computes
    FakeCaptioner.instances.clear()
    ShoutLLM.calls = []
    outcome = multistage.execute(planned(), iter_sources([str(folder)]))
    assert outcome.summary.skipped == 4 and fakes("fake")[0].calls == [] and ShoutLLM.calls == []


def test_a_stage_key_includes_the_previous_stage_output(tmp_path, folder, backends):
    """Same later stage, different earlier output: the later stage recomputes; the same
    earlier output: it comes from the store."""
    store = str(tmp_path / "s.sqlite")
    results = multistage.caption_stages([str(folder)], write(tmp_path, TWO_STAGES), store=store)
    assert len(ShoutLLM.calls) == 4 and all(r.ok for r in results)
    ShoutLLM.calls = []
    again = multistage.caption_stages([str(folder)], write(tmp_path, TWO_STAGES), store=store)
    assert ShoutLLM.calls == [] and all(r.cached for r in again)
    changed = TWO_STAGES.replace('style = "detailed"', 'style = "detailed"\noptions = {tag = "!"}')
    third = multistage.caption_stages([str(folder)], write(tmp_path, changed), store=store)
    assert len(ShoutLLM.calls) == 4  # stage 1 changed -> stage 2 recomputed
    assert third[0].extra["stages"]["describe"] == "a red image!"


def test_tags_from_an_earlier_tagger_stage_condition_a_vlm_prompt(tmp_path, folder, backends):
    stages = [
        {"name": "tag", "model": "tagfake", "style": "tags"},
        {"name": "describe", "model": "echo", "prompt": "Describe; tags: {tags}. File {name}"},
    ]
    results = multistage.caption_stages([str(folder)], stages, store=False)
    red = results[0]
    assert red.prompt == "Describe; tags: red_colour, solid. File 0_red"
    assert red.extra["stages"]["tag"] == "red_colour, solid"
    assert red.text.endswith("| red")


def test_decoration_goes_on_the_written_caption_only(tmp_path, folder, backends):
    """The trigger word, prefix and suffix decorate the last stage's caption; the text an
    earlier stage hands on ({caption}, extra["stages"]) is undecorated. Tag rules do shape
    the {tags} handed on."""
    results = multistage.caption_stages(
        [str(folder)], write(tmp_path, TWO_STAGES), store=False, trigger_word="sks", prefix="<"
    )
    assert ShoutLLM.calls[0] == "Shorten: a red image"
    assert results[0].text == "<sks, SHORT(Shorten: a red image)"
    assert results[0].extra["stages"]["describe"] == "a red image"
    stages = [
        {"name": "tag", "model": "tagfake", "style": "tags"},
        {"name": "describe", "model": "echo", "prompt": "tags: {tags}"},
    ]
    results = multistage.caption_stages(
        [str(folder)], stages, store=False, tags={"exclude": ["solid"]}, trigger_word="sks"
    )
    assert results[0].prompt == "tags: red colour"


def test_tag_rules_apply_to_a_tag_stage_written_last(tmp_path, folder, backends, capsys):
    stages = write(tmp_path, '[[stage]]\nname = "t"\nmodel = "tagfake"\nstyle = "tags"\n')
    code, _, err = cli(
        capsys, "caption", str(folder), "--stages", str(stages), "--store", "none",
        "--exclude-tags", "solid", "--trigger-word", "sks", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert (folder / "1_green.txt").read_text() == "sks, green colour\n"


def test_an_image_failing_in_an_early_stage_fails_in_the_later_ones(tmp_path, folder, backends):
    planned = multistage.plan(write(tmp_path, TWO_STAGES), [str(folder)], store="none")
    first = FakeCaptioner()
    first.fail_output_on = {"green"}
    outcome = multistage.execute(
        planned, iter_sources([str(folder)]), captioners={"describe": first}, collect=True
    )
    assert first.closed == 0  # a model passed in is left open
    failures = dict(outcome.summary.failures)
    assert len(failures) == 1
    (why,) = failures.values()
    assert why.startswith("stage 'describe' failed: no caption for green")
    assert outcome.summary.captioned == 3 and outcome.summary.exit_code == 1
    assert not (folder / "1_green.txt").exists() and (folder / "0_red.txt").exists()


def test_last_stage_several_captions_in_lines_layout(tmp_path, folder, backends, capsys):
    stages = write(tmp_path, '[[stage]]\nname = "one"\nmodel = "fake"\n')
    code, _, err = cli(
        capsys, "caption", str(folder), "--stages", str(stages), "--store", "none", "-n", "2",
        "--captions-layout", "lines", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert (folder / "3_white.txt").read_text() == "a white image\na white image again\n"


def test_text_stage_without_a_prompt_rewrites_into_its_style(tmp_path, folder, backends):
    stages = [
        {"name": "describe", "model": "fake"},
        {"name": "alt", "llm": "shout:x", "style": "alt-text"},
    ]
    results = multistage.caption_stages([str(folder)], stages, store=False)
    assert "Description: a red image" in ShoutLLM.calls[0]
    assert "alt text" in ShoutLLM.calls[0] and results[0].style == "alt-text"


# -- mistakes --------------------------------------------------------------------------------------

# fmt: off
BAD = [
    ("[[stage]\nname = 'x'", "not valid TOML"),
    ("", "no [[stage]] tables"),
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\nmodle = 'x'\n", "stage 1 ('a'): 'modle': unknown key"),
    ("[[stage]]\nname = 'a'\n", "stage 'a': give one of model = ... or llm = ..."),
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\nllm = 'shout:x'\n", "give one of model"),
    ("[[stage]]\nmodel = 'fake'\n", "stage 1: 'name': Field required"),
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\n[[stage]]\nname = 'a'\nmodel = 'fake'\n", "two stages are named 'a'"),  # noqa: E501
    ("[[stage]]\nname = 'a'\nmodel = 'echo'\nprompt = 'x {caption}'\n", "stage 'a': {caption} needs an earlier stage"),  # noqa: E501
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\n[[stage]]\nname = 'b'\nmodel = 'echo'\nprompt = '{tags}'\n", "needs an earlier stage that makes tags"),  # noqa: E501
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\n[[stage]]\nname = 'b'\nllm = 'shout:x'\nprompt = 'Hi {name}'\n", "a text stage sees no image"),  # noqa: E501
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\nprompt = '{nope}'\n", "unknown variable {nope}"),
    ("[[stage]]\nname = 'a'\nmodel = 'nosuch'\n", "stage 'a': cannot tell which backend 'nosuch'"),
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\noptions = {variant = 3}\n", "stage 'a': backend 'fake'"),  # noqa: E501
    ("[[stage]]\nname = 'a'\nmodel = 'fake'\nstyle = 'haiku'\n", "stage 'a': unknown style"),
]
# fmt: on


@pytest.mark.parametrize(("toml", "message"), BAD)
def test_stages_file_mistakes_exit_2_before_any_model_loads(
    tmp_path, folder, backends, capsys, toml, message
):
    stages = write(tmp_path, toml)
    code, _, err = cli(capsys, "caption", str(folder), "--stages", str(stages), "--store", "none")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("captionkit: error:") and message in lines[0], lines[0]
    assert FakeCaptioner.instances == [] and ShoutLLM.calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "fake"], "--model is set per stage with --stages"),
        (["--prompt", "x"], "--prompt is set per stage"),
        (["-o", "variant=x"], "-o options are set per stage"),
        (["--dry-run"], "without --dry-run"),
    ],
)
def test_per_stage_flags_with_stages_are_refused(tmp_path, folder, backends, capsys, args, message):
    stages = write(tmp_path, TWO_STAGES)
    code, _, err = cli(capsys, "caption", str(folder), "--stages", str(stages), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_missing_stages_file_and_typo_flag(tmp_path, folder, backends, capsys):
    code, _, err = cli(capsys, "caption", str(folder), "--stages", str(tmp_path / "no.toml"))
    assert code == 2 and re.search(r"stages file .*no\.toml: no such file", err)
    code, _, err = cli(capsys, "caption", str(folder), "--stage", "x.toml")
    assert code == 2 and "No such option: --stage" in err


def test_load_stages_resolves_prompt_files_beside_the_stages_file(tmp_path):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "p.txt").write_text("Describe {name}", encoding="utf-8")
    stages = write(sub, "[[stage]]\nname = 'a'\nmodel = 'fake'\nprompt_file = 'p.txt'\n")
    (spec,) = multistage.load_stages(stages)
    assert spec.prompt_file == str(sub / "p.txt")
    with pytest.raises(ConfigError, match="not both"):
        multistage.load_stages([{"name": "a", "model": "m", "prompt": "x", "prompt_file": "y"}])
