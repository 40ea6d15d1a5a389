"""The ``captionkit`` command: assembles the command modules and turns user errors into one line.

Command modules import their heavy dependencies inside the command functions, so building
this app (and answering ``--help``) imports only typer and the modules' signatures.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from captionkit import __version__

app = typer.Typer(
    name="captionkit",
    help="Turn images into good captions: local VLMs, a grounded offline pipeline, hosted APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: (command name, module, attribute, help). A module missing its attribute is skipped, so the
#: CLI keeps working while a command group is being built.
COMMANDS = [
    ("caption", "captionkit.cli.caption", "command", None),  # + backend flags: CLASSES
    ("backends", "captionkit.cli.info", "backends", None),
    ("styles", "captionkit.cli.info", "styles", None),
    ("facts", "captionkit.cli.facts", "command", None),
    ("eval", "captionkit.cli.eval", "command", None),
    ("serve", "captionkit.cli.serve", "command", None),
]
#: Commands built by a click command class of their own: ``caption`` also takes every
#: backend flag generated from the backends' Options (see ``cli.backend_flags``).
CLASSES = {"caption": ("captionkit.cli.backend_flags", "BackendFlagsCommand")}
GROUPS = [
    ("train", "captionkit.cli.train", "app"),
    ("results", "captionkit.cli.results", "app"),
    ("data", "captionkit.cli.data", "app"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"captionkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """captionkit: caption images from the command line."""


def _load(module: str, attr: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # that command group is not part of this build
            return None
        raise


for _name, _module, _attr, _help in COMMANDS:
    _fn = _load(_module, _attr)
    if _fn is not None:
        _cls = _load(*CLASSES[_name]) if _name in CLASSES else None
        app.command(_name, help=_help, cls=_cls)(_fn)
for _name, _module, _attr in GROUPS:
    _group = _load(_module, _attr)
    if _group is not None:
        app.add_typer(_group, name=_name)


def _click_exceptions() -> Any:
    """The exceptions module of the click that typer runs on.

    Recent typer ships its own copy of click as ``typer._click`` (plain ``click`` is then no
    dependency at all, and its exception classes are not the ones raised); older typer runs
    on ``click`` itself.
    """
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # older typer
        return importlib.import_module("click.exceptions")


def run(args: list[str] | None = None) -> None:
    """Console-script entry: user errors become one line on stderr and an exit code.

    ``captionkit.errors`` types (and Ctrl-C) are worded by :func:`captionkit.session.error_report`,
    the one boundary every face uses. Usage errors (unknown flag or command, a value out of
    range) print click's short usage, a hint and one ``Error:`` line, exit 2. Bare
    ``captionkit`` prints the help and exits 2, as click does for ``no_args_is_help`` since
    8.2: no command was run, so scripts must not read it as success. Anything else is a bug
    and keeps its traceback.
    """
    from captionkit.errors import CaptionkitError

    clicks = _click_exceptions()
    try:
        code = app(args=args, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except (CaptionkitError, KeyboardInterrupt) as exc:
        from captionkit.session import error_report

        report = error_report(exc)
        assert report is not None  # both kinds always have one
        print(report.line(), file=sys.stderr)
        sys.exit(report.exit_code)
    except typer.Exit as exc:  # raised by commands, or by --help/--version
        sys.exit(exc.exit_code)
    except clicks.ClickException as exc:  # usage errors, NoArgsIsHelpError
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        print("captionkit: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
