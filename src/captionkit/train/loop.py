"""One training run on Hugging Face's Seq2SeqTrainer, for both phases.

The Trainer brings mixed precision, gradient accumulation, per-epoch checkpoints with exact
resume, and best-checkpoint selection; this module wires captionkit's data, freezing,
validation metrics (BLEU-4 and CIDEr-D from :mod:`captionkit.eval.metrics`) and reporting
(``metrics.csv``, ``curves.png``) onto it. The phases differ only in their loss:
:mod:`captionkit.train.teacher` (cross-entropy) and :mod:`captionkit.train.scst`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError
from captionkit.train.config import TrainConfig
from captionkit.train.decode import apply as apply_decoding
from captionkit.train.decode import decode_texts, decoding_from_flags
from captionkit.train.report import MetricsCallback, write_metrics

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    output: Path
    global_step: int
    resumed_from_step: int
    trainable: int
    total: int
    best_checkpoint: str | None = None
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """``auto``: bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU."""
    import torch

    if precision == "auto":
        if not on_gpu:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not on_gpu:
        raise ConfigError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    return precision


def last_checkpoint(directory: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not directory.is_dir():
        return None
    found = get_last_checkpoint(str(directory))
    return Path(found) if found else None


def _metric_fn(tokenizer: Any, references: list[list[str]], sink: dict[str, Any]) -> Callable:
    """compute_metrics for the Trainer: decode predictions, score against all references."""
    from captionkit.eval.metrics import bleu, cider_d

    refs = {str(i): r for i, r in enumerate(references)}

    def compute(prediction: Any) -> dict[str, float]:
        preds = prediction.predictions
        if isinstance(preds, tuple):
            preds = preds[0]
        texts = decode_texts(tokenizer, preds)
        cands = {str(i): t for i, t in enumerate(texts)}
        sink["predictions"] = texts
        return {
            "bleu4": float(_bleu4(bleu(cands, refs)[0])),
            "cider_d": float(cider_d(cands, refs)[0]),
        }

    return compute


def _bleu4(value: Any) -> float:
    """BLEU-4 from the eval room's corpus value, whether one number or BLEU-1..4."""
    if isinstance(value, dict):
        for key in ("bleu4", "BLEU-4", "bleu_4", "Bleu_4", 4):
            if key in value:
                return float(value[key])
        return float(list(value.values())[-1])
    if isinstance(value, list | tuple):
        return float(value[-1])
    return float(value)


