"""``captionkit backends`` and ``captionkit styles``: what is available here and what it needs."""

from __future__ import annotations

import typer


def backends(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered backends, the extra each needs, and whether it is installed here."""
    import json

    from captionkit.captioners.registry import describe_backends

    infos = describe_backends()
    if json_out:
        typer.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="captionkit backends (use --model NAME:MODEL)")
    for col in ("name", "ready", "install", "what"):
        table.add_column(col)
    for info in infos:
        ready = "[green]yes[/green]" if info.available else f"[red]no[/red] ({info.problem})"
        install = f'pip install "captionkit[{info.extra}]"' if info.extra else "(core)"
        table.add_row(info.name, ready, install, info.description)
    Console().print(table)


def styles() -> None:
    """List the caption styles (--style)."""
    from captionkit.styles import STYLES

    for style in STYLES.values():
        typer.echo(f"{style.name:10} {style.summary}")
