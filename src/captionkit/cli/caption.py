"""``captionkit caption``: caption files, folders, URLs or a list on stdin.

Only argument parsing and wiring live here; the work is the engine's
(``captionkit.engine.runner``), the same flow the Python API drives.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from captionkit.cli.display import markup, plain
from captionkit.errors import ConfigError, InputError

INPUTS = "Inputs"
MODEL = "Model"
PROMPT = "Prompt and decoding"
OUTPUT = "Output"
RUN = "Run"


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``-o key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists)."""
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


def backend_options(
    backend_cls: Any, settings: Any, flags: dict[str, Any], pairs: list[str]
) -> dict[str, Any]:
    """Config-file table < common flags the backend understands < explicit ``-o`` pairs."""
    fields = backend_cls.Options.model_fields
    options = settings.backend_options(backend_cls.name)
    for key, value in flags.items():
        if value is not None and key in fields:
            options[key] = value
    options.update(parse_options(pairs))
    return options


def _gather_inputs(
    inputs: list[str] | None,
    image_dir: list[str] | None,
    image_file: list[str] | None,
    url_image: list[str] | None,
) -> list[str]:
    items = [*(inputs or []), *(image_dir or []), *(image_file or []), *(url_image or [])]
    if not items:
        if not sys.stdin.isatty():
            return ["-"]
        raise InputError("nothing to caption: give files, folders, URLs or '-' for a list on stdin")
    for item in items:
        if item == "-" or item.startswith(("http://", "https://")):
            continue
        if not Path(item).expanduser().exists():
            raise InputError(f"{item}: no such file or folder")
    return items


