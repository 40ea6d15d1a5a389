"""``captionkit data``: prepare captioning datasets (``clean``, writer ``pairs``)."""

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


# fmt: off
@app.command("pairs")
def pairs(
    dataset: str = typer.Argument(..., help="Images with references: references.json, COCO/Flickr/Karpathy files, sidecars folder, hf:NAME."),
    input_: str = typer.Option("facts", "--input", help="facts (grounded facts -> references; for --writer) | description (describer -> teacher; for --rewrite)."),
    output: str = typer.Option(..., "--output", "-o", help="JSONL file to write."),
    model: str = typer.Option(None, "--model", help="--input description: the describer backend (any caption --model)."),
    teacher: str = typer.Option(None, "--teacher", help="--input description: text model writing the targets (default: the references)."),
    teacher_prompt: str = typer.Option(None, "--teacher-prompt", help="The teacher's instruction (recorded in each pair)."),
    style: str = typer.Option("short", "--style", help="Caption style the pairs teach."),
    eval_share: float = typer.Option(0.1, "--eval-share", help="Share of images held out (split by image)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image split."),
    min_words: int = typer.Option(3, "--min-words"),
    max_words: int = typer.Option(40, "--max-words"),
    few_shot: bool = typer.Option(True, "--few-shot/--no-few-shot", help="facts: include the writer's few-shot turns (as -o few_shot does at caption time)."),
    split: str = typer.Option(None, "--split", help="Dataset split to read (Karpathy/Flickr files)."),
    limit: int = typer.Option(None, "--limit", help="First N images only."),
    preview: int = typer.Option(3, "--preview", help="Pairs to print."),
) -> None:
    """Build writer training pairs (instruction / input / output + chat messages) as JSONL."""
    from captionkit.cli.prechecks import check_output_file
    from captionkit.train import pairs as pairing

    check_output_file(output, "--output")
    opts = pairing.PairOptions(
        input=input_, model=model, teacher=teacher, teacher_prompt=teacher_prompt,  # type: ignore[arg-type]
        style=style, eval_share=eval_share, seed=seed, min_words=min_words,
        max_words=max_words, few_shot=few_shot, limit=limit, split=split,
    )
    records = pairing.build_pairs(dataset, opts, echo=lambda m: typer.echo(m, err=True))
    for r in records[:preview]:
        typer.echo(f"[{r['split']}] {r['image']}\n  input:  {r['input'][:300]}\n  output: {r['output']}")
    path = pairing.write_jsonl(records, output)
    typer.echo(f"wrote {len(records)} pairs to {path}")
    typer.echo(f"train with: captionkit train writer --base smollm2 --data {path} --output DIR")
# fmt: on
