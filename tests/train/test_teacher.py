"""Phase 1 (teacher forcing) on tiny random models and real Flickr8k photos, on CPU."""

from __future__ import annotations

import csv
import json

import pytest
from train_helpers import greedy_captions, make_subset, quick_config
from transformers import TrainerCallback

from captionkit.errors import ConfigError
from captionkit.train.loop import run


def test_overfit_eight_images_reproduces_their_captions(tiny_encoder, tiny_decoder, eight_images):
    config = quick_config(
        eight_images,
        eight_images.parent / "run",
        encoder=str(tiny_encoder),
        decoder=str(tiny_decoder),
        epochs=90,
        log_every=10,
    )
    result = run(config, echo=lambda _: None)
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert losses[0] > 4.0 and losses[-1] < 0.3 * losses[0] and losses[-1] < 0.5
    assert result.global_step == 90 and result.trainable == result.total

    refs = json.loads((eight_images / "references.json").read_text())
    names = sorted(refs)
    got = greedy_captions(result.output, [eight_images / "images" / n for n in names])
    want = [refs[n][0].lower().rstrip(" .") for n in names]
    pairs = list(zip(got, want, strict=True))
    assert sum(g == w for g, w in pairs) >= 7, pairs
    # the run folder is a complete, loadable checkpoint plus its report
    for name in (
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "metrics.csv",
        "curves.png",
        "captionkit_train.json",
    ):
        assert (result.output / name).is_file(), name


class StopAfterFirstEpoch(TrainerCallback):
    """Stands in for a crash: the run ends after epoch 1's checkpoint."""

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True
        return control


def test_validation_checkpoints_and_resume_at_the_same_step(tmp_path, tiny_encoder, tiny_decoder):
    data = make_subset(tmp_path / "data", 12, per_image=2)
    kw = dict(
        encoder=str(tiny_encoder),
        decoder=str(tiny_decoder),
        val_split=0.25,
        save_every=1,
        log_every=1,
        label_smoothing=0.1,
    )
    # 9 training images x 2 captions = 18 pairs -> 3 steps per epoch at batch 8
    straight = run(quick_config(data, tmp_path / "straight", epochs=2, **kw), echo=lambda _: None)
    assert straight.global_step == 6

    out = tmp_path / "interrupted"
    first = run(
        quick_config(data, out, epochs=2, **kw),
        echo=lambda _: None,
        callbacks=[StopAfterFirstEpoch()],
    )
    assert first.global_step == 3 and (out / "checkpoints" / "checkpoint-3").is_dir()
    with pytest.raises(ConfigError, match="--resume"):
        run(quick_config(data, out, epochs=2, **kw), echo=lambda _: None)
    resumed = run(
        quick_config(data, out, epochs=2, extra={"resume": True}, **kw), echo=lambda _: None
    )
    assert resumed.resumed_from_step == 3 and resumed.global_step == 6

    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    evals = [r for r in rows if r.get("eval_cider_d")]
    assert [float(r["epoch"]) for r in evals] == [1.0, 2.0]  # the CSV covers the whole run
    assert all(float(r["eval_bleu4"]) >= 0 for r in evals)
    assert resumed.best_checkpoint and resumed.best_metric is not None
    assert (out / "curves.png").stat().st_size > 1000
    lines = (out / "val_predictions.jsonl").read_text().splitlines()
    preds = [json.loads(line) for line in lines]
    assert len(preds) == 3 and all(len(p["references"]) == 2 for p in preds)
    # every checkpoint loads on its own too (image processor saved beside weights)
    assert (out / "checkpoints" / "checkpoint-6" / "preprocessor_config.json").is_file()

    # the interruption changed (next to) nothing: the uninterrupted run's losses, to float noise
    def losses(res):
        return [r["loss"] for r in res.history if "loss" in r]

    assert losses(resumed) == pytest.approx(losses(straight), rel=2e-3)
