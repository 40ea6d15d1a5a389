"""Settings from one precedence order: command-line flags > ``CAPTIONKIT_*`` environment
variables > the TOML config file > built-in defaults.

This is the settings layer only; :func:`captionkit.session.build_run` puts a run together from
it (and puts backend options given with ``-o`` or the API's ``**options`` on top), so every
face (CLI, Python API, server) gets the same order.

The config file is ``--config PATH``, else ``$CAPTIONKIT_CONFIG``, else
``<user config dir>/captionkit/config.toml`` when it exists. Its top-level keys are the
fields below; a ``[backends.NAME]`` table holds options for one backend (an API key, a base
URL, a detector) that apply whenever that backend runs. pydantic-settings does the layering,
so validation and the error messages are the same for every source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from captionkit.errors import ConfigError

ENV_PREFIX = "CAPTIONKIT_"
#: The ``captionkit caption`` flag of each setting that has one (named in errors).
FLAGS = {
    name: f"--{name.replace('_', '-')}"
    for name in "model style batch_size workers device dtype store existing prefix suffix "
    "trigger_word max_pixels max_file_mb timeout max_new_tokens captions_layout".split()
} | {"sidecar_extension": "--extension"}


class Settings(BaseSettings):
    """Everything a run can be configured with outside a backend's own options."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", toml_file=None)

    model: str = "grounded"
    style: str = "short"
    batch_size: int | None = Field(default=None, ge=1)
    workers: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1), ge=1)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    store: str | None = None  # None: the user cache dir; "none": no store
    existing: Literal["skip", "overwrite", "append", "prepend"] = "skip"
    sidecar_extension: str = ".txt"
    prefix: str = ""
    suffix: str = ""
    trigger_word: str = ""
    max_pixels: int = Field(default=100_000_000, ge=1)
    #: Largest image file read, local or downloaded (``--max-file-mb``).
    max_file_mb: float = Field(default=50.0, gt=0)
    #: The old name of ``max_file_mb``, still read from config files and the environment;
    #: ``max_file_mb`` wins when both are set.
    max_download_mb: float | None = Field(default=None, gt=0, exclude=True)
    timeout: float = Field(default=30.0, gt=0)
    max_new_tokens: int = Field(default=60, ge=1)
    #: Several captions per image in sidecars: first, lines, numbered (``--captions-layout``).
    captions_layout: Literal["first", "lines", "numbered"] = "first"
    #: Tag rules (``[tags]`` table: exclude, replace, always_first, max_tags, separator,
    #: sort, keep_tokens, underscores_to_spaces); the ``--*-tags`` flags go on top.
    tags: dict[str, Any] = Field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _old_names(self) -> Settings:
        if self.max_download_mb is not None and "max_file_mb" not in self.model_fields_set:
            self.max_file_mb = self.max_download_mb
        return self

    def backend_options(self, backend: str) -> dict[str, Any]:
        return dict(self.backends.get(backend, {}))


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The config file in force, or None when there is none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return config_path(env)
    from platformdirs import user_config_dir

    default = Path(user_config_dir("captionkit")) / "config.toml"
    return default if default.is_file() else None


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Settings with ``flags`` (None meaning "not given") on top of env and config file."""
    path = config_path(config_file)

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", toml_file=path)

    try:
        return _FileSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        origin = f" {path}" if path else ""
        flag = f"{FLAGS[where]}, " if where in FLAGS else ""
        raise ConfigError(
            f"setting '{where}': {first['msg']} (from {flag}"
            f"{ENV_PREFIX}{where.upper()} or the config file{origin})"
        ) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
