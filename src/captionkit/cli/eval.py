"""``captionkit eval``: score captioning systems against human references, side by side.

Thin on purpose: captions come from the public API (``--model``, through the results store so
a rerun does not recompute) or from files (``--candidates``); everything else lives in
:mod:`captionkit.eval`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from captionkit.errors import ConfigError


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip().lower() for item in values or [] for v in item.split(",") if v.strip()]


def _named(spec: str) -> tuple[str, str]:
    """``NAME=VALUE`` names a system explicitly; otherwise the value names itself."""
    if "=" in spec and not spec.split("=", 1)[0].startswith(("hf:", "/", ".")):
        name, value = spec.split("=", 1)
        return name, value
    return "", spec


def check_backend_options(spec: str, options: dict[str, Any]) -> None:
    """The backend ``spec`` names exists and accepts ``options``: checked before any work."""
    from pydantic import ValidationError

    from captionkit.captioners import registry

    name, _ = registry.parse_spec(spec)
    try:
        registry.get_backend(name).Options(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"backend '{name}' (--model {spec}): {where}: {first['msg']}") from None


# fmt: off
def command(
    dataset: str = typer.Argument(..., help="references.json folder/file, Flickr token file, COCO/Karpathy JSON, folder of images with sidecar .txt, or hf:NAME."),
    model: list[str] = typer.Option(None, "--model", "-m", help="Backend to caption the images with (repeatable; NAME=SPEC)."),
    candidates: list[str] = typer.Option(None, "--candidates", "-c", help="JSONL/CSV/COCO-results file of captions to score (repeatable; NAME=FILE)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Backend option KEY=VALUE for the --model runs (repeatable), as in `captionkit caption`."),
    output: Path | None = typer.Option(None, "--output", help="Write a report: .html, .md or .json (checked before any work)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    metrics: list[str] = typer.Option(None, "--metrics", help="Comma list: bleu,meteor,rouge,cider,spice,clipscore,chair,stats (default: all but clipscore, which is on when --clip-model is given)."),
    clip_model: str | None = typer.Option(None, "--clip-model", help="CLIP for CLIPScore: HF id or local dir."),
    detections: Path | None = typer.Option(None, "--detections", help="JSON image -> COCO labels, ground truth for CHAIR."),
    split: str | None = typer.Option(None, "--split", help="train / val / test."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Where the images are."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use the first N images."),
    style: str = typer.Option("short", "--style", help="Caption style for --model."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    force: bool = typer.Option(False, "--force", help="Recaption even if the store has it."),
    examples: int = typer.Option(24, "--examples", min=0, help="Examples in the report."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed"),
    human: bool = typer.Option(False, "--human", help="Add the first reference as a 'human' system; every system is then scored against the remaining references (a human upper bound)."),
) -> None:
    """Score captions with BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE, CLIPScore and CHAIR."""
    from rich.console import Console

    from captionkit.cli.display import markup
    from captionkit.eval.datasets import load_dataset
    from captionkit.eval.evaluate import DEFAULT_ALL, evaluate
    from captionkit.eval.report import differences_lines, render_table, to_json, write_report

    console = Console(stderr=True) if as_json else Console()
    if not console.is_terminal:  # piped output: do not squeeze the table into 80 columns
        console.width = max(console.width, 160)
    warn = Console(stderr=True)
    options = _check_arguments(model, candidates, option, output)
    ds = load_dataset(dataset, split, image_root=image_root).limit(limit)
    if not ds.items:
        raise ConfigError(f"{dataset}: no images with references" + (f" in split {split}" * bool(split)))
    chosen = _split_list(metrics) or list(DEFAULT_ALL) + (["clipscore"] if clip_model else [])
    systems, sources = _systems(ds, human=human, candidates=candidates or [])
    for spec in model or []:
        name, backend = _named(spec)
        systems[name or backend], sources[name or backend] = _caption_with(
            ds, backend, name or backend, warn, options, style=style, batch_size=batch_size, force=force
        )
    report = evaluate(
        ds, systems, metrics=chosen, clip_scorer=_clip_scorer(chosen, clip_model),
        detections=_detections(detections), bootstrap_samples=bootstrap, seed=seed,
        sources=sources, warn=lambda msg: warn.print(f"[yellow]{markup(msg)}[/]"),
    )
    console.print(render_table(report))
    for line in differences_lines(report):
        console.print(markup(line))
    if output is not None:
        console.print(f"report written to {markup(write_report(report, output, examples))}")
    if as_json:
        json.dump(to_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
# fmt: on


def _check_arguments(
    model: list[str] | None,
    candidates: list[str] | None,
    option: list[str] | None,
    output: Path | None,
) -> dict[str, Any]:
    """Every argument that can be checked before any work is: the backend options of each
    ``--model`` (a typo in the second must not wait for the first's run) and the report path."""
    from captionkit.cli.backend_flags import parse_options
    from captionkit.cli.prechecks import check_output_file
    from captionkit.eval.report import check_report_path

    if not model and not candidates:
        raise ConfigError("nothing to score: give --model SPEC and/or --candidates FILE")
    for pair in option or []:
        if "=" not in pair and Path(pair).suffix.lower() in {".html", ".htm", ".md", ".json"}:
            raise ConfigError(
                f"-o is now --option KEY=VALUE (backend options); write the report with "
                f"--output {pair}"
            )
    options = parse_options(option or [])
    if options and not model:
        raise ConfigError("-o/--option sets backend options of --model runs; no --model given")
    for spec in model or []:
        check_backend_options(_named(spec)[1], options)
    if output is not None:
        check_report_path(output)
        check_output_file(output, "--output")
    return options


def _systems(
    ds: Any, *, human: bool, candidates: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The systems that need no captioning: the held-out human reference and files."""
    from captionkit.eval.candidates import load_candidates

    systems: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    if human:
        ds.items = [it for it in ds.items if len(it.references) >= 2]
        systems["human"] = {it.key: it.references[0] for it in ds.items}
        sources["human"] = "first reference, held out"
        for it in ds.items:
            it.references = it.references[1:]
    for spec in candidates:
        name, path = _named(spec)
        name = name or Path(path).stem
        systems[name] = load_candidates(path, ds)
        sources[name] = f"file {path}"
    return systems, sources


def _caption_with(
    ds: Any, backend: str, name: str, warn: Any, options: dict[str, Any], **run: Any
) -> tuple[dict[str, str], str]:
    """Caption the dataset's images with ``backend`` through the public API (and its store)."""
    from captionkit import api
    from captionkit.cli.display import markup

    paths = [str(it.image) for it in ds.items]
    warn.print(f"captioning {len(paths)} images with {markup(backend)} ...")
    results = api.caption(paths, model=backend, progress=True, **run, **options)
    caps = {
        it.key: r.text
        for it, r in zip(ds.items, results, strict=True)
        if r.ok and r.text is not None
    }
    if len(paths) > len(caps):
        warn.print(
            f"[yellow]{markup(name)}: {len(paths) - len(caps)} image(s) failed and are left out[/]"
        )
    cached = sum(r.cached for r in results)
    return caps, f"model {backend}" + (f" ({cached} from store)" if cached else "")


def _clip_scorer(chosen: list[str], clip_model: str | None) -> Any:
    if "clipscore" not in chosen:
        return None
    if not clip_model:
        raise ConfigError("clipscore needs --clip-model ID|DIR (e.g. openai/clip-vit-base-patch32)")
    from captionkit.eval.clipscore import ClipScorer

    return ClipScorer.load(clip_model)


def _detections(path: Path | None) -> Any:
    """The ``--detections`` file (ground truth for CHAIR), read; None without one."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read --detections {path}: {exc}") from exc
