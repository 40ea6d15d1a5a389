"""Backend flags come from the backends' Options (issue #13): a field marked
``json_schema_extra={"cli": True}`` is a flag of ``captionkit caption``, routed to the chosen
backend, with typer's parsing, help and one-line usage errors; no CLI code names it.

A test-only backend with marked fields is registered in-process (the registry's public
``register``), and runs go through ``captionkit.cli.main.run`` as the console script does.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from captionkit.captioners.base import BackendOptions
from helpers.cli import run_cli
from helpers.fakes import FakeCaptioner, registered, write_image


class MarkedOptions(BackendOptions):
    tag: str = ""
    shade: Literal["light", "dark"] = Field(
        "light", description="how dark the captions are", json_schema_extra={"cli": True}
    )
    glow: float = Field(
        0.5,
        description="glow strength",
        json_schema_extra={"cli": "--glow-level", "cli_panel": "Glow"},
    )
    sparkle: bool = Field(True, description="add sparkle", json_schema_extra={"cli": True})
    unmarked_knob: int = 1  # no mark: only -o unmarked_knob=...


class MarkedCaptioner(FakeCaptioner):
    name: ClassVar[str] = "marked"
    Options: ClassVar[type[BackendOptions]] = MarkedOptions


FAKE = ("--store", "none", "--no-progress")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with registered(), registered(MarkedCaptioner):
        return run_cli(capsys, *args)


@pytest.fixture
def photos(tmp_path):
    write_image(tmp_path / "p" / "red.png", "red")
    return tmp_path / "p"


def last_options() -> Any:
    return FakeCaptioner.instances[-1].options


def test_marked_fields_are_flags_routed_to_the_backend(capsys, photos, monkeypatch):
    seen: list[Any] = []
    monkeypatch.setattr(FakeCaptioner, "close", lambda self: seen.append(self.options))
    code, _, err = cli(
        capsys,
        "caption",
        str(photos),
        "--model",
        "marked",
        *FAKE,
        "--shade",
        "dark",
        "--glow-level",
        "2.5",
        "--no-sparkle",
    )
    assert code == 0, err
    assert seen == [MarkedOptions(shade="dark", glow=2.5, sparkle=False)]


def test_flags_sit_over_the_config_table_and_under_o(capsys, photos, tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[backends.marked]\nshade = "dark"\nglow = 1.0\nunmarked_knob = 3\n')
    seen: list[Any] = []
    monkeypatch.setattr(FakeCaptioner, "close", lambda self: seen.append(self.options))
    args = ("caption", str(photos), "--model", "marked", *FAKE, "--config", str(config))
    code, _, err = cli(capsys, *args, "--glow-level", "2", "-o", "shade=light")
    assert code == 0, err
    assert seen == [MarkedOptions(shade="light", glow=2.0, unmarked_knob=3)]


def test_bad_value_of_a_generated_flag_is_a_usage_error(capsys, photos):
    code, _, err = cli(capsys, "caption", str(photos), "--model", "marked", "--shade", "purple")
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith("Usage: ") and len(lines) <= 4
    assert lines[-1].startswith("Error: ") and "'--shade'" in lines[-1]
    assert FakeCaptioner.instances == []


def test_typo_in_a_generated_flag_is_a_usage_error(capsys, photos):
    code, _, err = cli(capsys, "caption", str(photos), "--model", "marked", "--glow-levle", "2")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("Error: No such option: --glow-levle")
    assert len(lines) <= 4


def test_unmarked_fields_are_no_flags(capsys, photos):
    code, _, err = cli(capsys, "caption", str(photos), "--unmarked-knob", "2")
    assert code == 2 and "No such option: --unmarked-knob" in err


def test_help_lists_generated_flags_in_their_panels(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # help text unwrapped
    code, out, _ = cli(capsys, "caption", "--help")
    assert code == 0
    assert "--glow-level" in out and "Glow" in out and "--no-sparkle" in out
    assert "how dark the captions are" in out


@pytest.mark.parametrize(
    "flag",
    [
        "--detector",
        "--detector-weights",
        "--writer",
        "--quantize",
        "--api-key",
        "--base-url",
        "--max-cost",
        "--device",
        "--dtype",
    ],
)
def test_every_flag_of_the_built_in_backends_is_still_there(capsys, flag):
    code, out, _ = cli(capsys, "caption", "--help")
    assert code == 0 and flag in out


def test_a_flag_the_chosen_backend_lacks_is_noted_not_used(capsys, photos):
    code, _, err = cli(capsys, "caption", str(photos), "--model", "fake", *FAKE, "--shade", "dark")
    assert code == 0, err
    assert "note: --shade is not an option of backend 'fake'; ignored" in err


def test_built_in_flags_reach_their_backend(capsys, photos, monkeypatch):
    """``--detector`` and ``--api-key`` go to the backend that has them, nowhere else."""
    from captionkit import session

    built: list[dict[str, Any]] = []

    def fake_load(run_spec):
        built.append(dict(run_spec.options))
        return FakeCaptioner()

    monkeypatch.setattr(session, "load", fake_load)
    code, _, err = cli(
        capsys, "caption", str(photos), "-m", "grounded", "--detector", "yolox", "--dry-run"
    )
    assert code == 0, err
    code, _, err = cli(
        capsys,
        "caption",
        str(photos),
        "-m",
        "openai:gpt-4o-mini",
        "--api-key",
        "sk-x",
        "--max-cost",
        "2",
        "--dry-run",
    )
    assert code == 0, err
    assert built == [{"detector": "yolox"}, {"api_key": "sk-x", "max_cost": 2.0}]
