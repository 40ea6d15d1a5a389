"""Backend flags (``--detector``, ``--api-key``, ``--max-cost``...) built from backends' Options.

A backend option marked ``Field(..., description="help", json_schema_extra={"cli": True})``
becomes the flag ``--field-name`` of ``captionkit caption`` (``{"cli": "--other-name"}`` names
it; ``"cli_panel"`` picks the help panel), so adding a backend option never touches the CLI.
One flag serves every backend with a field of that name (``--api-key``: each hosted API); run
assembly routes the value to the chosen backend (:func:`captionkit.session.build_run`).

The flags are added to the typer-built click command when it is first used (parsing or its
own ``--help``), not when ``captionkit --help`` lists the commands: that stays fast.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from typer.core import TyperCommand

if TYPE_CHECKING:
    from captionkit.captioners.base import Captioner

#: ``ctx.meta`` key under which the command finds the backend flags it was given.
META_KEY = "captionkit.backend_flags"

#: Flags that had their own declaration before backends marked their Options: used for a
#: field no backend marks yet (remove once every backend marks its fields).
TRANSITIONAL = {
    "quantize": ("Load in 4bit or 8bit (needs bitsandbytes and a GPU).", "Model"),
    "detector": ("grounded: ssd (offline default), yolox, ultralytics.", "Model"),
    "detector_weights": ("grounded: a local detector weights file (air-gapped use).", "Model"),
    "writer": (
        "grounded: template, or a text LLM (smollm2, hf:..., openai-compatible:NAME).",
        "Model",
    ),
    "api_key": (
        "Hosted APIs: the key (default: OPENAI_API_KEY / GEMINI_API_KEY / ANTHROPIC_API_KEY).",
        "Model",
    ),
    "base_url": ("OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1.", "Model"),
    "max_cost": (
        "Hosted APIs: stop spending past this amount (set prices with -o price_per_1k_input=...).",
        "Run",
    ),
}


@dataclass
class BackendFlag:
    """One flag and the backends whose Options have its field."""

    field: str
    flag: str
    help: str
    panel: str
    annotation: Any
    backends: list[str]


def _mark(info: Any) -> dict[str, Any] | None:
    """The ``json_schema_extra`` of a field marked for the CLI, or None."""
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) and extra.get("cli") else None


def _backend_classes() -> list[type[Captioner]]:
    """Every backend class that imports here; a broken or absent plugin adds no flags."""
    from captionkit.captioners import registry
    from captionkit.errors import CaptionkitError

    classes = []
    for name in registry.backend_names():
        try:
            classes.append(registry.get_backend(name))
        except (CaptionkitError, ImportError, AttributeError):
            continue  # `captionkit backends` reports why
    return classes


def collect_flags(classes: list[type[Captioner]] | None = None) -> dict[str, BackendFlag]:
    """The backend flags by field name: marked fields first, then transitional ones that no
    backend marks yet."""
    flags: dict[str, BackendFlag] = {}
    unmarked: dict[str, BackendFlag] = {}
    for cls in _backend_classes() if classes is None else classes:
        for field, info in cls.Options.model_fields.items():
            mark = _mark(info)
            if mark is None and field not in TRANSITIONAL:
                continue
            help_text, panel = TRANSITIONAL.get(field, ("", "Model"))
            flag = f"--{field.replace('_', '-')}"
            if mark is not None:
                flag = mark["cli"] if isinstance(mark["cli"], str) else flag
                panel = mark.get("cli_panel") or panel
                help_text = info.description or help_text
            entry = (flags if mark is not None else unmarked).setdefault(
                field, BackendFlag(field, flag, help_text, panel, info.annotation, [])
            )
            entry.backends.append(cls.name)
    for field, entry in unmarked.items():
        flags.setdefault(field, entry)
    return flags


def _flag_type(annotation: Any) -> Any:
    """The flag's type: the field's own when typer can parse it (str, int, float, bool, a
    Literal of strings), else str (the backend's Options validate the value)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if typing.get_origin(annotation) is Literal and all(isinstance(a, str) for a in args):
        return annotation
    return annotation if annotation in (str, int, float, bool) else str


def make_params(entries: list[BackendFlag]) -> list[Any]:
    """Click parameters for ``entries``, built by typer itself from a synthetic signature, so
    they parse, validate, report usage errors and show help like every declared flag."""
    import inspect

    import typer.main

    params = []
    for entry in entries:
        kind = _flag_type(entry.annotation)
        decl = f"{entry.flag}/--no-{entry.flag[2:]}" if kind is bool else entry.flag
        option = typer.Option(
            decl, help=entry.help, rich_help_panel=entry.panel, show_default=False
        )
        params.append(
            inspect.Parameter(
                entry.field,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=typing.Annotated[typing.Optional[kind], option],  # noqa: UP045
            )
        )

    def flags(**values: Any) -> None:
        """(only its signature is used)"""

    flags.__dict__["__signature__"] = inspect.Signature(params)
    app = typer.Typer(add_completion=False)
    app.command()(flags)
    return list(typer.main.get_command(app).params)


class BackendFlagsCommand(TyperCommand):
    """A typer command that also takes every backend flag, and hands their values to the
    command function in ``ctx.meta[META_KEY]`` (field name -> value, given ones only)."""

    _added: dict[str, str] | None = None

    def _add_flags(self) -> None:
        if self._added is not None:
            return
        taken = {opt for param in self.params for opt in param.opts + param.secondary_opts}
        taken |= {param.name for param in self.params if param.name}
        entries = [
            entry
            for field, entry in collect_flags().items()
            # a flag the command declares itself (a run-wide setting such as --device) stays
            if field not in taken and entry.flag not in taken
        ]
        self.params.extend(make_params(entries))
        self._added = {entry.field: entry.flag for entry in entries}

    def make_context(
        self, info_name: Any, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        self._add_flags()
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        given = {field: ctx.params.pop(field, None) for field in self._added or {}}
        ctx.meta[META_KEY] = {k: v for k, v in given.items() if v is not None}
        ctx.meta[META_KEY + ".names"] = dict(self._added or {})
        return super().invoke(ctx)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``-o key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists)."""
    import json

    from captionkit.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-o expects KEY=VALUE, got '{pair}'")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = value
    return options
