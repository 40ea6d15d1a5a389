"""``captionkit train writer``: LoRA / QLoRA fine-tuning of a causal LM on caption pairs.

The pairs (:mod:`captionkit.train.pairs`) carry the chat the writer or rewriter sends at
caption time; each is rendered with :func:`captionkit.llm.hf_causal.render_prompt` (the same
code inference uses) and the loss covers only the response tokens. The base stays frozen and
bit-identical; only the LoRA matrices train. The run folder ends up holding the adapter, the
tokenizer and ``captionkit-adapter.json`` naming the base spec, so ``--writer hf:OUT`` and
``--rewrite hf:OUT`` load it on its base; ``--merge`` also writes ``OUT/merged``, a plain model.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, MissingDependencyError, require

CONFIG_NAME = "writer-config.json"
STATE_NAME = "trainer-state.pt"
Echo = Callable[[str], Any]


@dataclass
class WriterConfig:
    """One writer training run (the flags of ``captionkit train writer``)."""

    data: str
    output: str
    base: str = "smollm2"
    epochs: int = 2
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    #: None: peft's default for the architecture (attention projections).
    target_modules: list[str] | None = None
    qlora: bool = False
    max_length: int = 512
    #: Eval images whose captions are generated and scored each epoch (0: loss only).
    eval_images: int = 40
    eval_max_new_tokens: int = 40
    #: Stop an epoch after this many optimizer steps (quick runs and tests).
    max_steps: int | None = None
    merge: bool = False
    seed: int = 0
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "rank", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("--lr must be positive")

    def save(self, folder: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> WriterConfig:
        path = folder / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"--resume: no writer run in '{folder}' ({CONFIG_NAME} is missing)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class WriterResult:
    output: Path
    epochs: int
    steps: int
    metrics: list[dict[str, Any]]
    samples_per_second: float
    #: The trained peft model, still in memory (callers that evaluate right away).
    model: Any = None
    #: Eval loss of the untrained base (None when resumed or without eval pairs).
    initial_eval_loss: float | None = None


def encode(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int
) -> tuple[list[int], int]:
    """Token ids of one pair and where its response starts (labels before it are masked).

    An over-long prompt loses its start (as at inference), never the response.
    """
    from captionkit.llm.hf_causal import render_prompt

    prompt, special = render_prompt(tokenizer, messages[:-1])
    answer = messages[-1]["content"].strip()
    chat = bool(getattr(tokenizer, "chat_template", None))
    response = (answer if chat else " " + answer) + (tokenizer.eos_token or "")
    p_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"][: max_length - 1]
    p_ids = p_ids[-(max_length - len(r_ids)) :]
    return p_ids + r_ids, len(p_ids)


def collate(rows: list[tuple[list[int], int]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch; labels are -100 on the prompt and the padding."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (seq, start) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, start : len(seq)] = torch.tensor(seq[start:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def load_base(config: WriterConfig, device: str) -> tuple[Any, Any, str]:
    """Tokenizer, model and the resolved checkpoint of ``config.base`` (4-bit for QLoRA)."""
    import torch
    import transformers

    from captionkit.llm.hf_causal import quiet_progress
    from captionkit.llm.loader import resolve_checkpoint

    path = resolve_checkpoint(config.base)
    kwargs: dict[str, Any] = {}
    if config.qlora:
        require("bitsandbytes", "qlora", "--qlora")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        kwargs["device_map"] = {"": device}
    try:
        with quiet_progress(transformers):
            tok = transformers.AutoTokenizer.from_pretrained(path)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32, **kwargs
            )
    except (OSError, ValueError, KeyError) as exc:
        from captionkit.llm.hf_causal import _load_error

        raise _load_error(path, exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if not config.qlora:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' stub: a device is fine
    return tok, model, path


def with_lora(model: Any, config: WriterConfig) -> Any:
    try:
        import peft
    except ImportError as exc:
        raise MissingDependencyError("peft", "train", "writer training") from exc
    if config.qlora:
        model = peft.prepare_model_for_kbit_training(model)
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:  # target modules that the architecture lacks
        raise ConfigError(f"LoRA: {str(exc).splitlines()[0][:200]}") from None


def _batches(rows: list[Any], size: int, rng: random.Random) -> list[list[Any]]:
    order = list(range(len(rows)))
    rng.shuffle(order)
    return [[rows[i] for i in order[s : s + size]] for s in range(0, len(order), size)]


def eval_loss(model: Any, rows: list[Any], batch_size: int, pad_id: int, device: str) -> float:
    """Mean response-token loss over ``rows`` (token-weighted)."""
    import torch

    if not rows:
        return float("nan")
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[s : s + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            tokens += n
    model.train()
    return total / max(tokens, 1)


def generate_eval(
    model: Any, tok: Any, pairs: list[dict[str, Any]], config: WriterConfig, device: str
) -> dict[str, Any]:
    """Greedy captions for up to ``eval_images`` eval images, scored with captionkit's own
    CIDEr-D and BLEU-4 against every eval output of the same image."""
    from captionkit.eval.bleu import bleu
    from captionkit.eval.cider import cider_d
    from captionkit.llm.base import ChatMessage
    from captionkit.llm.hf_causal import HFCausalLLM
    from captionkit.types import Decoding

    refs: dict[str, list[str]] = {}
    prompts: dict[str, list[dict[str, str]]] = {}
    for p in pairs:
        refs.setdefault(p["image"], []).append(p["messages"][-1]["content"])
        prompts.setdefault(p["image"], p["messages"][:-1])
    keys = sorted(prompts)[: config.eval_images]
    if not keys:
        return {}
    side = tok.padding_side, tok.truncation_side
    llm = HFCausalLLM.from_model(model, tok, device, "training")
    model.eval()
    convs = [[ChatMessage(m["role"], m["content"]) for m in prompts[k]] for k in keys]
    texts = llm.chat(
        convs,
        Decoding(max_new_tokens=config.eval_max_new_tokens, temperature=0.0, stop=("\n\n", "###")),
    )
    model.train()
    tok.padding_side, tok.truncation_side = side
    cands = {k: t or "." for k, t in zip(keys, texts, strict=True)}
    ref_sub = {k: refs[k] for k in keys}
    cider, _ = cider_d(cands, ref_sub)
    b, _ = bleu(cands, ref_sub)
    return {
        "cider_d": cider,
        "bleu4": b[3],
        "samples": [(k, cands[k], refs[k][0]) for k in keys[:3]],
    }


def _write_metrics(out: Path, rows: list[dict[str, Any]]) -> None:
    keys = [
        "epoch",
        "step",
        "train_loss",
        "eval_loss",
        "cider_d",
        "bleu4",
        "samples_per_s",
        "seconds",
    ]
    with (out / "metrics.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ep = [r["epoch"] for r in rows]
    ax[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    ax[0].plot(ep, [r["eval_loss"] for r in rows], "o-", label="eval")
    ax[0].set_title("loss (response tokens)")
    ax[0].legend()
    ax[1].plot(ep, [r.get("cider_d") for r in rows], "o-", label="CIDEr-D")
    ax[1].plot(ep, [r.get("bleu4") for r in rows], "o-", label="BLEU-4")
    ax[1].set_title("eval captions")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "metrics.png")
    plt.close(fig)


def _save_adapter(
    model: Any, tok: Any, folder: Path, config: WriterConfig, path: str, first: dict[str, Any]
) -> None:
    from captionkit import __version__
    from captionkit.llm.loader import ADAPTER_MANIFEST

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    manifest = {
        "kind": "lora-writer",
        "base": config.base,
        "base_checkpoint": path,
        "qlora": config.qlora,
        "rank": config.rank,
        "alpha": config.alpha,
        "data": config.data,
        # The prompt layout it was trained on: a writer should send the same one.
        "prompt": {k: first[k] for k in ("source", "style", "few_shot") if k in first},
        "captionkit": __version__,
    }
    (folder / ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def run(config: WriterConfig, echo: Echo = print, resume: bool = False) -> WriterResult:
    """Train, evaluate each epoch, checkpoint each epoch, save the adapter (and merge)."""
    torch = require("torch", "train", "writer training")
    from captionkit.devices import resolve_device
    from captionkit.train.pairs import read_pairs

    out = Path(config.output).expanduser()
    device = resolve_device(config.device, extra="train", feature="writer training")
    if config.qlora and not device.startswith("cuda"):  # before any data or model loads
        raise ConfigError(
            "--qlora needs a CUDA GPU (bitsandbytes 4-bit); without one, leave out --qlora "
            "to train plain LoRA"
        )
    pairs = read_pairs(config.data)
    train_pairs = [p for p in pairs if p["split"] == "train"]
    eval_pairs = [p for p in pairs if p["split"] != "train"]
    if not train_pairs:
        raise ConfigError(f"{config.data}: no pairs with split 'train'")
    torch.manual_seed(config.seed)
    tok, model, path = load_base(config, device)
    model = with_lora(model, config)
    train_rows = [encode(tok, p["messages"], config.max_length) for p in train_pairs]
    eval_rows = [encode(tok, p["messages"], config.max_length) for p in eval_pairs]
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    out.mkdir(parents=True, exist_ok=True)
    metrics: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    ckpt_root = out / "checkpoints"
    if resume:
        done = sorted(ckpt_root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
        if done:
            import peft

            last = done[-1]
            weights = peft.utils.load_peft_weights(str(last), device=device)
            peft.set_peft_model_state_dict(model, weights)
            state = torch.load(last / STATE_NAME, weights_only=False)
            optim.load_state_dict(state["optimizer"])
            start_epoch, step, metrics = state["epoch"], state["step"], state["metrics"]
            echo(f"resumed from {last.name} (step {step})")
    config.save(out)
    pad = tok.pad_token_id
    initial = None
    if not metrics and eval_rows:  # the baseline every epoch's eval loss is read against
        initial = eval_loss(model, eval_rows, config.batch_size, pad, device)
        echo(f"before training: eval_loss {initial:.4f}")
    model.train()
    seen_samples, train_seconds = 0, 0.0
    for epoch in range(start_epoch, config.epochs):
        rng = random.Random(config.seed * 1000 + epoch)
        batches = _batches(train_rows, config.batch_size, rng)
        t0, losses, epoch_samples, epoch_steps = time.perf_counter(), [], 0, 0
        optim.zero_grad()
        for i, rows in enumerate(batches, 1):
            batch = {k: v.to(device) for k, v in collate(rows, pad).items()}
            loss = model(**batch).loss
            (loss / config.grad_accum).backward()
            losses.append(loss.item())
            epoch_samples += len(rows)
            if i % config.grad_accum == 0 or i == len(batches):
                optim.step()
                optim.zero_grad()
                step += 1
                epoch_steps += 1
                if config.max_steps and epoch_steps >= config.max_steps:
                    break
        seconds = time.perf_counter() - t0
        seen_samples += epoch_samples
        train_seconds += seconds
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": round(sum(losses) / len(losses), 4),
            "eval_loss": round(eval_loss(model, eval_rows, config.batch_size, pad, device), 4),
            "samples_per_s": round(epoch_samples / seconds, 3),
            "seconds": round(seconds, 1),
        }
        if config.eval_images and eval_pairs:
            scored = generate_eval(model, tok, eval_pairs, config, device)
            row["cider_d"] = round(scored["cider_d"], 4)
            row["bleu4"] = round(scored["bleu4"], 4)
            for key, text, ref in scored["samples"]:
                echo(f"  sample {key}: {text!r}  (ref: {ref!r})")
        metrics.append(row)
        shown = ", ".join(f"{k} {v}" for k, v in row.items() if k != "epoch")
        echo(f"epoch {epoch + 1}/{config.epochs}: {shown}")
        ckpt = ckpt_root / f"epoch-{epoch + 1}"
        ckpt.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(ckpt))
        torch.save(
            {"optimizer": optim.state_dict(), "epoch": epoch + 1, "step": step, "metrics": metrics},
            ckpt / STATE_NAME,
        )
        _write_metrics(out, metrics)
    _save_adapter(model, tok, out, config, path, train_pairs[0])
    if config.merge:
        merged = model.merge_and_unload() if not config.qlora else _merge_fresh(config, out, path)
        merged.save_pretrained(str(out / "merged"))
        tok.save_pretrained(str(out / "merged"))
        echo(f"merged model saved to {out / 'merged'}")
    rate = seen_samples / train_seconds if train_seconds else math.nan
    return WriterResult(out, config.epochs, step, metrics, rate, model, initial)


def _merge_fresh(config: WriterConfig, out: Path, path: str) -> Any:
    """QLoRA adapters merge into the full-precision base, not the 4-bit one."""
    import peft
    import torch
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return peft.PeftModel.from_pretrained(base, str(out)).merge_and_unload()