def command(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders (recursive), URLs, or - to read paths from stdin.",
            show_default=False,
        ),
    ] = None,
    image_dir: Annotated[
        list[str] | None,
        typer.Option(
            "--image-dir",
            help="A folder of images (as the seed scripts had it).",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    image_file: Annotated[
        list[str] | None,
        typer.Option("--image-file", help="One image file.", rich_help_panel=INPUTS),
    ] = None,
    url_image: Annotated[
        list[str] | None, typer.Option("--url-image", help="One image URL.", rich_help_panel=INPUTS)
    ] = None,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive/--no-recursive", help="Descend into sub-folders.", rich_help_panel=INPUTS
        ),
    ] = True,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="Only paths matching this glob (repeatable), e.g. '*.png'.",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", help="Skip paths matching this glob (repeatable).", rich_help_panel=INPUTS
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="BACKEND:MODEL, e.g. grounded, hf:Salesforce/blip-image-captioning-base, hf:/path/to/dir, openai:gpt-4o-mini. Default: grounded.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps.", rich_help_panel=MODEL)
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16, float16.", rich_help_panel=MODEL)
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Load in 4bit or 8bit (needs bitsandbytes and a GPU).", rich_help_panel=MODEL
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Backend option KEY=VALUE (repeatable); see `captionkit backends`.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    rewrite: Annotated[
        str | None,
        typer.Option(
            help="Rewrite each description into the style with this text LLM (smollm2, hf:..., openai-compatible:NAME).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            help="grounded: ssd (offline default), yolox, ultralytics.", rich_help_panel=MODEL
        ),
    ] = None,
    detector_weights: Annotated[
        str | None,
        typer.Option(
            help="grounded: a local detector weights file (air-gapped use).", rich_help_panel=MODEL
        ),
    ] = None,
    writer: Annotated[
        str | None,
        typer.Option(
            help="grounded: template, or a text LLM (smollm2, hf:..., openai-compatible:NAME).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Hosted APIs: the key (default: OPENAI_API_KEY / GEMINI_API_KEY / ANTHROPIC_API_KEY).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    rewrite_base_url: Annotated[
        str | None,
        typer.Option(
            help="Server URL of the --rewrite model when it is served.", rich_help_panel=MODEL
        ),
    ] = None,
    rewrite_api_key: Annotated[
        str | None,
        typer.Option(
            help="API key of the --rewrite model when it is hosted.", rich_help_panel=MODEL
        ),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            help="Hosted APIs: stop spending past this amount (set prices with -o price_per_1k_input=...).",
            rich_help_panel=RUN,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Count the images and estimate tokens/cost; caption nothing.",
            rich_help_panel=RUN,
        ),
    ] = False,
    style: Annotated[
        str | None,
        typer.Option(
            "--style",
            "-s",
            help="short, detailed, alt-text, social, training.",
            rich_help_panel=PROMPT,
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "-p",
            help="Your own instruction, replacing the style's.",
            rich_help_panel=PROMPT,
        ),
    ] = None,
    num_captions: Annotated[
        int,
        typer.Option(
            "--num-captions",
            "-n",
            min=1,
            help="Candidates per image; the best is used, all are kept in JSONL.",
            rich_help_panel=PROMPT,
        ),
    ] = 1,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest caption in tokens.", rich_help_panel=PROMPT)
    ] = None,
    num_beams: Annotated[
        int, typer.Option(min=1, help="Beam search width.", rich_help_panel=PROMPT)
    ] = 1,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample", help="Nucleus sampling instead of greedy/beam.", rich_help_panel=PROMPT
        ),
    ] = False,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Sampling temperature.", rich_help_panel=PROMPT)
    ] = 1.0,
    top_p: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.", rich_help_panel=PROMPT)
    ] = 0.9,
    top_k: Annotated[
        int, typer.Option(min=0, help="Top-k sampling (0: off).", rich_help_panel=PROMPT)
    ] = 0,
    seed: Annotated[
        int | None, typer.Option(help="Random seed for sampling.", rich_help_panel=PROMPT)
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="Also write all results as txt, jsonl or csv (to --output or stdout).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-O", help="File for --format (default: stdout).", rich_help_panel=OUTPUT
        ),
    ] = None,
    sidecar: Annotated[
        bool | None,
        typer.Option(
            "--sidecar/--no-sidecar",
            help="Write IMAGE.txt beside each image. Default: on, except when --format goes to stdout.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            help="Write sidecars here, mirroring the input folders.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    existing: Annotated[
        str | None,
        typer.Option(
            help="When a sidecar exists: skip (default), overwrite, append, prepend.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    extension: Annotated[
        str | None,
        typer.Option(
            help="Sidecar extension (default .txt; e.g. .caption).", rich_help_panel=OUTPUT
        ),
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="Text put before every caption.", rich_help_panel=OUTPUT)
    ] = None,
    suffix: Annotated[
        str | None, typer.Option(help="Text put after every caption.", rich_help_panel=OUTPUT)
    ] = None,
    trigger_word: Annotated[
        str | None,
        typer.Option(
            help="LoRA trigger word, put first: 'TRIGGER, caption'.", rich_help_panel=OUTPUT
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help="Images per model call (default: the backend's).",
            rich_help_panel=RUN,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads reading and decoding images ahead of the model.",
            rich_help_panel=RUN,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Results store (SQLite) path, or 'none'. Default: the user cache dir.",
            rich_help_panel=RUN,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Recompute even what the store already holds.", rich_help_panel=RUN
        ),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar (default: when stderr is a terminal).",
            rich_help_panel=RUN,
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(help="Refuse images larger than this many pixels.", rich_help_panel=RUN),
    ] = None,
    max_file_mb: Annotated[
        float | None,
        typer.Option(
            help="Refuse image files (local or downloaded) larger than this many MB (default 50).",
            rich_help_panel=RUN,
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for a URL download.", rich_help_panel=RUN)
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help="TOML config file (default: $CAPTIONKIT_CONFIG or the user config dir).",
            rich_help_panel=RUN,
        ),
    ] = None,
) -> None:
    """Caption images and write sidecar .txt files and/or a JSONL/CSV/TXT stream."""
    from captionkit.api import load_captioner, open_store
    from captionkit.captioners import registry
    from captionkit.config import load_settings
    from captionkit.engine.progress import make_progress
    from captionkit.engine.runner import Runner, RunOptions
    from captionkit.engine.sinks import SidecarSink, Sink, StreamSink, check_writable
    from captionkit.inputs.decode import DecodeLimits
    from captionkit.inputs.fetch import FetchLimits
    from captionkit.inputs.sources import count_sources
    from captionkit.styles import get_style
    from captionkit.types import CaptionRequest, Decoding

    settings = load_settings(
        config,
        model=model,
        style=style,
        batch_size=batch_size,
        workers=workers,
        device=device,
        dtype=dtype,
        store=store,
        existing=existing,
        sidecar_extension=extension,
        prefix=prefix,
        suffix=suffix,
        trigger_word=trigger_word,
        max_pixels=max_pixels,
        max_file_mb=max_file_mb,
        timeout=timeout,
        max_new_tokens=max_new_tokens,
    )
    get_style(settings.style)
    items = _gather_inputs(inputs, image_dir, image_file, url_image)
    walk = {
        "recursive": recursive,
        "include": tuple(include or ()),
        "exclude": tuple(exclude or ()),
    }
    stdin_lines = None
    if "-" in items:
        stdin_lines = _peek_lines(sys.stdin)
        if stdin_lines is None:
            if not (inputs or image_dir or image_file or url_image):  # stdin was implicit
                raise InputError(
                    "nothing to caption: no inputs given and standard input is empty; give "
                    "files, folders, URLs, or '-' with a list of paths on stdin"
                )
            items = [i for i in items if i != "-"]
            if not items:  # an empty list is a valid list: nothing to do, and no model load
                _console().print("no images found: the list on standard input is empty")
                return
    backend_name, _ = registry.parse_spec(settings.model)
    backend_cls = registry.get_backend(backend_name)
    options = backend_options(
        backend_cls,
        settings,
        {
            "device": settings.device,
            "dtype": settings.dtype,
            "quantize": quantize,
            "detector": detector,
            "detector_weights": detector_weights,
            "writer": writer,
            "api_key": api_key,
            "base_url": base_url,
            "max_cost": max_cost,
        },
        option or [],
    )
    request = CaptionRequest(
        style=settings.style,
        prompt=prompt,
        num_captions=num_captions,
        decoding=Decoding(
            max_new_tokens=settings.max_new_tokens,
            num_beams=num_beams,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            top_p=top_p if sample else 1.0,
            top_k=top_k if sample else 0,
            seed=seed,
        ),
    )
    _require_images(items, walk)
    rewrite_options = {"base_url": rewrite_base_url, "api_key": rewrite_api_key}
    if dry_run:  # writes nothing, so checks no output
        captioner = load_captioner(
            settings.model,
            rewrite=rewrite,
            rewrite_options={k: v for k, v in rewrite_options.items() if v is not None},
            **options,
        )
        try:
            _dry_run(captioner, _sources(items, walk, stdin_lines), request)
        finally:
            captioner.close()
        return
    if sidecar is None:
        sidecar = fmt is None or output is not None
    sinks: list[Sink] = []
    if sidecar:
        sinks.append(
            SidecarSink(
                extension=settings.sidecar_extension,
                output_dir=output_dir,
                existing=settings.existing,
                roots=items,
            )
        )
    if fmt is not None:
        sinks.append(StreamSink(fmt, output))
    elif not sidecar or any(i == "-" or i.startswith(("http://", "https://")) for i in items):
        sinks.append(StreamSink("txt", None))  # URLs have no folder for a sidecar: print them
    check_writable(sinks, items)  # before the model loads: never compute what cannot be written
    captioner = load_captioner(
        settings.model,
        rewrite=rewrite,
        rewrite_options={k: v for k, v in rewrite_options.items() if v is not None},
        **options,
    )
    results_store = open_store(settings.store)
    bar = make_progress(progress)
    if "-" not in items:
        threading.Thread(
            target=lambda: bar.set_total(count_sources(items, **walk)), daemon=True
        ).start()
    runner = Runner(
        captioner,
        request,
        store=results_store,
        sinks=sinks,
        progress=bar,
        options=RunOptions(
            batch_size=settings.batch_size,
            workers=settings.workers,
            force=force,
            decode=DecodeLimits(max_pixels=settings.max_pixels),
            fetch=FetchLimits(
                max_bytes=int(settings.max_file_mb * 1024 * 1024), timeout=settings.timeout
            ),
            prefix=settings.prefix,
            suffix=settings.suffix,
            trigger_word=settings.trigger_word,
        ),
    )
    skipped: Counter[str] = Counter()
    try:
        summary = runner.run(_sources(items, walk, stdin_lines, skipped))
    finally:
        captioner.close()
        if results_store is not None:
            results_store.close()
    _print_summary(summary, results_store, getattr(captioner, "stats", None), skipped)
    raise typer.Exit(summary.exit_code)


def _console() -> Any:
    """Where notes and the summary go: stderr, so stdout stays the caption stream. Lines are
    not wrapped, so a long path stays whole (and findable with grep)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _peek_lines(stream: Any) -> Iterator[str] | None:
    """The lines of ``stream`` with the first path already read, or None when it lists none.

    Reading one line before the model loads tells "an empty list" apart from "a list", so
    an empty pipe never costs a model load.
    """
    for line in stream:
        text = line.strip()
        if text and not text.startswith("#"):
            return itertools.chain([line], stream)
    return None


def _sources(
    items: list[str],
    walk: dict[str, Any],
    stdin_lines: Iterator[str] | None,
    skipped: Counter[str] | None = None,
) -> Iterator[Any]:
    """The run's sources; ``skipped`` counts what the folder walk passed over, by reason."""
    from captionkit.inputs.sources import iter_sources

    return iter_sources(items, stdin=stdin_lines, skipped=skipped, **walk)  # type: ignore[arg-type]


def _require_images(items: list[str], walk: dict[str, Any]) -> None:
    """Stop before the model loads when the files and folders named hold no image at all.

    Folders with nothing to caption are almost always a wrong path or filter, so this is an
    error (exit 2) rather than a successful run of nothing. Finding the first image ends the
    check, so it costs nothing on a folder that has images. Runs with URLs or a list on
    stdin are not checked: those cannot be looked at twice.
    """
    if any(i == "-" or i.startswith(("http://", "https://")) for i in items):
        return
    skipped: Counter[str] = Counter()
    if next(iter(_sources(items, walk, None, skipped)), None) is not None:
        return
    where = ", ".join(plain(i) for i in items)
    seen = _skipped_text(skipped, every=True)
    narrowed = [
        flag
        for flag, on in (
            ("--include", walk["include"]),
            ("--exclude", walk["exclude"]),
            ("--no-recursive", not walk["recursive"]),
        )
        if on
    ]
    hint = f"; check {', '.join(narrowed)}" if narrowed else ""
    raise InputError(f"no images found in {where}" + (f" ({seen})" if seen else "") + hint)


#: How each reason :func:`iter_sources` counts is named in the summary (one, several).
SKIP_REASONS = {
    "hidden": ("hidden file", "hidden files"),
    "broken symlink": ("broken symlink", "broken symlinks"),
    "not an image": ("file that is not an image", "files that are not images"),
}


def _skipped_text(skipped: Counter[str], *, every: bool = False) -> str:
    """``2 hidden files, 1 broken symlink``; files that are not images (sidecars, mostly)
    are named only when ``every`` is set, as when no image was found at all."""
    parts = []
    for reason, n in skipped.items():
        if not n or (reason == "not an image" and not every):
            continue
        one, many = SKIP_REASONS.get(reason, (reason, reason))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts)


