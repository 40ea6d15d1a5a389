"""microsoft/Florence-2-base/-large as published (remote-code layout) on transformers 5.

The replica (``florence_replica.py``) is laid out like the real repo with tiny sizes; weights
are saved under the original names. Issue #12 item 2: before, the native class loaded 8 of 668
tensors and generation failed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))  # the replica helper beside this file

import florence_replica

from captionkit.captioners import hf_arch
from captionkit.captioners.hf_arch import florence2_original as fo
from captionkit.cli.main import run
from captionkit.errors import ModelLoadError

#: Names from the published Florence-2-base checkpoint (its pytorch_model.bin state dict, as
#: transformers' convert_florence2_original_pytorch_to_hf.py and public ports list them) and
#: where transformers 5's native Florence2ForConditionalGeneration keeps each one.
REAL_KEYS = [
    ("vision_tower.convs.0.proj.weight",
     "model.vision_tower.convs.0.conv.weight"),
    ("vision_tower.convs.0.proj.bias",
     "model.vision_tower.convs.0.conv.bias"),
    ("vision_tower.convs.0.norm.weight",
     "model.vision_tower.convs.0.norm.weight"),
    ("vision_tower.convs.3.norm.bias",
     "model.vision_tower.convs.3.norm.bias"),
    ("vision_tower.blocks.0.0.spatial_block.conv1.fn.dw.weight",
     "model.vision_tower.blocks.0.0.spatial_block.conv1.weight"),
    ("vision_tower.blocks.0.0.spatial_block.conv2.fn.dw.bias",
     "model.vision_tower.blocks.0.0.spatial_block.conv2.bias"),
    ("vision_tower.blocks.0.0.spatial_block.window_attn.norm.weight",
     "model.vision_tower.blocks.0.0.spatial_block.norm1.weight"),
    ("vision_tower.blocks.0.0.spatial_block.window_attn.fn.qkv.weight",
     "model.vision_tower.blocks.0.0.spatial_block.window_attn.qkv.weight"),
    ("vision_tower.blocks.1.0.spatial_block.window_attn.fn.proj.bias",
     "model.vision_tower.blocks.1.0.spatial_block.window_attn.proj.bias"),
    ("vision_tower.blocks.2.4.spatial_block.ffn.norm.bias",
     "model.vision_tower.blocks.2.4.spatial_block.norm2.bias"),
    ("vision_tower.blocks.2.8.spatial_block.ffn.fn.net.fc1.weight",
     "model.vision_tower.blocks.2.8.spatial_block.ffn.fc1.weight"),
    ("vision_tower.blocks.3.0.spatial_block.ffn.fn.net.fc2.bias",
     "model.vision_tower.blocks.3.0.spatial_block.ffn.fc2.bias"),
    ("vision_tower.blocks.0.0.channel_block.conv1.fn.dw.bias",
     "model.vision_tower.blocks.0.0.channel_block.conv1.bias"),
    ("vision_tower.blocks.2.0.channel_block.conv2.fn.dw.weight",
     "model.vision_tower.blocks.2.0.channel_block.conv2.weight"),
    ("vision_tower.blocks.2.3.channel_block.channel_attn.norm.bias",
     "model.vision_tower.blocks.2.3.channel_block.norm1.bias"),
    ("vision_tower.blocks.2.8.channel_block.channel_attn.fn.qkv.bias",
     "model.vision_tower.blocks.2.8.channel_block.channel_attn.qkv.bias"),
    ("vision_tower.blocks.3.0.channel_block.channel_attn.fn.proj.weight",
     "model.vision_tower.blocks.3.0.channel_block.channel_attn.proj.weight"),
    ("vision_tower.blocks.1.0.channel_block.ffn.norm.weight",
     "model.vision_tower.blocks.1.0.channel_block.norm2.weight"),
    ("vision_tower.blocks.2.8.channel_block.ffn.fn.net.fc2.weight",
     "model.vision_tower.blocks.2.8.channel_block.ffn.fc2.weight"),
    ("image_projection",
     "model.multi_modal_projector.image_projection.weight"),
    ("image_proj_norm.weight",
     "model.multi_modal_projector.image_proj_norm.weight"),
    ("image_proj_norm.bias",
     "model.multi_modal_projector.image_proj_norm.bias"),
    ("image_pos_embed.row_embeddings.weight",
     "model.multi_modal_projector.image_position_embed.row_embeddings.weight"),
    ("image_pos_embed.column_embeddings.weight",
     "model.multi_modal_projector.image_position_embed.column_embeddings.weight"),
    ("visual_temporal_embed.pos_idx_to_embed",
     "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"),
    ("language_model.model.shared.weight",
     "model.language_model.shared.weight"),
    ("language_model.model.encoder.embed_tokens.weight",
     "model.language_model.encoder.embed_tokens.weight"),
    ("language_model.model.encoder.embed_positions.weight",
     "model.language_model.encoder.embed_positions.weight"),
    ("language_model.model.encoder.layernorm_embedding.bias",
     "model.language_model.encoder.layernorm_embedding.bias"),
    ("language_model.model.encoder.layers.0.self_attn.k_proj.weight",
     "model.language_model.encoder.layers.0.self_attn.k_proj.weight"),
    ("language_model.model.encoder.layers.5.fc2.bias",
     "model.language_model.encoder.layers.5.fc2.bias"),
    ("language_model.model.encoder.layers.3.final_layer_norm.weight",
     "model.language_model.encoder.layers.3.final_layer_norm.weight"),
    ("language_model.model.decoder.embed_tokens.weight",
     "model.language_model.decoder.embed_tokens.weight"),
    ("language_model.model.decoder.embed_positions.weight",
     "model.language_model.decoder.embed_positions.weight"),
    ("language_model.model.decoder.layernorm_embedding.weight",
     "model.language_model.decoder.layernorm_embedding.weight"),
    ("language_model.model.decoder.layers.0.encoder_attn.q_proj.bias",
     "model.language_model.decoder.layers.0.encoder_attn.q_proj.bias"),
    ("language_model.model.decoder.layers.5.encoder_attn_layer_norm.weight",
     "model.language_model.decoder.layers.5.encoder_attn_layer_norm.weight"),
    ("language_model.model.decoder.layers.2.self_attn.out_proj.weight",
     "model.language_model.decoder.layers.2.self_attn.out_proj.weight"),
    ("language_model.model.decoder.layers.4.fc1.weight",
     "model.language_model.decoder.layers.4.fc1.weight"),
    ("language_model.lm_head.weight",
     "lm_head.weight"),
]  # fmt: skip


@pytest.fixture(scope="session")
def replica(tmp_path_factory) -> Path:
    return florence_replica.build(tmp_path_factory.mktemp("florence2-original") / "Florence-2-base")


@pytest.fixture(scope="session")
def replica_weights(replica) -> dict:
    import torch

    return torch.load(replica / "pytorch_model.bin", weights_only=True)


@pytest.fixture(scope="session")
def incomplete(tmp_path_factory) -> Path:
    """An interrupted download: one vision tensor absent (safetensors, as newer repos ship)."""
    out = tmp_path_factory.mktemp("florence2-incomplete") / "Florence-2-base"
    drop = ("vision_tower.blocks.1.0.channel_block.ffn.fn.net.fc1.weight",)
    return florence_replica.build(out, fmt="safetensors", drop=drop)


def _raw(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _load(path: Path, cache: Path):
    import torch

    return fo.load(str(path), _raw(path), device="cpu", dtype=torch.float32, cache_root=cache)


def test_real_checkpoint_names_map_onto_native_parameters():
    """Pinned against published names, not only against the replica's own inverse rules."""
    import torch
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration

    raw = {"model_type": "florence2", "vision_config": {"model_type": "davit",
           "dim_embed": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32],
           "num_groups": [4, 8, 16, 32], "projection_dim": 768}}  # fmt: skip
    text = BartConfig(vocab_size=64, d_model=768, encoder_layers=6, decoder_layers=6)
    with torch.device("meta"):
        model = Florence2ForConditionalGeneration(
            Florence2Config(vision_config=fo.vision_config(raw), text_config=text.to_dict())
        )
    native_names = set(model.state_dict())
    for original, native in REAL_KEYS:
        assert fo.native_key(original) == native, original
        assert native in native_names, native
        assert florence_replica.original_key(native) == original
    assert fo.native_key("language_model.final_logits_bias") is None