def run(
    config: TrainConfig,
    *,
    echo: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train one phase as ``config`` says; the best (or last) model is saved to its output.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (logging, early stop).
    """
    from transformers import Seq2SeqTrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    from captionkit.devices import resolve_device
    from captionkit.train.data import (
        CACHE_LIMIT,
        CaptionCollator,
        ImageDataset,
        PairDataset,
        PixelSource,
        split_examples,
    )
    from captionkit.train.freeze import apply_freeze, parse_specs
    from captionkit.train.model import build_model

    hf_logging.set_verbosity_error()
    if not config.progress:
        hf_logging.disable_progress_bar()
    out = Path(config.output)
    ckpt_dir = out / CHECKPOINTS
    resume_from = last_checkpoint(ckpt_dir)
    resume = bool(config.extra.get("resume"))
    if resume and resume_from is None:
        raise ConfigError(f"--resume: no checkpoint in '{ckpt_dir}'")
    if not resume and resume_from is not None:
        raise ConfigError(
            f"'{out}' already holds checkpoints; pass --resume to continue or pick a new --output"
        )
    decode = decoding_from_flags(
        config.decoding, config.num_beams, config.top_p, config.temperature, config.max_length
    )
    on_gpu = resolve_device(config.device, extra="train", feature="training").startswith("cuda")
    precision = resolve_precision(config.precision, on_gpu)
    set_seed(config.seed)

    bundle = build_model(config.encoder, config.decoder, config.init)
    apply_decoding(decode, bundle.model.generation_config)
    report = apply_freeze(bundle.model, parse_specs(config.freeze))
    echo(report.line())

    splits = split_examples(config.data, config.val_split, config.seed)
    n_images = len(splits.train) + len(splits.val)
    pixels = PixelSource(
        bundle.image_processor, augment=config.augment, cache=n_images <= CACHE_LIMIT
    )
    val_pixels = PixelSource(bundle.image_processor, cache=n_images <= CACHE_LIMIT)
    start = bundle.model.config.decoder_start_token_id
    tok = bundle.tokenizer
    if config.scst:
        train_ds: Any = ImageDataset(splits.train, pixels, with_index=True)
    else:
        train_ds = PairDataset(splits.train, pixels)
    collator = CaptionCollator(tok, start, config.max_length)
    val_ds = ImageDataset(splits.val, val_pixels) if splits.val else None
    echo(
        f"data: {len(splits.train)} training images ({len(train_ds)} examples), "
        f"{len(splits.val)} validation images; precision {precision}"
    )

    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    steps_per_epoch = max(1, math.ceil(len(train_ds) / (config.batch_size * config.grad_accum)))
    strategy, every = _save_strategy(config.save_every, steps_per_epoch)
    has_val = val_ds is not None
    workers = config.workers if config.workers is not None else (4 if on_gpu else 0)
    args = Seq2SeqTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        eval_strategy=strategy if has_val else "no",
        eval_steps=every,
        save_strategy=strategy,
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=has_val and strategy != "no",
        metric_for_best_model="cider_d" if has_val else None,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=min(config.log_every, steps_per_epoch),  # at least one log an epoch
        predict_with_generate=True,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        disable_tqdm=not config.progress,
        seed=config.seed,
        save_only_model=False,
    )
    sink: dict[str, Any] = {}
    common: dict[str, Any] = dict(
        model=bundle.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator,
        processing_class=tok,
        compute_metrics=_metric_fn(tok, [e.references for e in splits.val], sink)
        if has_val
        else None,
        callbacks=[MetricsCallback(out, bundle.image_processor), *callbacks],
    )
    if config.scst:
        from captionkit.train.scst import SCSTTrainer

        trainer: Any = SCSTTrainer(
            **common,
            references=[e.references for e in splits.train],
            samples=config.scst_samples,
            max_new_tokens=config.max_length,
        )
    else:
        from captionkit.train.teacher import TeacherForcingTrainer

        trainer = TeacherForcingTrainer(**common, label_smoothing=config.label_smoothing)
    resumed_step = 0
    if resume_from is not None:
        resumed_step = _checkpoint_step(resume_from)
        echo(f"resuming from {resume_from} (step {resumed_step})")
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    bundle.model = trainer.model
    bundle.save(out)
    config.save(out)
    history = write_metrics(out, trainer.state.log_history)
    if sink.get("predictions"):
        lines = [
            json.dumps({"image": e.image.name, "prediction": p, "references": e.references})
            for e, p in zip(splits.val, sink["predictions"], strict=False)
        ]
        (out / "val_predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TrainResult(
        output=out,
        global_step=trainer.state.global_step,
        resumed_from_step=resumed_step,
        trainable=report.trainable,
        total=report.total,
        best_checkpoint=trainer.state.best_model_checkpoint,
        best_metric=trainer.state.best_metric,
        history=history,
    )


def _save_strategy(save_every: int, steps_per_epoch: int) -> tuple[str, int]:
    if save_every == 0:
        return "no", steps_per_epoch
    if save_every == 1:
        return "epoch", steps_per_epoch
    return "steps", save_every * steps_per_epoch


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def clear_checkpoints(output: str | Path) -> None:
    """Remove the intermediate checkpoints of a finished run (the final model stays)."""
    shutil.rmtree(Path(output) / CHECKPOINTS, ignore_errors=True)
