"""``captionkit backends`` and ``captionkit styles``: what is available here and what it needs."""

from __future__ import annotations

import typer


def backends(
    name: str = typer.Argument(None, help="Show this backend's options (-o KEY=VALUE)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered backends, the extra each needs, and whether it is installed here."""
    import json

    from captionkit.captioners.registry import describe_backends

    if name:
        _options(name)
        return

    infos = describe_backends()
    if json_out:
        typer.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from captionkit.cli.display import markup

    table = Table(title="captionkit backends (use --model NAME:MODEL)")
    for col in ("name", "ready", "install", "what"):
        table.add_column(col)
    for info in infos:
        # Cells are rich markup: the hint's [extra] and a plugin's error text are not tags.
        ready = (
            "[green]yes[/green]" if info.available else f"[red]no[/red] ({markup(info.problem)})"
        )
        install = f'pip install "captionkit[{info.extra}]"' if info.extra else "(core)"
        table.add_row(markup(info.name), ready, markup(install), markup(info.description))
    Console().print(table)


def styles() -> None:
    """List the caption styles (--style)."""
    from captionkit.styles import STYLES

    for style in STYLES.values():
        typer.echo(f"{style.name:10} {style.summary}")


def _options(name: str) -> None:
    """Each option of one backend: the pydantic Options model is the single source."""
    from captionkit.captioners.registry import get_backend

    cls = get_backend(name)
    typer.echo(f'{name}: {cls.description}  (pip install "captionkit[{cls.extra}]")')
    for field, info in cls.Options.model_fields.items():
        default = (
            "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        )
        annotation = info.annotation
        kind = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        for noise in ("typing.", "pydantic.types."):
            kind = kind.replace(noise, "")
        about = f"  {info.description}" if info.description else ""
        typer.echo(f"  -o {field}=...  {kind}, default {default}{about}")