def _dry_run(captioner: Any, sources: Any, request: Any) -> None:
    """Read only image headers, then ask the backend what the run would cost."""
    from PIL import Image

    sizes, unreadable = [], 0
    for source in sources:
        if source.path is None:
            unreadable += 1  # URLs are not fetched in a dry run
            continue
        try:
            with Image.open(source.path) as img:
                sizes.append(img.size)
        except Exception:
            unreadable += 1
    line = f"{len(sizes)} image{'' if len(sizes) == 1 else 's'}"
    if unreadable:
        line += f" (+{unreadable} URLs or unreadable files not counted)"
    estimate = getattr(captioner, "estimate", None)
    if estimate is None:
        typer.echo(f"{line}; backend '{captioner.name}' runs locally: no token cost")
        return
    est = estimate(sizes, request)
    cost = est.get("cost")
    money = f", cost ~{cost:.4f}" if cost is not None else " (set prices to estimate cost)"
    typer.echo(
        f"{line}: ~{est['input_tokens']:,} input + ~{est['output_tokens']:,} output tokens{money}"
    )


def _print_summary(
    summary: Any, store: Any, stats: Any = None, skipped: Counter[str] | None = None
) -> None:
    """The run in a few lines on stderr; every path and message is escaped (see display)."""
    console = _console()
    if not summary.total and not summary.interrupted:
        console.print("no images found: the paths listed on standard input held none")
    parts = [f"{summary.captioned} captioned"]
    if summary.cached:
        parts.append(f"{summary.cached} from the store")
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (sidecar exists)")
    if summary.failed:
        parts.append(f"[red]{summary.failed} failed[/red]")
    rate = f" at {summary.rate:.2f} img/s" if summary.captioned else ""
    console.print(f"{', '.join(parts)} in {summary.seconds:.1f} s{rate}")
    passed_over = _skipped_text(skipped or Counter())
    if passed_over:
        console.print(f"  skipped: {passed_over}")
    if stats is not None:
        totals = {k: v for k, v in stats().items() if v}
        cost = totals.pop("cost", None)
        if totals:
            text = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in totals.items())
            console.print(f"  {text}" + (f", cost: {cost:.4f}" if cost else ""))
    for source, error in summary.failures[:20]:
        console.print(f"  [red]failed[/red] {markup(source)}: {markup(error)}")
    if summary.failed > 20:
        console.print(f"  ... and {summary.failed - 20} more (see --format jsonl for all)")
    if summary.interrupted:
        where = f" in {markup(store.path)}" if store is not None else ""
        console.print(
            f"[yellow]interrupted[/yellow]: finished captions are kept{where}; rerun the same command to resume"
        )
