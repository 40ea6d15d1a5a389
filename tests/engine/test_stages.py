"""The stages' failure policy and capability checks, through the streaming driver."""

from __future__ import annotations

import pytest

from captionkit.engine.runner import Runner, RunOptions
from captionkit.engine.stages import RepeatGuard
from captionkit.errors import BackendError, ConfigError
from captionkit.inputs.sources import iter_sources
from captionkit.types import CaptionRequest
from helpers.fakes import FakeCaptioner, write_image


@pytest.fixture
def folder(tmp_path):
    for i in range(20):
        write_image(tmp_path / "in" / f"{i:02d}.png", ["red", "green", "blue", "white"][i % 4])
    return tmp_path / "in"


def run(fake, folder, request=None, batch_size=2):
    runner = Runner(fake, request or CaptionRequest(), options=RunOptions(batch_size=batch_size))
    return runner.run(iter_sources([str(folder)]))


def test_a_backend_that_always_raises_stops_the_run_with_one_line(folder):
    fake = FakeCaptioner()
    fake.always_raise = TypeError('can only concatenate str (not "int") to str')
    with pytest.raises(BackendError) as info:
        run(fake, folder)
    line = str(info.value)
    assert line == (
        "backend 'fake' raised TypeError: can only concatenate str (not \"int\") to str "
        "on 3 batches in a row; this looks like a bug in the backend"
    )
    # Three batches of two, each tried whole then image by image: 9 calls, not 10 batches.
    assert len(fake.calls) == 9


def test_a_bug_whose_message_names_the_batch_size_still_counts_as_the_same(folder):
    fake = FakeCaptioner()
    fake.raise_on = {"red", "green", "blue", "white"}  # "choked on a batch of 2" / "of 1"
    with pytest.raises(BackendError, match="raised RuntimeError: fake backend choked"):
        run(fake, folder)


def test_isolated_failures_never_stop_the_run(folder):
    fake = FakeCaptioner()
    fake.raise_on = {"red"}  # every batch with red fails whole, the retry pins it on red
    summary = run(fake, folder)
    assert summary.failed == 5 and summary.captioned == 15


def test_different_errors_in_a_row_are_not_a_bug():
    guard = RepeatGuard("fake", limit=3)
    assert guard.failed(ValueError("a")) is None
    assert guard.failed(KeyError("b")) is None
    assert guard.failed(ValueError("a")) is None
    assert guard.failed(ValueError("a")) is None
    assert isinstance(guard.failed(ValueError("a")), BackendError)
    guard.passed()
    assert guard.failed(ValueError("a")) is None  # a good batch starts the count again


def test_num_captions_on_a_single_caption_backend_is_a_config_error(folder):
    class OneCaption(FakeCaptioner):
        multiple_candidates = False

    fake = OneCaption()
    with pytest.raises(ConfigError, match="backend 'fake' returns one caption per image"):
        run(fake, folder, CaptionRequest(num_captions=3))
    assert fake.calls == [] and fake.preprocessed == 0  # refused before any work
    assert run(fake, folder).captioned == 20  # one caption is fine


def test_a_prompt_on_a_backend_without_prompts_is_a_config_error(folder):
    class NoPrompt(FakeCaptioner):
        accepts_prompt = False

    fake = NoPrompt()
    with pytest.raises(ConfigError, match="does not take a free prompt") as info:
        run(fake, folder, CaptionRequest(prompt="Describe the sign"))
    assert "\n" not in str(info.value) and fake.calls == []


def test_the_captioner_is_generic_over_its_options():
    from typing import get_origin

    from captionkit.captioners.base import BackendOptions, Captioner
    from helpers.fakes import FakeOptions

    assert FakeCaptioner(options=FakeOptions(tag="!")).options.tag == "!"
    assert FakeCaptioner.Options is FakeOptions
    assert get_origin(Captioner[FakeOptions]) is Captioner
    assert issubclass(FakeOptions, BackendOptions)


def test_check_request_works_on_the_class_before_any_model_loads():
    from captionkit.engine.stages import check_request

    class OneCaption(FakeCaptioner):
        multiple_candidates = False

    with pytest.raises(ConfigError, match="one caption per image"):
        check_request(OneCaption, CaptionRequest(num_captions=2))
    check_request(OneCaption, CaptionRequest(prompt="free text"))  # prompts are fine here


# -- per-image requests (prompt templates), tag rules and finished candidates -------------------


def test_caption_groups_inputs_by_request_and_keeps_their_order(folder):
    from captionkit.engine.stages import Stages

    fake = FakeCaptioner()
    a, b = CaptionRequest(prompt="A"), CaptionRequest(prompt="B")
    done = Stages(fake).caption(["red", "green", "blue", "white"], [a, b, a, b])
    assert [o.candidates[0].text for o in done.outputs] == [
        "a red image", "a green image", "a blue image", "a white image"
    ]  # fmt: skip
    assert fake.calls == [["red", "blue"], ["green", "white"]]
    assert [r.prompt for r in fake.requests] == ["A", "B"]
    fake.calls.clear()
    Stages(fake).caption(["red", "green"], [a, CaptionRequest(prompt="A")])  # equal: one call
    assert fake.calls == [["red", "green"]]


def test_a_failing_group_is_retried_alone(folder):
    from captionkit.engine.stages import Stages

    fake = FakeCaptioner()
    fake.raise_on = {"green"}
    a, b = CaptionRequest(prompt="A"), CaptionRequest(prompt="B")
    done = Stages(fake).caption(["red", "green", "blue"], [a, b, a])
    assert [o.error is None for o in done.outputs] == [True, False, True]


class _Rules:
    """Stands in for TagRules: marks the text so the test sees where it ran."""

    active = True

    def apply_text(self, text):
        return f"<{text}>"

    def apply_ranked(self, rows, shown=None):
        return "|".join(r[0] for r in rows)


def test_tag_rules_run_on_tag_captions_before_decoration(folder):
    from captionkit.types import CaptionResult

    tags = RunOptions(tags=_Rules(), trigger_word="sks", prefix="[", suffix="]")
    from captionkit.engine.stages import Stages

    stages = Stages(FakeCaptioner(), options=tags)
    plain = CaptionResult(source="x", text="a, b", style="tags")
    assert stages.finished_text("a, b", plain) == "[sks, <a, b>]"
    ranked = CaptionResult(source="x", text="t", style="short", extra={"tags": [["a", 0.9]]})
    assert stages.finished_text("t", ranked) == "[sks, a]"
    sentence = CaptionResult(source="x", text="A cat.", style="short")
    assert stages.finished_text("A cat.", sentence) == "[sks, A cat.]"  # not a tag caption


def test_layouts_finish_every_candidate(folder):
    fake = FakeCaptioner()
    options = RunOptions(batch_size=4, trigger_word="sks", finish_candidates=True, collect=True)
    summary = Runner(fake, CaptionRequest(), options=options).run(iter_sources([str(folder)]))
    first = summary.results[0]
    assert [c.text for c in first.candidates] == ["sks, a red image", "sks, a red image again"]
    plain = Runner(FakeCaptioner(), CaptionRequest(), options=RunOptions(collect=True))
    assert plain.run(iter_sources([str(folder)])).results[0].candidates[1].text == (
        "a red image again"
    )
