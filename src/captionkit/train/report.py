"""What a run leaves beside its model: ``metrics.csv``, ``curves.png``, complete checkpoints.

The CSV is rewritten from the Trainer's log history (which checkpoints carry), so a resumed
run's CSV covers the whole run, not just the part after the interruption.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"

_ORDER = ["step", "epoch", "loss", "learning_rate", "grad_norm", "reward", "baseline"]
_EVAL = ["eval_loss", "eval_bleu4", "eval_cider_d"]
_SKIP = ("runtime", "per_second", "train_", "total_flos")


def history_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-loss and evaluation entries, without timing noise or the final summary."""
    rows = []
    for entry in log_history:
        if "train_runtime" in entry:
            continue
        row = {k: v for k, v in entry.items() if not any(s in k for s in _SKIP)}
        if any(k in row for k in ("loss", *_EVAL)):
            rows.append(row)
    return rows


def write_metrics(output: Path, log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write ``metrics.csv`` and ``curves.png``; return the rows written."""
    rows = history_rows(log_history)
    keys = {k for r in rows for k in r}
    columns = [k for k in _ORDER + _EVAL if k in keys] + sorted(keys - set(_ORDER) - set(_EVAL))
    output.mkdir(parents=True, exist_ok=True)
    with open(output / METRICS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns or ["step"])
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        plot_curves(rows, output / CURVES_PNG)
    return rows


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss by step on the left, validation BLEU-4 / CIDEr-D (or reward) by epoch on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "train loss"), ("eval_loss", "val loss")):
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if pts:
            left.plot(
                *zip(*pts, strict=True), marker="." if key == "eval_loss" else None, label=label
            )
    left.set_xlabel("step")
    left.set_title("loss")
    left.legend(loc="best")
    for key, label in (
        ("eval_bleu4", "val BLEU-4"),
        ("eval_cider_d", "val CIDEr-D"),
        ("reward", "train reward (sampled)"),
        ("baseline", "train reward (greedy)"),
    ):
        pts = [(r["epoch"], r[key]) for r in rows if key in r and "epoch" in r]
        if pts:
            right.plot(*zip(*pts, strict=True), marker="o", label=label)
    right.set_xlabel("epoch")
    right.set_title("metrics")
    if right.lines:
        right.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def MetricsCallback(output: Path, image_processor: Any) -> Any:
    """A TrainerCallback that keeps ``metrics.csv``/``curves.png`` current and checkpoints
    complete (the image processor saved beside the weights and tokenizer)."""
    base = _callback_base()

    class _MetricsCallback(base):  # type: ignore[misc, valid-type]
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write_metrics(output, state.log_history)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                image_processor.save_pretrained(ckpt)

    return _MetricsCallback()
