"""Training throughput (images/s) of a ViT-base + GPT-2 captioner, bf16 against fp32.

The architecture is real size (ViT-B/16 at 224 px, GPT-2 124M with its 50,257-token head),
randomly initialised (no download), trained through ``captionkit.train.loop.run`` exactly as
``captionkit train`` does, on the Flickr8k sample in ../shared. Each (image, caption) pair is
one image seen; the first steps (CUDA warm-up, image decoding before the cache fills) are
excluded from the timing.

    python benchmarks/train_throughput.py                # GPU: fp32 and bf16
    python benchmarks/train_throughput.py --tiny --cpu   # CPU smoke check with tiny models
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "flickr8k-dev"


def build(tmp: Path, tiny: bool) -> tuple[Path, Path]:
    """Save a random encoder and decoder (+ word-level tokenizer) to folders."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(0)
    refs = json.loads((DATA / "references.json").read_text(encoding="utf-8"))
    words = sorted(
        {w for caps in refs.values() for c in caps for w in re.findall(r"\w+|[^\w\s]", c.lower())}
    )
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if tiny:
        enc_cfg = ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64,
        )  # fmt: skip
        dec_cfg = GPT2Config(vocab_size=len(vocab), n_embd=64, n_layer=2, n_head=2, n_positions=64)
        size = 32
    else:  # ViT-B/16 and GPT-2 small; GPT-2's full vocabulary keeps the LM head's true cost
        enc_cfg, dec_cfg, size = ViTConfig(), GPT2Config(), 224
    dec_cfg.bos_token_id, dec_cfg.eos_token_id, dec_cfg.pad_token_id = 1, 2, 0
    enc, dec = tmp / "encoder", tmp / "decoder"
    ViTModel(enc_cfg).save_pretrained(enc)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(enc)
    GPT2LMHeadModel(dec_cfg).save_pretrained(dec)
    tok.save_pretrained(dec)
    return enc, dec


def measure(enc: Path, dec: Path, out: Path, precision: str, args: argparse.Namespace) -> dict:
    from transformers import TrainerCallback

    from captionkit.train.config import TrainConfig
    from captionkit.train.loop import run

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_end(self, a, state, control, **kw):  # type: ignore[no-untyped-def]
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

    timer = Timer()
    config = TrainConfig(
        data=str(DATA), output=str(out), encoder=str(enc), decoder=str(dec),
        epochs=args.epochs, batch_size=args.batch_size, lr=1e-4, precision=precision,
        val_split=0.0, save_every=0, log_every=1000, progress=False, max_length=32,
        device="cpu" if args.cpu else "auto", workers=args.workers,
    )  # fmt: skip
    result = run(config, echo=lambda line: print(f"  {line}", file=sys.stderr), callbacks=[timer])
    warm = min(args.warmup, len(timer.marks) - 2)
    steps = len(timer.marks) - 1 - warm
    seconds = timer.marks[-1] - timer.marks[warm]
    images = steps * args.batch_size
    return {
        "precision": precision,
        "steps_timed": steps,
        "images_per_s": images / seconds,
        "trainable": result.trainable,
        "final_loss": next(
            (r["loss"] for r in reversed(result.history) if "loss" in r), float("nan")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke check)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    if not (DATA / "references.json").is_file():
        sys.exit(f"needs the Flickr8k sample at {DATA.resolve()}")
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name()
    print(f"device: {device}; {'tiny' if args.tiny else 'ViT-base + GPT-2'} random init; "
          f"batch {args.batch_size}; {args.epochs} epochs of 750 image-caption pairs")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        enc, dec = build(tmp, args.tiny)
        for precision in args.precisions.split(","):
            row = measure(enc, dec, tmp / f"run-{precision}", precision, args)
            rows.append(row)
            print(
                f"{precision:>5}: {row['images_per_s']:8.1f} images/s "
                f"({row['steps_timed']} steps timed, trainable {row['trainable']:,}, "
                f"last loss {row['final_loss']:.3f})"
            )
    by = {r["precision"]: r["images_per_s"] for r in rows}
    if "fp32" in by and "bf16" in by:
        print(f"bf16 / fp32 speed-up: {by['bf16'] / by['fp32']:.2f}x")


if __name__ == "__main__":
    main()
