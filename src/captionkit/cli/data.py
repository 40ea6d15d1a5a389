"""``captionkit data``: prepare captioning datasets (``clean``)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare captioning datasets.", no_args_is_help=True)


@app.command("clean")
def clean(
    path: str = typer.Argument(..., help="Folder of images (+ sidecar .txt) or a dataset file."),
    apply_: bool = typer.Option(
        False,
        "--apply",
        help="Move problem images to the quarantine folder and rewrite "
        "captions (originals kept there). Default: dry run.",
    ),
    report: str = typer.Option(
        "clean_report.csv", "--report", help="CSV of what would be removed and why."
    ),
    quarantine: str = typer.Option(None, "--quarantine", help="(default: PATH/_quarantine)."),
    min_side: int = typer.Option(64, "--min-side", help="Smaller images are 'tiny'."),
    max_aspect: float = typer.Option(4.0, "--max-aspect", help="Longer/shorter side limit."),
    uniform_std: float = typer.Option(4.0, "--uniform-std", help="Grey std of blank images."),
    near_dup: int = typer.Option(
        4, "--near-dup-distance", help="Perceptual-hash bits for near duplicates; -1: off."
    ),
    min_words: int = typer.Option(3, "--min-words"),
    max_words: int = typer.Option(60, "--max-words"),
    language: str = typer.Option(
        "en", "--language", help="Expected caption language (heuristic: en de fr es it nl pt)."
    ),
) -> None:
    """Report unreadable, duplicate, tiny, blank images and bad captions; --apply sets them aside."""
    from rich.console import Console
    from rich.table import Table

    from captionkit.cli.prechecks import check_output_file
    from captionkit.train import clean as cleaning

    check_output_file(report, "--report")  # before the scan, which can take a while
    opts = cleaning.CleanOptions(
        min_side=min_side,
        max_aspect=max_aspect,
        uniform_std=uniform_std,
        near_duplicate_distance=near_dup,
        min_words=min_words,
        max_words=max_words,
        language=language,
    )
    result = cleaning.scan(path, opts)
    csv_path = cleaning.write_csv(result, report)
    console = Console(stderr=True)
    table = Table(title=f"{result.images} images, {result.captions} captions checked")
    table.add_column("problem")
    table.add_column("count", justify="right")
    for check, n in sorted(result.counts().items()):
        table.add_row(check, str(n))
    console.print(table)
    n_out = len(result.quarantined())
    dropped = sum(p.action == "drop-caption" for p in result.problems)
    typer.echo(
        f"{n_out} images to quarantine, {dropped} captions to drop, "
        f"{result.normalised} captions to normalise; report: {csv_path}"
    )
    if apply_:
        qdir = cleaning.apply(result, quarantine)
        typer.echo(f"applied: {n_out} images moved to {qdir}; cleaned captions written")
    else:
        typer.echo("dry run: nothing changed (add --apply to move them aside)")
