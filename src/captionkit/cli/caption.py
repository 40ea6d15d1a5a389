"""``captionkit caption``: caption files, folders, URLs or a list on stdin.

Parsing and printing only: run assembly (settings layering, sink policy, checks, store, the
dry-run estimate) is :mod:`captionkit.session`'s, the work is the engine's. Backend flags
(``--detector``, ``--api-key``...) are not declared here: they come from the backends'
Options (:mod:`captionkit.cli.backend_flags`).
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from captionkit.cli.backend_flags import META_KEY, parse_options
from captionkit.errors import InputError

__all__ = ["command", "parse_options"]

INPUTS, MODEL, PROMPT, OUTPUT, RUN = "Inputs", "Model", "Prompt and decoding", "Output", "Run"
TAGS = "Tag rules (tag captions: --style tags, taggers)"
CLUSTER = "Cluster (Ray)"
QUALITY = "Re-ranking and QA"


def _opt(*decls: str, panel: str, **kw: Any) -> Any:
    return typer.Option(*decls, rich_help_panel=panel, **kw)


# fmt: off
def command(
    ctx: typer.Context,
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files, folders (recursive), URLs, or - to read paths from stdin; with --ray also tables (.parquet, .csv, .jsonl), hf:ORG/DATASET and WebDataset shards (shards/{00000..00099}.tar).", show_default=False)] = None,
    image_dir: Annotated[list[str] | None, _opt("--image-dir", panel=INPUTS, help="A folder of images (as the seed scripts had it).")] = None,
    image_file: Annotated[list[str] | None, _opt("--image-file", panel=INPUTS, help="One image file.")] = None,
    url_image: Annotated[list[str] | None, _opt("--url-image", panel=INPUTS, help="One image URL.")] = None,
    recursive: Annotated[bool, _opt("--recursive/--no-recursive", panel=INPUTS, help="Descend into sub-folders.")] = True,
    include: Annotated[list[str] | None, _opt("--include", panel=INPUTS, help="Only paths matching this glob (repeatable), e.g. '*.png'.")] = None,
    exclude: Annotated[list[str] | None, _opt("--exclude", panel=INPUTS, help="Skip paths matching this glob (repeatable).")] = None,
    image_column: Annotated[str | None, _opt("--image-column", panel=INPUTS, help="Tables and datasets: the column with the image (path, URL or bytes). Default: image, url, path...")] = None,
    split: Annotated[str | None, _opt("--split", panel=INPUTS, help="hf: datasets: the split to caption, e.g. train.")] = None,
    videos: Annotated[bool | None, _opt("--videos/--no-videos", panel=INPUTS, help="Caption video files (mp4, webm, mov, mkv, avi...) as sampled frames (default, with captionkit[video] installed), or leave them out.")] = None,
    video_every: Annotated[float | None, _opt("--video-every", panel=INPUTS, metavar="SECONDS", help="Videos: one frame every SECONDS (default 5).")] = None,
    video_scenes: Annotated[float | None, _opt("--video-scenes", panel=INPUTS, metavar="THRESHOLD", help="Videos: the first frame of each shot instead; THRESHOLD is PySceneDetect's content score, 0-255 (try 27).")] = None,
    video_max_frames: Annotated[int | None, _opt("--video-max-frames", panel=INPUTS, min=1, help="Videos: at most N frames each, spread over the video (clip mode: the frames in the grid, default 4).")] = None,
    video_mode: Annotated[str | None, _opt("--video-mode", panel=INPUTS, help="frames: a caption per frame, VIDEO.txt lines '[mm:ss.mmm] caption' (default); clip: one caption per video from a grid of key frames.")] = None,
    model: Annotated[str | None, _opt("--model", "-m", panel=MODEL, help="BACKEND:MODEL, e.g. grounded, hf:Salesforce/blip-image-captioning-base, hf:/path/to/dir, openai:gpt-4o-mini. Default: grounded.")] = None,
    device: Annotated[str | None, _opt(panel=MODEL, help="auto, cpu, cuda, cuda:1, mps.")] = None,
    dtype: Annotated[str | None, _opt(panel=MODEL, help="auto, float32, bfloat16, float16.")] = None,
    option: Annotated[list[str] | None, _opt("--option", "-o", panel=MODEL, help="Backend option KEY=VALUE (repeatable); see `captionkit backends`.")] = None,
    rewrite: Annotated[str | None, _opt(panel=MODEL, help="Rewrite each description into the style with this text LLM (smollm2, hf:..., openai-compatible:NAME).")] = None,
    rewrite_base_url: Annotated[str | None, _opt(panel=MODEL, help="Server URL of the --rewrite model when it is served.")] = None,
    rewrite_api_key: Annotated[str | None, _opt(panel=MODEL, help="API key of the --rewrite model when it is hosted.")] = None,
    rerank: Annotated[str | None, _opt(panel=QUALITY, help="Re-rank the --num-captions candidates by image-text similarity: clip (openai/clip-vit-base-patch32) or clip:MODEL (an HF CLIP/SigLIP id or folder).")] = None,
    rerank_facts_weight: Annotated[float | None, _opt(panel=QUALITY, min=0.0, max=1.0, help="Weight of agreement with detected objects in the --rerank score (default 0.5 over grounded, else 0).")] = None,
    qa: Annotated[bool, _opt("--qa", panel=QUALITY, help="Check every caption (CLIPScore, objects the detector does not see, loops, refusals, preambles, empty or cut-off text): extra.qa in JSONL, counts in the summary.")] = False,
    qa_retry: Annotated[int | None, _opt("--qa-retry", panel=QUALITY, min=0, max=20, help="Regenerate a failing caption up to N times (sampling, new seed); keeps the first that passes, else the best. Implies --qa.")] = None,
    qa_min_clipscore: Annotated[float | None, _opt("--qa-min-clipscore", panel=QUALITY, min=0.0, help="Flag captions whose CLIPScore (0-2.5) is below this, e.g. 0.6. Implies --qa.")] = None,
    qa_action: Annotated[str | None, _opt("--qa-action", panel=QUALITY, help="mark (default: record in extra.qa) or fail (the image fails; the next run retries it). Implies --qa.")] = None,
    qa_clip_model: Annotated[str | None, _opt("--qa-clip-model", panel=QUALITY, help="CLIP/SigLIP for the QA score (default openai/clip-vit-base-patch32); none: no CLIPScore (offline). Implies --qa.")] = None,
    qa_objects: Annotated[bool | None, _opt("--qa-objects/--no-qa-objects", panel=QUALITY, help="Flag objects the caption names that the detector does not see (default on). Implies --qa.")] = None,
    dry_run: Annotated[bool, _opt("--dry-run", panel=RUN, help="Count the images and estimate tokens/cost; caption nothing.")] = False,
    stages: Annotated[str | None, _opt("--stages", panel=MODEL, help="A stages file (TOML: one table per stage with name, model or llm, style, prompt, options): describe -> shorten -> tag, each stage resumable; the last one is written.")] = None,
    style: Annotated[str | None, _opt("--style", "-s", panel=PROMPT, help="short, detailed, alt-text, social, training, tags.")] = None,
    prompt: Annotated[str | None, _opt("--prompt", "-p", panel=PROMPT, help="Your own instruction, replacing the style's; may use {name}, {directory}, {column:NAME} (and {caption}, {tags} in --stages). {{ }} for literal braces.")] = None,
    prompt_file: Annotated[str | None, _opt("--prompt-file", panel=PROMPT, help="A prompt in a file, or a JSON list of prompts / of {\"prompt\": ..., \"weight\": ...}: one picked per image (weighted, the same on every run).")] = None,
    num_captions: Annotated[int, _opt("--num-captions", "-n", panel=PROMPT, min=1, help="Candidates per image; the best is used, all are kept in JSONL.")] = 1,
    max_new_tokens: Annotated[int | None, _opt(panel=PROMPT, min=1, help="Longest caption in tokens.")] = None,
    num_beams: Annotated[int, _opt(panel=PROMPT, min=1, help="Beam search width.")] = 1,
    do_sample: Annotated[bool, _opt("--sample", panel=PROMPT, help="Nucleus sampling instead of greedy/beam.")] = False,
    temperature: Annotated[float, _opt(panel=PROMPT, min=0.0, help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, _opt(panel=PROMPT, min=0.0, max=1.0, help="Nucleus sampling mass.")] = 0.9,
    top_k: Annotated[int, _opt(panel=PROMPT, min=0, help="Top-k sampling (0: off).")] = 0,
    seed: Annotated[int | None, _opt(panel=PROMPT, help="Random seed for sampling.")] = None,
    format: Annotated[str | None, _opt("--format", "-f", panel=OUTPUT, help="Also write all results as txt, jsonl or csv (to --output or stdout), or a training-ready export: parquet, imagefolder, webdataset (folders), kohya, coco (JSON).")] = None,
    output: Annotated[str | None, _opt("--output", "-O", panel=OUTPUT, help="File (or folder: imagefolder, webdataset) for --format (default: stdout).")] = None,
    sidecar: Annotated[bool | None, _opt("--sidecar/--no-sidecar", panel=OUTPUT, help="Write IMAGE.txt beside each image. Default: on, except when --format goes to stdout.")] = None,
    output_dir: Annotated[str | None, _opt("--output-dir", panel=OUTPUT, help="Write sidecars here, mirroring the input folders.")] = None,
    existing: Annotated[str | None, _opt(panel=OUTPUT, help="When a sidecar exists: skip (default), overwrite, append, prepend.")] = None,
    extension: Annotated[str | None, _opt(panel=OUTPUT, help="Sidecar extension (default .txt; e.g. .caption).")] = None,
    prefix: Annotated[str | None, _opt(panel=OUTPUT, help="Text put before every caption.")] = None,
    suffix: Annotated[str | None, _opt(panel=OUTPUT, help="Text put after every caption.")] = None,
    trigger_word: Annotated[str | None, _opt(panel=OUTPUT, help="LoRA trigger word, put first: 'TRIGGER, caption'.")] = None,
    captions_layout: Annotated[str | None, _opt("--captions-layout", panel=OUTPUT, help="With --num-captions N: first (the best one, default), lines (N lines in IMAGE.txt: kohya/OneTrainer pick one per step), numbered (IMAGE.txt, IMAGE.1.txt, ...).")] = None,
    metadata: Annotated[str | None, _opt("--metadata", panel=OUTPUT, help="Also write the caption into the image's XMP: xmp (IMAGE.jpg.xmp sidecar) or embed (inside JPEG/PNG/WebP/TIFF; other formats get the sidecar). Needs exiftool.")] = None,
    keep_mtime: Annotated[bool, _opt("--keep-mtime", panel=OUTPUT, help="With --metadata embed: keep each image's modification time.")] = False,
    xmp_name: Annotated[str | None, _opt("--xmp-name", panel=OUTPUT, help="With --metadata xmp: full (photo.jpg.xmp: digiKam, darktable) or stem (photo.xmp: Capture One, Lightroom raw).")] = None,
    exclude_tags: Annotated[list[str] | None, _opt("--exclude-tags", panel=TAGS, help="Drop these tags (comma-separated or repeated; * matches anything: '*_background').")] = None,
    replace_tags: Annotated[list[str] | None, _opt("--replace-tags", panel=TAGS, help="OLD=NEW (repeatable); an empty NEW drops the tag.")] = None,
    always_first: Annotated[list[str] | None, _opt("--always-first", panel=TAGS, help="Tags moved to the front when present (comma-separated or repeated).")] = None,
    max_tags: Annotated[int | None, _opt("--max-tags", panel=TAGS, min=1, help="Keep at most this many tags.")] = None,
    tag_separator: Annotated[str | None, _opt("--tag-separator", panel=TAGS, help="Between tags (default ', ').")] = None,
    tag_sort: Annotated[str | None, _opt("--tag-sort", panel=TAGS, help="score (default), alpha, none.")] = None,
    keep_tokens: Annotated[int | None, _opt("--keep-tokens", panel=TAGS, min=0, help="The first K tags keep their place (kohya keep_tokens).")] = None,
    keep_underscores: Annotated[bool, _opt("--keep-underscores", panel=TAGS, help="Keep underscores in tags (default: spaces).")] = False,
    batch_size: Annotated[int | None, _opt("--batch-size", "-b", panel=RUN, min=1, help="Images per model call (default: the backend's).")] = None,
    workers: Annotated[int | None, _opt(panel=RUN, min=1, help="Threads reading and decoding images ahead of the model.")] = None,
    store: Annotated[str | None, _opt(panel=RUN, help="Results store (SQLite) path, or 'none'. Default: the user cache dir.")] = None,
    force: Annotated[bool, _opt("--force", panel=RUN, help="Recompute even what the store already holds.")] = False,
    progress: Annotated[bool | None, _opt("--progress/--no-progress", panel=RUN, help="Progress bar (default: when stderr is a terminal).")] = None,
    max_pixels: Annotated[int | None, _opt(panel=RUN, help="Refuse images larger than this many pixels.")] = None,
    max_file_mb: Annotated[float | None, _opt(panel=RUN, help="Refuse image files (local or downloaded) larger than this many MB (default 50).")] = None,
    timeout: Annotated[float | None, _opt(panel=RUN, help="Seconds to wait for a URL download.")] = None,
    config: Annotated[str | None, _opt(panel=RUN, help="TOML config file (default: $CAPTIONKIT_CONFIG or the user config dir).")] = None,
    ray: Annotated[str | None, _opt("--ray", panel=CLUSTER, help="Run on a Ray cluster: auto (the running cluster, else a local one), local, or ray://HOST:10001. Shards go to --output-dir; rerun to resume.")] = None,
    actors: Annotated[int | None, _opt("--actors", panel=CLUSTER, min=1, help="Captioners (one per Ray actor). Default: one per GPU, else 1.")] = None,
    gpus_per_actor: Annotated[float | None, _opt("--gpus-per-actor", panel=CLUSTER, min=0.0, help="GPUs each actor takes (fractions share a GPU). Default: 1 when the cluster has GPUs.")] = None,
) -> None:
    """Caption images and write sidecar .txt files and/or a JSONL/CSV/TXT stream."""
    from captionkit import session
    from captionkit.cli import report

    named = [*(inputs or []), *(image_dir or []), *(image_file or []), *(url_image or [])]
    items = named or _implicit_stdin()
    given = {k: v for k, v in locals().items() if k in session.EXPLICIT_KEYS}  # same names
    flags, opts = ctx.meta.get(META_KEY, {}), parse_options(option or [])
    if stages:
        return _stages(stages, items, given, flags, opts, dry_run, progress)
    run = session.build_run(
        items, backend_flags=flags, options=opts,
        rewrite_options={"base_url": rewrite_base_url, "api_key": rewrite_api_key}, **given,
    )
    session.check_inputs(run)  # before the model loads, as every check here
    report.note_ignored(run, ctx.meta.get(META_KEY + ".names", {}))
    stdin = _peek_lines(sys.stdin) if "-" in items else None
    if "-" in items and stdin is None:
        if not named:
            raise InputError("nothing to caption: no inputs given and standard input is empty; give files, folders, URLs, or '-' with a list of paths on stdin")
        run = run.without_stdin()
        if not run.inputs.items:  # an empty list is a valid list: nothing to do, no model load
            return report.console().print("no images found: the list on standard input is empty")
    if run.cluster is not None:
        return _cluster(run, dry_run)
    if dry_run:  # writes nothing, so checks no output
        with session.load(run) as captioner:
            estimate = session.estimate(run, captioner, session.sources(run, stdin=stdin))
        return report.print_estimate(estimate)
    sinks = session.make_sinks(run)
    session.check_outputs(run, sinks)
    skipped: Counter[str] = Counter()
    outcome = session.execute(run, session.sources(run, stdin=stdin, skipped=skipped, sinks=sinks), sinks=sinks, progress=_progress(run, progress))
    report.print_summary(outcome, skipped, sinks)
    raise typer.Exit(report.exit_code(outcome, sinks))
# fmt: on


def _stages(
    path: str,
    items: list[str],
    given: dict[str, Any],
    flags: dict[str, Any],
    opts: dict[str, Any],
    dry_run: bool,
    progress: bool | None,
) -> None:
    """``--stages FILE``: every stage planned and checked before the first model loads."""
    from captionkit import multistage, session
    from captionkit.cli import report
    from captionkit.cli.display import markup

    if dry_run or given.get("ray"):
        raise InputError(
            f"--stages runs on this machine, without {'--dry-run' if dry_run else '--ray'}"
        )
    planned = multistage.plan(path, items, backend_flags=flags, options=opts, **given)
    run = planned[0].run
    session.check_inputs(run)
    stdin = _peek_lines(sys.stdin) if "-" in items else None
    if "-" in items and stdin is None:
        raise InputError("nothing to caption: the list on standard input is empty")
    sinks = session.make_sinks(planned[-1].run)
    session.check_outputs(planned[-1].run, sinks)
    out = report.console()

    def started(i: int, stage: multistage.Stage) -> None:
        out.print(
            f"stage {i + 1}/{len(planned)}: {markup(stage.name)} ({markup(stage.run.backend)})"
        )

    skipped: Counter[str] = Counter()
    outcome = multistage.execute(
        planned,
        session.sources(run, stdin=stdin, skipped=skipped, sinks=sinks),
        sinks=sinks,
        progress=_progress(planned[-1].run, progress),
        on_stage=started,
    )
    report.print_summary(outcome, skipped, sinks)
    raise typer.Exit(report.exit_code(outcome, sinks))


def _cluster(run: Any, dry_run: bool) -> None:
    """``--ray``: the run goes to Ray Data (:mod:`captionkit.cluster`); a summary on stderr."""
    from captionkit.cli import report
    from captionkit.cli.display import markup
    from captionkit.cluster.driver import execute, output_folder

    if dry_run:
        raise InputError("--dry-run counts images on this machine: drop --ray for the estimate")
    if "-" in run.inputs.items:
        raise InputError("--ray reads files, folders, tables and datasets, not a list on stdin")
    output_folder(run)  # one line now, before Ray starts, when there is nowhere to write
    outcome = execute(run)
    out = report.console()
    parts = [f"{outcome.captioned} captioned"]
    if outcome.resumed:
        parts.append(f"{outcome.resumed} already in {outcome.output} (skipped)")
    if outcome.failed:
        parts.append(f"[red]{outcome.failed} failed[/red]")
    rate = f" at {outcome.rate:.2f} img/s" if outcome.captioned else ""
    actors = f" on {outcome.actors} actor(s)" if outcome.actors else ""
    out.print(f"{', '.join(parts)} in {outcome.seconds:.1f} s{rate}{actors}")
    for source, error in outcome.failures[:20]:
        out.print(f"  [red]failed[/red] {markup(source)}: {markup(error)}")
    out.print(f"  results: {outcome.output}/shards (manifest.json)")
    raise typer.Exit(outcome.exit_code)


def _implicit_stdin() -> list[str]:
    """No inputs named: a list on stdin when one is piped in, else a usage error."""
    if not sys.stdin.isatty():
        return ["-"]
    raise InputError("nothing to caption: give files, folders, URLs or '-' for a list on stdin")


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


def _progress(run: Any, enabled: bool | None) -> Any:
    """The progress bar; its total is counted in the background (not for stdin lists)."""
    from captionkit.engine.progress import make_progress
    from captionkit.inputs.sources import count_sources

    bar = make_progress(enabled)
    if "-" not in run.inputs.items:
        items, walk = list(run.inputs.items), run.inputs.walk()
        threading.Thread(
            target=lambda: bar.set_total(count_sources(items, **walk)), daemon=True
        ).start()
    return bar
