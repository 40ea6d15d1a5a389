"""``captionkit results``: read what the results store holds."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect and export the results store.", no_args_is_help=True)


@app.command("export")
def export(
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl or csv."),
    output: str = typer.Option("-", "--output", "-O", help="File to write (default: stdout)."),
    store: str = typer.Option(None, help="Store path (default: the user cache dir)."),
    backend: str = typer.Option(None, help="Only this backend."),
    model: str = typer.Option(None, help="Only this model."),
) -> None:
    """Write every stored caption as JSONL or CSV."""
    from captionkit.api import open_store
    from captionkit.engine.sinks import StreamSink
    from captionkit.errors import ConfigError
    from captionkit.inputs.sources import Source

    if fmt not in ("jsonl", "csv"):
        raise ConfigError("--format must be jsonl or csv")
    db = open_store(store)
    assert db is not None
    sink = StreamSink(fmt, output)
    n = 0
    for result in db.iter_results(backend=backend, model=model):
        sink.write(result, Source(key=result.source))
        n += 1
    sink.close()
    db.close()
    typer.echo(f"{n} results exported from {db.path}", err=True)


@app.command("info")
def info(store: str = typer.Option(None, help="Store path (default: the user cache dir).")) -> None:
    """Where the store is and how many captions it holds."""
    from captionkit.api import open_store

    db = open_store(store)
    assert db is not None
    typer.echo(f"{db.path}: {db.count()} captions")
    db.close()
