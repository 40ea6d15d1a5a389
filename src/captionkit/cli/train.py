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


# -- ``captionkit train writer`` / ``train vlm``: a group whose bare form is the command above --
app = typer.Typer(
    help="Fine-tune captioners: bare `train` (encoder-decoder), `train writer` (LoRA text "
    "writer), `train vlm` (vision encoder + projector + LLM).",
)


def _bare(ctx: typer.Context, **flags: Any) -> None:
    """``captionkit train --data ... --output ...``: the encoder-decoder trainer, unchanged."""
    if ctx.invoked_subcommand is not None:
        return
    if flags.get("output") is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    command(**flags)


def _bare_signature() -> Any:
    """``command``'s parameters (types resolved: typer reads them from the annotations) with
    the context first and ``--output`` optional, as the group's own options."""
    import inspect
    import typing

    hints = typing.get_type_hints(command)
    ctx = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    params = [ctx]
    for p in inspect.signature(command).parameters.values():
        default = p.default
        if p.name == "output":  # required by the bare command, not by the group
            default = typer.Option(None, "--output", "-o", help="Run folder (model, checkpoints).")
        params.append(
            p.replace(
                kind=inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[p.name]
            )
        )
    _bare.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return inspect.Signature(params)


_bare.__signature__ = _bare_signature()  # type: ignore[attr-defined]
app.callback(invoke_without_command=True)(_bare)


# fmt: off
@app.command("writer")
def writer(
    base: str = typer.Option(None, "--base", help="Causal LM: smollm2 (offline; the default), gguf:PATH, hf:ORG/NAME or a folder."),
    data: str = typer.Option(None, "--data", help="Pairs JSONL from `captionkit data pairs`."),
    output: str = typer.Option(..., "--output", "-o", help="Run folder: adapter, manifest, metrics, checkpoints."),
    epochs: int = typer.Option(None, "--epochs", help="(default: 2)"),
    batch_size: int = typer.Option(None, "--batch-size", help="(default: 4)"),
    grad_accum: int = typer.Option(None, "--grad-accum", help="(default: 4)"),
    lr: float = typer.Option(None, "--lr", help="(default: 2e-4)"),
    rank: int = typer.Option(None, "--rank", help="LoRA rank (8)."),
    alpha: int = typer.Option(None, "--alpha", help="LoRA alpha (16)."),
    dropout: float = typer.Option(None, "--dropout", help="LoRA dropout (0.05)."),
    target: list[str] = typer.Option(None, "--target", help="LoRA target module names (repeatable; default: peft's for the architecture)."),
    qlora: bool = typer.Option(False, "--qlora", help="4-bit base (bitsandbytes; CUDA only)."),
    max_length: int = typer.Option(None, "--max-length", help="Tokens per pair (512)."),
    eval_images: int = typer.Option(None, "--eval-images", help="Eval images captioned and scored per epoch (40; 0: loss only)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps per epoch at most (quick runs)."),
    merge: bool = typer.Option(False, "--merge", help="Also write OUTPUT/merged, a plain model."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last epoch."),
    seed: int = typer.Option(None, "--seed"),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even if a GPU is present."),
) -> None:
    """LoRA/QLoRA-tune a text LLM on caption pairs; use it with --writer/--rewrite hf:OUTPUT."""
    from captionkit.errors import ConfigError
    from captionkit.train.writer import WriterConfig, run

    out = Path(output)
    given = {k: v for k, v in dict(locals()).items() if k in _WRITER_FLAGS and v is not None}
    if target:
        given["target_modules"] = list(target)
    if cpu:
        given["device"] = "cpu"
    if resume:
        config = WriterConfig.load(out)
        for key, value in given.items():
            setattr(config, key, value)
        config.__post_init__()
    else:
        if not data:
            raise ConfigError("--data is required (pairs JSONL from `captionkit data pairs`)")
        given.setdefault("base", "smollm2")
        config = WriterConfig(output=str(out), data=data, **given)
    result = run(config, echo=typer.echo, resume=resume)
    typer.echo(f"done: {result.steps} steps, {result.samples_per_second:.2f} samples/s; adapter in {result.output}")
    typer.echo(f"use it: captionkit caption --writer hf:{result.output} IMAGES   (or --rewrite hf:{result.output})")
# fmt: on


_WRITER_FLAGS = frozenset(
    "base epochs batch_size grad_accum lr rank alpha dropout qlora max_length eval_images "
    "max_steps merge seed".split()
)


# fmt: off
@app.command("vlm")
def vlm(
    data: str = typer.Option(..., "--data", help="Dataset: references.json, Flickr/COCO/Karpathy files, or a folder."),
    output: str = typer.Option(..., "--output", "-o", help="Folder for the LLaVA checkpoint."),
    vision: str = typer.Option(None, "--vision", help="HF vision model id/folder (ViT, DeiT, CLIP, SigLIP, or a `captionkit train` run)."),
    llm: str = typer.Option(None, "--llm", help="Causal LM: smollm2, gguf:PATH, hf:ORG/NAME or a folder."),
    init: str = typer.Option(None, "--init", help="Continue from a LLaVA folder (e.g. a --stage 1 run)."),
    stage: str = typer.Option("both", "--stage", help="1: projector only; 2: LoRA on the LM (+ projector); both."),
    projector: str = typer.Option("mlp", "--projector", help="mlp (2-layer, GELU) | linear."),
    epochs: int = typer.Option(2, "--epochs", help="Epochs per stage."),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Stage-1 (projector) learning rate."),
    lr_lora: float = typer.Option(2e-4, "--lr-lora", help="Stage-2 learning rate."),
    rank: int = typer.Option(8, "--rank", help="LoRA rank."),
    vision_layers: int = typer.Option(0, "--vision-layers", help="Stage 2: also train the last N vision layers."),
    val_split: float = typer.Option(0.1, "--val-split", help="Held-out image share."),
    eval_images: int = typer.Option(20, "--eval-images", help="Eval images captioned per epoch."),
    max_steps: int = typer.Option(None, "--max-steps", help="Steps per epoch at most (quick runs)."),
    seed: int = typer.Option(0, "--seed"),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even if a GPU is present."),
) -> None:
    """Join a vision encoder and a causal LM through a projector (LLaVA) and train it to caption."""
    from captionkit.cli.prechecks import check_output_dir
    from captionkit.train.vlm import VLMConfig, run

    config = VLMConfig(
        data=data, output=output, vision=vision, llm=llm, init=init, stage=stage, projector=projector,
        epochs=epochs, batch_size=batch_size, lr=lr, lr_lora=lr_lora, rank=rank,
        vision_layers=vision_layers, val_split=val_split, eval_images=eval_images,
        max_steps=max_steps, seed=seed, device="cpu" if cpu else "auto",
    )
    check_output_dir(Path(output), "--output")
    out = run(config, echo=typer.echo)
    typer.echo(f"LLaVA checkpoint saved to {out}; metrics in {out / 'metrics.json'}")
    typer.echo(f"caption with: captionkit caption --model hf:{out} IMAGES")
# fmt: on
