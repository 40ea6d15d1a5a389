"""Freezing: the right parameters train, and frozen ones stay bit-identical."""

from __future__ import annotations

import pytest
from train_helpers import quick_config

from captionkit.errors import ConfigError
from captionkit.train.freeze import apply_freeze, decoder_blocks, parse_specs
from captionkit.train.model import build_model


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train_steps(model, steps=3):
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, 50, (2, 6))
    for _ in range(steps):
        out = model(pixel_values=pixels, decoder_input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()


CROSS = ("crossattention", "ln_cross_attn", "enc_to_dec_proj")


@pytest.mark.parametrize(
    ("spec", "trains"),
    [
        ("encoder", lambda n: not n.startswith("encoder.")),
        ("decoder", lambda n: not n.startswith("decoder.")),
        (
            "decoder-except-last-1",
            lambda n: (
                not n.startswith("decoder.")
                or n.startswith("decoder.transformer.h.1.")
                or n.startswith("decoder.transformer.ln_f")
            ),
        ),
        ("cross-attention-only", lambda n: any(c in n for c in CROSS)),
    ],
)
def test_frozen_weights_stay_bit_identical(tiny_encoder, tiny_decoder, spec, trains):
    import torch

    bundle = build_model(str(tiny_encoder), str(tiny_decoder))
    report = apply_freeze(bundle.model, parse_specs([spec]))
    assert 0 < report.trainable < report.total
    assert f"{report.trainable:,}" in report.line()
    for name, p in bundle.model.named_parameters():
        assert p.requires_grad == trains(name), name
    before = _snapshot(bundle.model)
    _train_steps(bundle.model)
    changed = {
        n for n, p in bundle.model.named_parameters() if not torch.equal(before[n], p.detach())
    }
    assert changed and all(trains(n) for n in changed), sorted(changed)


def test_freeze_specs_are_validated(tiny_encoder, tiny_decoder):
    assert parse_specs(["encoder,decoder-except-last-2", "none"]) == (
        "encoder",
        "decoder-except-last-2",
    )
    with pytest.raises(ConfigError, match="unknown --freeze"):
        parse_specs(["decoder-last-2"])
    bundle = build_model(str(tiny_encoder), str(tiny_decoder))
    assert [n for n, _ in decoder_blocks(bundle.model.decoder)] == [
        "transformer.h.0",
        "transformer.h.1",
    ]
    with pytest.raises(ConfigError, match="only 2 blocks"):
        apply_freeze(bundle.model, ("decoder-except-last-3",))
    # encoder and decoder frozen: only the new encoder-to-decoder projection trains
    report = apply_freeze(bundle.model, ("encoder", "decoder"))
    assert report.trainable == sum(p.numel() for p in bundle.model.enc_to_dec_proj.parameters())


def test_training_run_leaves_frozen_encoder_identical(tiny_encoder, tiny_decoder, eight_images):
    import torch
    from transformers import VisionEncoderDecoderModel, ViTModel

    from captionkit.train.loop import run

    result = run(
        quick_config(
            eight_images,
            eight_images.parent / "run",
            encoder=str(tiny_encoder),
            decoder=str(tiny_decoder),
            epochs=3,
            freeze=("encoder",),
        ),
        echo=lambda _: None,
    )
    assert result.trainable < result.total
    original = ViTModel.from_pretrained(tiny_encoder).state_dict()
    trained = VisionEncoderDecoderModel.from_pretrained(result.output)
    for name, value in trained.encoder.state_dict().items():
        if name in original:
            assert torch.equal(value, original[name]), name
