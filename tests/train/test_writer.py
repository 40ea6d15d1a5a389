"""``captionkit train writer``: LoRA on a tiny random Llama, adapter folders, resume, QLoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from writer_helpers import build_tiny_llama, write_pairs

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")


def config(base: Path, data: Path, out: Path, **kw):
    from captionkit.train.writer import WriterConfig

    settings = dict(
        base=f"hf:{base}", data=str(data), output=str(out), epochs=3, batch_size=4,
        grad_accum=1, lr=5e-3, device="cpu", eval_images=2, eval_max_new_tokens=8,
    )  # fmt: skip
    settings.update(kw)
    return WriterConfig(**settings)


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    from captionkit.train.writer import run

    root = tmp_path_factory.mktemp("writer-run")
    data = write_pairs(root / "pairs.jsonl")
    result = run(config(tiny_llama, data, root / "out"), echo=lambda _: None)
    return result


def test_loss_falls_and_metrics_are_written(trained):
    rows = trained.metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.5
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]
    assert all("cider_d" in r and "bleu4" in r for r in rows)
    lines = (trained.output / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,train_loss,eval_loss") and len(lines) == 4


def test_lora_changes_only_adapter_weights(trained, tiny_llama):
    from safetensors.torch import load_file

    base = load_file(str(tiny_llama / "model.safetensors"))
    changed_lora = 0
    for name, tensor in trained.model.state_dict().items():
        if "lora_" in name:
            changed_lora += int("lora_B" in name and bool(tensor.abs().sum() > 0))
            continue
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(tensor, base[plain]), f"{plain} changed"
    assert changed_lora > 0  # lora_B starts at zero: it moved


def test_adapter_folder_names_its_base_and_loads_as_hf_spec(trained, tiny_llama):
    from captionkit.llm import ChatMessage, load_llm
    from captionkit.types import Decoding

    manifest = json.loads((trained.output / "captionkit-adapter.json").read_text())
    assert manifest["base"] == f"hf:{tiny_llama}"
    adapted = load_llm(f"hf:{trained.output}")
    assert adapted.adapter_manifest == manifest
    base = load_llm(f"hf:{tiny_llama}")
    assert not any("lora" in n for n, _ in adapted.model.named_parameters())  # merged
    conv = [[ChatMessage("system", "Write a caption."), ChatMessage("user", "Facts: dog, grass")]]
    dec = Decoding(max_new_tokens=6, temperature=0.0)
    # the adapter moved the model: the prompt's next-token logits differ from the base's
    ids = adapted.tokenizer("Facts: dog, grass", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(adapted.model(ids).logits, base.model(ids).logits)
    assert isinstance(adapted.chat(conv, dec)[0], str)


def test_adapter_is_the_writer_and_the_rewriter(trained, tmp_path):
    from PIL import Image

    from captionkit.captioners.grounded.writer_registry import WriterOptions, make_writer
    from captionkit.llm.hf_causal import HFCausalLLM
    from captionkit.session import load_backend
    from captionkit.types import CaptionRequest
    from helpers.fakes import registered

    writer = make_writer(f"hf:{trained.output}", WriterOptions())
    assert isinstance(writer.llm, HFCausalLLM) and writer.llm.label == f"hf:{trained.output}"
    with registered():
        captioner = load_backend("fake", rewrite=f"hf:{trained.output}")
        assert captioner.llm.label == f"hf:{trained.output}"
        request = CaptionRequest(style="short")
        prepared = captioner.preprocess(Image.new("RGB", (8, 8), (200, 0, 0)), request)
        out = captioner.caption_batch([prepared], request)
    assert out[0].error is None and out[0].candidates


def test_merge_writes_a_plain_model_equal_to_the_adapter(tiny_llama, pairs, tmp_path):
    from captionkit.llm import load_llm
    from captionkit.train.writer import run

    cfg = config(tiny_llama, pairs, tmp_path / "out", epochs=1, eval_images=0, merge=True)
    run(cfg, echo=lambda _: None)
    merged = load_llm(f"hf:{tmp_path / 'out' / 'merged'}")
    adapted = load_llm(f"hf:{tmp_path / 'out'}")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged.model(ids).logits, adapted.model(ids).logits, atol=1e-5)


def test_resume_continues_from_the_last_epoch(tiny_llama, pairs, tmp_path):
    from captionkit.cli.train import app

    out = tmp_path / "out"
    args = ["writer", "--base", f"hf:{tiny_llama}", "--data", str(pairs), "--output", str(out),
            "--epochs", "1", "--batch-size", "4", "--grad-accum", "2", "--eval-images", "0",
            "--cpu"]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, ["writer", "--output", str(out), "--resume", "--epochs", "2"])
    assert second.exit_code == 0, second.output
    assert "resumed from epoch-1 (step 2)" in second.output
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["1", "2"], ["2", "4"]]


def test_qlora_without_cuda_is_one_clear_line(tiny_llama, pairs, tmp_path):
    from captionkit.errors import ConfigError
    from captionkit.train.writer import run

    with pytest.raises(ConfigError, match="--qlora needs a CUDA GPU"):
        run(config(tiny_llama, pairs, tmp_path / "out", qlora=True))


def test_loss_covers_only_the_response(tiny_llama):
    from transformers import AutoTokenizer

    from captionkit.train.writer import collate, encode

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    msgs = [
        {"role": "user", "content": "Facts: dog"},
        {"role": "assistant", "content": "a dog runs"},
    ]
    ids, start = encode(tok, msgs, 512)
    batch = collate([(ids, start), (ids[:-2], start)], pad_id=0)
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert tok.decode(labelled) == "a dog runs<|im_end|>"
    assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert (batch["labels"][1, len(ids) - 2 :] == -100).all()  # padding is not learnt
    # an over-long prompt loses its start, never the response
    ids_short, start_short = encode(tok, msgs, 8)
    assert len(ids_short) == 8 and tok.decode(ids_short[start_short:]) == "a dog runs<|im_end|>"


def test_plain_layout_models_train_and_load(tmp_path, pairs):
    from captionkit.llm import load_llm
    from captionkit.train.writer import run

    base = build_tiny_llama(tmp_path / "plain", chat=False)
    result = run(
        config(base, pairs, tmp_path / "out", epochs=1, eval_images=2), echo=lambda _: None
    )
    assert result.metrics[0]["train_loss"] > 0
    assert load_llm(f"hf:{tmp_path / 'out'}").has_chat_template is False


def test_train_group_keeps_the_bare_encoder_decoder_command(tmp_path):
    """`captionkit train --output ...` still runs the encoder-decoder trainer; `train writer`
    and `train vlm` are subcommands of the same group."""
    from captionkit.cli.train import app
    from captionkit.errors import ConfigError

    bare = CliRunner().invoke(app, ["--output", str(tmp_path / "o")])
    assert isinstance(bare.exception, ConfigError) and "--data is required" in str(bare.exception)
    # list and bool flags of the bare command parse as before (typed from its annotations)
    listed = CliRunner().invoke(
        app, ["--output", str(tmp_path / "o"), "--freeze", "encoder", "--scst", "--cpu"]
    )
    assert isinstance(listed.exception, ConfigError), listed.output
    assert "--scst needs" in str(listed.exception)
    qlora = CliRunner().invoke(
        app,
        ["writer", "--output", str(tmp_path / "w"), "--data", "missing.jsonl", "--qlora", "--cpu"],
    )
    assert "--qlora needs a CUDA GPU" in str(qlora.exception)  # before the data is even read
    helped = CliRunner().invoke(app, ["--help"])
    assert "writer" in helped.output and "vlm" in helped.output
