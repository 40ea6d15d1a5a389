"""``captionkit results``: read what the results store holds.

Both commands open the store read-only: they never create, migrate or lock it, and a
damaged, foreign or locked file is one line (``StoreError``) saying how to move it aside.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Inspect and export the results store.", no_args_is_help=True)


def _store_path(store: str | None) -> Path:
    from captionkit.engine.store import default_store_path

    return Path(store).expanduser() if store else default_store_path()


@app.command("export")
def export(
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl or csv."),
    output: str = typer.Option("-", "--output", "-O", help="File to write (default: stdout)."),
    store: str = typer.Option(None, help="Store path (default: the user cache dir)."),
    backend: str = typer.Option(None, help="Only this backend."),
    model: str = typer.Option(None, help="Only this model."),
) -> None:
    """Write every stored caption as JSONL or CSV."""
    from captionkit.engine.sinks import StreamSink
    from captionkit.engine.store import ResultStore
    from captionkit.errors import ConfigError
    from captionkit.inputs.sources import Source

    if fmt not in ("jsonl", "csv"):
        raise ConfigError("--format must be jsonl or csv")
    path = _store_path(store)
    sink = StreamSink(fmt, output)
    sink.check()
    n = 0
    if path.exists() or store:
        db = ResultStore(path, readonly=True)
        try:
            for result in db.iter_results(backend=backend, model=model):
                sink.write(result, Source(key=result.source))
                n += 1
        except BaseException:
            sink.discard()  # a half export never replaces an earlier --output file
            raise
        finally:
            db.close()
    sink.close()
    typer.echo(f"{n} results exported from {path}", err=True)


@app.command("info")
def info(store: str = typer.Option(None, help="Store path (default: the user cache dir).")) -> None:
    """Where the store is and how many captions it holds."""
    from captionkit.engine.store import ResultStore

    path = _store_path(store)
    if not path.exists() and not store:
        typer.echo(f"{path}: 0 captions (no store yet)")
        return
    db = ResultStore(path, readonly=True)
    try:
        typer.echo(f"{db.path}: {db.count()} captions")
    finally:
        db.close()
