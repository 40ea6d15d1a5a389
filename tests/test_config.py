"""Settings precedence: flags > CAPTIONKIT_* environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from captionkit.config import Settings, config_path, load_settings
from captionkit.errors import ConfigError

TOML = """
model = "hf:org/name"
style = "detailed"
batch_size = 3
existing = "append"
prefix = "file: "

[backends.openai]
api_key = "sk-file"
base_url = "http://127.0.0.1:9/v1"

[backends.grounded]
detector = "yolox"
"""


@pytest.fixture
def toml_file(tmp_path) -> Path:
    path = tmp_path / "captionkit.toml"
    path.write_text(TOML)
    return path


def user_config(text: str) -> Path:
    import os

    path = Path(os.environ["XDG_CONFIG_HOME"]) / "captionkit" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file():
    s = load_settings()
    assert s.model == "grounded" and s.style == "short" and s.batch_size is None
    assert s.existing == "skip" and s.sidecar_extension == ".txt" and s.dtype == "auto"
    assert s.max_pixels == 100_000_000 and s.timeout == 30.0 and s.backends == {}
    assert 1 <= s.workers <= 4
    assert config_path() is None


def test_toml_file_over_defaults(toml_file):
    s = load_settings(toml_file)
    assert (s.model, s.style, s.batch_size, s.existing, s.prefix) == (
        "hf:org/name",
        "detailed",
        3,
        "append",
        "file: ",
    )
    assert s.max_new_tokens == 60  # not in the file: default


def test_env_over_file(toml_file, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BATCH_SIZE", "5")
    monkeypatch.setenv("CAPTIONKIT_STYLE", "alt-text")
    s = load_settings(toml_file)
    assert s.batch_size == 5 and s.style == "alt-text"
    assert s.model == "hf:org/name"  # file still wins over the default


def test_flags_over_env_and_none_means_not_given(toml_file, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BATCH_SIZE", "5")
    s = load_settings(toml_file, batch_size=7, style=None, model="grounded")
    assert s.batch_size == 7 and s.model == "grounded"
    assert s.style == "detailed"  # style=None fell through to the file


def test_backends_tables(toml_file):
    s = load_settings(toml_file)
    assert s.backend_options("openai") == {
        "api_key": "sk-file",
        "base_url": "http://127.0.0.1:9/v1",
    }
    assert s.backend_options("grounded") == {"detector": "yolox"}
    assert s.backend_options("hf") == {}
    s.backend_options("openai")["api_key"] = "changed"  # a copy: settings unchanged
    assert s.backends["openai"]["api_key"] == "sk-file"


def test_backends_from_env_json(monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BACKENDS", '{"openai": {"api_key": "sk-env"}}')
    assert load_settings().backend_options("openai") == {"api_key": "sk-env"}


def test_config_file_from_env_variable(toml_file, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_CONFIG", str(toml_file))
    assert config_path() == toml_file
    assert load_settings().model == "hf:org/name"


def test_explicit_file_beats_env_variable_file(toml_file, tmp_path, monkeypatch):
    other = tmp_path / "other.toml"
    other.write_text('model = "openai:gpt-4o-mini"\n')
    monkeypatch.setenv("CAPTIONKIT_CONFIG", str(toml_file))
    assert load_settings(other).model == "openai:gpt-4o-mini"


def test_user_config_dir_file_is_found():
    path = user_config('style = "social"\n')
    assert config_path() == path
    assert load_settings().style == "social"


def test_missing_explicit_file(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("CAPTIONKIT_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml does not exist"):
        load_settings()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"batch_size": 0}, "setting 'batch_size': Input should be greater than or equal to 1"),
        ({"dtype": "fp8"}, "setting 'dtype'"),
        ({"existing": "merge"}, "setting 'existing'"),
        ({"timeout": -1}, "setting 'timeout'"),
        ({"max_download_mb": 0}, "setting 'max_download_mb'"),
        (
            {"max_file_mb": 0},
            "setting 'max_file_mb': Input should be greater than 0 (from --max-file-mb",
        ),
        ({"modle": "x"}, "setting 'modle': Extra inputs are not permitted"),
    ],
)
def test_bad_flag_values_are_one_line_config_errors(flags, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(**flags)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "CAPTIONKIT_MAX_PIXELS" in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_value_in_file_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("workers = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "'workers'" in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('modle = "grounded"\n')
    with pytest.raises(ConfigError, match="'modle': Extra inputs are not permitted"):
        load_settings(path)


def test_malformed_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("model = [\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"cannot read config file {path}")
    assert "\n" not in str(info.value)


def test_unrelated_captionkit_env_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_SOMETHING_ELSE", "1")
    assert load_settings().model == "grounded"


def test_settings_class_alone_reads_env_but_no_file(toml_file, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_MODEL", "hf:a/b")
    assert Settings().model == "hf:a/b"


def test_max_file_mb_default_flag_env_and_file(tmp_path, monkeypatch):
    assert load_settings().max_file_mb == 50.0
    path = tmp_path / "c.toml"
    path.write_text("max_file_mb = 5\n")
    assert load_settings(path).max_file_mb == 5.0
    monkeypatch.setenv("CAPTIONKIT_MAX_FILE_MB", "7")
    assert load_settings(path).max_file_mb == 7.0  # env beats the file
    assert load_settings(path, max_file_mb=9).max_file_mb == 9.0  # the flag beats both


def test_old_max_download_mb_name_still_works(tmp_path, monkeypatch):
    """Config files and environments written for the old name keep their meaning."""
    path = tmp_path / "old.toml"
    path.write_text("max_download_mb = 3\n")
    assert load_settings(path).max_file_mb == 3.0
    assert "max_download_mb" not in load_settings(path).model_dump()
    assert load_settings(path, max_file_mb=4).max_file_mb == 4.0  # the new name wins
    monkeypatch.setenv("CAPTIONKIT_MAX_DOWNLOAD_MB", "6")
    assert load_settings().max_file_mb == 6.0


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CAPTIONKIT_BATCH_SIZE": "0"}, "setting 'batch_size'"),
        ({"CAPTIONKIT_WORKERS": "-1"}, "setting 'workers'"),
    ],
)
def test_bad_settings_through_the_cli_are_one_line(env, fragment, tmp_path):
    """A pydantic validation error of the settings reaches the user as one line, exit 2."""
    import os
    import subprocess
    import sys

    (tmp_path / "a.jpg").write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "captionkit.cli.main", "caption", str(tmp_path / "a.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