def test_matches_the_original_layout_only(replica, tiny_florence2):
    assert fo.matches(_raw(replica))
    assert hf_arch.find(_raw(replica)) is fo
    native = _raw(tiny_florence2)  # florence-community layout: transformers loads it itself
    assert not fo.matches(native)
    assert hf_arch.find(native) is None
    # Re-saved by the remote code (fine-tunes): vision model_type "" or "florence2_vision".
    for vision_type in ("", "florence2_vision"):
        raw = _raw(replica)
        raw["vision_config"]["model_type"] = vision_type
        assert fo.matches(raw)
    raw = _raw(replica)
    raw["model_type"] = "bart"
    assert not fo.matches(raw)


def test_every_checkpoint_tensor_reaches_the_model(replica, replica_weights, tmp_path):
    model, processor = _load(replica, tmp_path)
    params = model.state_dict()
    reached = 0
    for key, tensor in replica_weights.items():
        name = fo.native_key(key)
        if name is None:
            assert not tensor.any()  # final_logits_bias: zero, and the native head has none
            continue
        value = params[name]
        if key == "image_projection":
            value = value.t()
        if value.shape != tensor.shape:  # the embedding grew one row for <image>
            assert value.shape[0] == tensor.shape[0] + 1
            value = value[: tensor.shape[0]]
        assert value.equal(tensor), key
        reached += 1
    assert reached == len(replica_weights) - 1
    # The task tokens keep the ids the checkpoint was trained with; <image> comes after them.
    tok = processor.tokenizer
    base = len(json.loads((replica / "vocab.json").read_text()))
    assert tok.convert_tokens_to_ids("<od>") == base
    assert tok.convert_tokens_to_ids("<loc_0>") == base + 4
    assert tok.convert_tokens_to_ids("<and>") == base + 1023
    assert processor.image_token_id == model.config.image_token_id == base + 1024
    assert processor.image_token_id in model.generation_config.suppress_tokens
    assert processor.num_image_tokens == 5  # 64 px -> 2x2 cells + 1 pooled


