"""``captionkit train``: fine-tune an encoder-decoder captioner (teacher forcing, then SCST)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

#: What ``--scst`` without ``--init`` takes over from the teacher-forcing run in --output.
INHERITED = (
    "data",
    "val_split",
    "seed",
    "max_length",
    "batch_size",
    "grad_accum",
    "precision",
    "freeze",
    "decoding",
    "num_beams",
    "top_p",
    "temperature",
    "device",
)


# fmt: off
def command(
    data: str = typer.Option(None, "--data", help="Dataset: references.json, Flickr/COCO/Karpathy files, or a folder."),
    output: str = typer.Option(..., "--output", "-o", help="Run folder (model, checkpoints)."),
    encoder: str = typer.Option(None, "--encoder", help="HF vision encoder id or folder."),
    decoder: str = typer.Option(None, "--decoder", help="HF causal-LM decoder id or folder."),
    init: str = typer.Option(None, "--init", help="Continue from an encoder-decoder captioning checkpoint."),
    freeze: list[str] = typer.Option(None, "--freeze", help="encoder | decoder | decoder-except-last-N | cross-attention-only (repeatable)."),
    scst: bool = typer.Option(False, "--scst", help="Self-critical phase (CIDEr-D reward); continues from --init or, without it, from the model in --output (written to OUTPUT/scst)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (default: 3)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Per-device batch (default: 16)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default: 5e-5; SCST 1e-5)."),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help="(default: 0)."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Accumulation steps (default: 1)."),
    precision: str = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16."),
    val_split: float = typer.Option(None, "--val-split", help="Held-out image share when the data has no val split (0.1)."),
    decoding: str = typer.Option(None, "--decoding", help="Validation/default decoding: greedy | beam | nucleus."),
    num_beams: int = typer.Option(None, "--num-beams", help="Beams for --decoding beam (3)."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus mass for --decoding nucleus."),
    temperature: float = typer.Option(None, "--temperature", help="Sampling temperature."),
    max_length: int = typer.Option(None, "--max-length", help="Caption tokens (default: 40)."),
    scst_samples: int = typer.Option(None, "--scst-samples", help="Samples per image (5)."),
    augment: bool = typer.Option(False, "--augment", help="Random crop + flip (off by default)."),
    save_every: int = typer.Option(None, "--save-every", help="Epochs between checkpoints; 0: final model only (1)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (42)."),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even if a GPU is present."),
) -> None:
    """Fine-tune a ViT/DeiT/Swin/CLIP encoder + GPT-2-style decoder captioner on your images.

    The result loads with: captionkit caption --model hf:OUTPUT IMAGES
    """
    from captionkit.cli.prechecks import check_output_dir
    from captionkit.train.loop import run

    flags = dict(locals())
    given = {k: v for k, v in flags.items() if k in _CONFIG_FLAGS and v is not None}
    if freeze:
        given["freeze"] = tuple(freeze)
    if augment:
        given["augment"] = True
    if cpu:
        given["device"] = "cpu"
    config, out = _config(given, Path(output), scst=scst, resume=resume)
    check_output_dir(out, "--output")  # before any model loads or an epoch runs
    result = run(config, echo=typer.echo)
    best = ""
    if result.best_metric is not None:
        best = f", best val CIDEr-D {result.best_metric:.3f} ({Path(str(result.best_checkpoint)).name})"
    typer.echo(f"done: {result.global_step} steps{best}")
    typer.echo(f"model saved to {result.output}; metrics in {result.output / 'metrics.csv'}")
    typer.echo(f"caption with: captionkit caption --model hf:{result.output} IMAGES")
# fmt: on


#: The flags that are TrainConfig fields of the same name (None: not given).
_CONFIG_FLAGS = frozenset(
    "data encoder decoder init epochs batch_size lr label_smoothing grad_accum precision "
    "val_split decoding num_beams top_p temperature max_length scst_samples save_every "
    "seed".split()
)


def _config(given: dict[str, Any], out: Path, *, scst: bool, resume: bool) -> tuple[Any, Path]:
    """The TrainConfig of this run and its folder: the flags given, over a resumed run's own
    config or, for ``--scst``, over the teacher-forcing run it continues."""
    from captionkit.errors import ConfigError
    from captionkit.train.config import CONFIG_NAME, TrainConfig

    init, encoder = given.get("init"), given.get("encoder")
    if scst and not init and not encoder and not resume:
        # the teacher-forcing run in --output is the starting point; keep it intact
        if not (out / "config.json").is_file():
            raise ConfigError(f"--scst needs --init CHECKPOINT or a trained model in '{out}'")
        given["init"] = str(out)
        out = out / "scst"
    elif scst and resume and not init and (out / "scst" / CONFIG_NAME).is_file():
        out = out / "scst"  # resuming the self-critical phase started from this run
    start = Path(given.get("init", ""))
    if scst and not resume and (start / CONFIG_NAME).is_file():
        previous = TrainConfig.load(start)
        for key in INHERITED:  # same data, split and batch shape as the run it continues
            given.setdefault(key, getattr(previous, key))
    if resume:
        config = TrainConfig.load(out)
        for key, value in given.items():
            setattr(config, key, value)
        config.__post_init__()
    else:
        if "data" not in given:
            raise ConfigError("--data is required (a dataset file or folder)")
        config = TrainConfig(output=str(out), scst=scst, **given)
    config.extra["resume"] = resume
    return config, out
