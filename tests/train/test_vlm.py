"""``captionkit train vlm``: tiny ViT + tiny Llama joined as LLaVA, stages, loading as hf:OUT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import make_subset
from writer_helpers import build_tiny_llama

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("vlm-lm"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_subset(tmp_path_factory.mktemp("vlm-data"), 8, per_image=2)


def weights(folder: Path) -> dict:
    """The checkpoint as transformers loads it (names of the current LLaVA layout)."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder).state_dict()


def cfg(data, out, **kw):
    from captionkit.train.vlm import VLMConfig

    base = dict(data=str(data), output=str(out), epochs=2, batch_size=4, device="cpu",
                val_split=0.25, eval_images=2, max_new_tokens=4, lr=1e-2, lr_lora=1e-2)  # fmt: skip
    base.update(kw)
    return VLMConfig(**base)


@pytest.fixture(scope="module")
def stage1(tiny_encoder, tiny_lm, data, tmp_path_factory):
    from captionkit.train.vlm import run

    out = tmp_path_factory.mktemp("vlm-stage1")
    return run(
        cfg(data, out, vision=str(tiny_encoder), llm=str(tiny_lm), stage="1"), echo=lambda _: None
    )


def test_stage1_changes_only_the_projector_and_loss_falls(stage1, tiny_encoder, tiny_lm):
    from transformers import AutoModel, AutoModelForCausalLM

    saved = weights(stage1)
    vit = AutoModel.from_pretrained(tiny_encoder).state_dict()
    for name, t in vit.items():
        assert torch.equal(saved[f"model.vision_tower.{name}"], t), name
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()
    for name, t in lm.items():
        key = f"model.language_model.{name[len('model.') :]}" if name.startswith("model.") else name
        mine = saved[key]
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            mine = mine[: t.shape[0]]  # one row added: <image>
        assert torch.equal(mine, t), name
    metrics = json.loads((stage1 / "metrics.json").read_text())
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert "cider_d" in metrics[0] and "bleu4" in metrics[0]


def test_llava_folder_captions_through_the_hf_backend(stage1, data):
    from captionkit import api

    images = sorted((data / "images").iterdir())[:2]
    results = api.caption([str(p) for p in images], model=f"hf:{stage1}", store=False)
    assert all(r.ok and r.text for r in results), [r.error for r in results]
    config = json.loads((stage1 / "config.json").read_text())
    assert config["model_type"] == "llava" and config["vision_config"]["model_type"] == "vit"


def test_stage2_from_stage1_keeps_the_vision_tower_and_moves_the_lm(stage1, data, tmp_path):
    from captionkit.train.vlm import run

    out = run(
        cfg(data, tmp_path / "s2", init=str(stage1), stage="2", epochs=1), echo=lambda _: None
    )
    before, after = weights(stage1), weights(out)
    assert set(before) == set(after)  # LoRA merged back: a plain LLaVA checkpoint
    tower = [k for k in before if k.startswith("model.vision_tower.")]
    assert all(torch.equal(before[k], after[k]) for k in tower)
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q], after[q])
    proj = "model.multi_modal_projector.linear_1.weight"
    assert not torch.equal(before[proj], after[proj])


def test_a_captionkit_train_run_is_a_vision_tower_and_bad_flags_are_one_line(tmp_path, data):
    from captionkit.errors import ConfigError

    with pytest.raises(ConfigError, match="--vision SPEC and --llm SPEC"):
        cfg(data, tmp_path / "x")
    with pytest.raises(ConfigError, match="--stage 2 continues"):
        cfg(data, tmp_path / "x", vision="v", llm="l", stage="2")