def test_second_load_reuses_the_conversion(replica, tmp_path, monkeypatch):
    start = time.perf_counter()
    _load(replica, tmp_path)
    first = time.perf_counter() - start
    folder = fo.converted_dir(str(replica), None, tmp_path)
    marker = (folder / fo.MARKER).stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(fo, "_write_converted", fail)
    start = time.perf_counter()
    _load(replica, tmp_path)
    assert time.perf_counter() - start < max(first, 1.0)
    assert (folder / fo.MARKER).stat().st_mtime_ns == marker
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp dirs left


def test_changed_source_files_are_converted_again(replica, tmp_path, monkeypatch):
    _load(replica, tmp_path)
    calls = []
    real = fo._write_converted
    monkeypatch.setattr(fo, "_write_converted", lambda *a: calls.append(1) or real(*a))
    config = replica / "preprocessor_config.json"
    stat = config.stat()
    import os

    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        _load(replica, tmp_path)
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert calls == [1]


def test_missing_tensor_is_a_one_line_error(incomplete, tmp_path):
    with pytest.raises(ModelLoadError) as err:
        _load(incomplete, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "lacks 1 tensor" in message
    assert "model.vision_tower.blocks.1.0.channel_block.ffn.fc1.weight" in message
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]  # nothing half-done


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``captionkit ARGS`` in-process, through the console entry (errors become one line)."""
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_missing_tensor_through_the_cli(incomplete, tmp_path, capsys):
    _write_images(tmp_path / "imgs", 1)
    code, _, err = _cli(capsys, "caption", str(tmp_path / "imgs"), "--model", f"hf:{incomplete}",
                        "--store", "none", "--format", "jsonl")  # fmt: skip
    assert code == 2, err
    assert err.strip().splitlines() == [
        "captionkit: error: Florence-2 checkpoint lacks 1 tensor(s) the model needs (first: "
        "model.vision_tower.blocks.1.0.channel_block.ffn.fc1.weight); is the download complete?"
    ]


def _write_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (250, 250, 250), (10, 10, 10)]
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.new("RGB", (60 + 7 * i, 40), colours[i % len(colours)]).save(path)
        paths.append(path)
    return paths


def _captions(capsys, folder: Path, model: Path | str, batch_size: int) -> dict[str, str]:
    code, out, err = _cli(capsys, "caption", str(folder), "--model", f"hf:{model}", "--store",
                          "none", "--format", "jsonl", "--batch-size", str(batch_size),
                          "--max-new-tokens", "8", "--no-progress")  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {Path(r["source"]).name: r["text"] for r in records}


def test_cli_captions_batched_equal_one_by_one(replica, tmp_path, capsys):
    """``captionkit caption DIR --model hf:microsoft/Florence-2-base`` works: the task token
    goes through the converted processor, and batching changes nothing under greedy decoding."""
    _write_images(tmp_path / "imgs", 5)
    batched = _captions(capsys, tmp_path / "imgs", replica, 4)
    single = _captions(capsys, tmp_path / "imgs", replica, 1)
    assert len(batched) == 5 and all(text.strip() for text in batched.values())
    assert batched == single
    assert len(set(batched.values())) > 1  # the image, not only the prompt, drives the text


def test_hub_id_from_the_hugging_face_cache(replica, tmp_path, monkeypatch, capsys):
    """``--model hf:microsoft/Florence-2-base`` offline, with the repo in the HF cache."""
    import shutil

    from huggingface_hub import constants

    commit = "5ca5edf5bd017b9919c05d08aebef5e4c7ac3bac"
    repo = tmp_path / "hub" / "models--microsoft--Florence-2-base"
    shutil.copytree(replica, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _write_images(tmp_path / "imgs", 2)
    captions = _captions(capsys, tmp_path / "imgs", "microsoft/Florence-2-base", 2)
    assert len(captions) == 2 and all(captions.values())
    folder = fo.converted_dir("microsoft/Florence-2-base", None)
    assert json.loads((folder / fo.MARKER).read_text())["source"] == "microsoft/Florence-2-base"


def test_the_fixed_sinusoid_table_may_be_absent(replica_weights, tmp_path):
    """``visual_temporal_embed.pos_idx_to_embed`` is a constant buffer: a checkpoint saved
    without it still loads, and the model computes the same table."""
    drop = ("visual_temporal_embed.pos_idx_to_embed",)
    folder = florence_replica.build(tmp_path / "no-table", fmt="safetensors", drop=drop)
    model, _ = _load(folder, tmp_path / "cache")
    table = model.state_dict()[fo.native_key(drop[0])]
    assert table.equal(replica_weights[drop[0]])


def test_a_non_zero_logit_bias_is_refused_not_dropped(replica_weights):
    weights = dict(replica_weights)
    weights["language_model.final_logits_bias"] = weights["language_model.final_logits_bias"] + 1
    with pytest.raises(ModelLoadError, match=r"non-zero language_model\.final_logits_bias"):
        fo.convert_state_dict(weights)
    weights = dict(replica_weights)
    weights["language_model.lm_head.weight"] = weights["language_model.lm_head.weight"] * 2
    with pytest.raises(ModelLoadError, match="untied embeddings are not supported"):
        fo.convert_state_dict(weights)


def test_quantize_is_refused_not_ignored_for_a_converted_layout(replica):
    """--quantize cannot reach a layout captionkit loads itself: say so in one line."""
    from captionkit.captioners.hf_loading import load_model
    from captionkit.errors import ConfigError

    with pytest.raises(ConfigError, match="does not support --quantize"):
        load_model(str(replica), quantize="4bit")
