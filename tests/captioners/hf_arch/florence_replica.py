"""A tiny checkpoint laid out like ``microsoft/Florence-2-base``: the remote-code config.json,
the CLIP-style preprocessor_config.json, a byte-level BPE tokenizer with BART's special tokens
(and none of the task tokens: the original processor adds those at start-up), and weights
saved under the ORIGINAL names.

The weights come from a tiny native model renamed with :func:`original_key`, written here
independently of the converter's forward rules, so a test that loads the replica checks the
two directions agree; ``test_florence2_original`` also pins real published key names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Four DaViT stages like the real model, shrunk: 64 px -> 16, 8, 4, 2 cells -> 4 + 1 tokens.
IMAGE_SIZE = 64
DIM_EMBED = [8, 16, 16, 32]
WORDS = (
    "a dog cat man woman child runs sits plays on the in of grass beach water street red blue "
    "black white two people ball snow park picture image photo shows with and is are "
    "What does the image describe? Describe in detail what is shown in the image."
)


def original_key(native: str) -> str:
    """Native parameter name -> the name Microsoft's remote code saves (the inverse rules)."""
    if native == "model.multi_modal_projector.image_projection.weight":
        return "image_projection"
    if native == "lm_head.weight":
        return "language_model.lm_head.weight"
    key = native
    key = re.sub(r"^model\.language_model\.", "language_model.model.", key)
    key = re.sub(r"^model\.multi_modal_projector\.image_position_embed\.", "image_pos_embed.", key)
    key = re.sub(r"^model\.multi_modal_projector\.", "", key)
    if key.startswith("model.vision_tower."):
        key = key[len("model.") :]
        key = re.sub(r"^(vision_tower\.convs\.\d+)\.conv\.", r"\1.proj.", key)
        key = re.sub(r"\.(conv[12])\.(weight|bias)$", r".\1.fn.dw.\2", key)
        key = re.sub(r"spatial_block\.norm1\.", "spatial_block.window_attn.norm.", key)
        key = re.sub(r"channel_block\.norm1\.", "channel_block.channel_attn.norm.", key)
        key = re.sub(r"(window_attn|channel_attn)\.(qkv|proj)\.", r"\1.fn.\2.", key)
        key = re.sub(r"\.norm2\.", ".ffn.norm.", key)
        key = re.sub(r"\.ffn\.(fc[12])\.", r".ffn.fn.net.\1.", key)
    return key


def _tokenizer(out: Path) -> int:
    """BART-style byte-level BPE files; returns the base vocabulary size (50265 for real)."""
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [WORDS] * 4,
        vocab_size=330,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.save_model(str(out))
    bpe.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    return bpe.get_vocab_size()


def _config(rows: int) -> dict[str, Any]:
    """The published config.json's shape (remote code, DaViT, florence2_language), shrunk."""
    return {
        "_name_or_path": "florence2",
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_florence2.Florence2Config",
            "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
        },
        "bos_token_id": 0,
        "eos_token_id": 2,
        "ignore_index": -100,
        "model_type": "florence2",
        "pad_token_id": 1,
        "projection_dim": 32,
        "text_config": {
            "vocab_size": rows,
            "activation_dropout": 0.1,
            "activation_function": "gelu",
            "add_bias_logits": False,
            "add_final_layer_norm": False,
            "attention_dropout": 0.1,
            "bos_token_id": 0,
            "classif_dropout": 0.1,
            "classifier_dropout": 0.0,
            "d_model": 32,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 64,
            "decoder_layerdrop": 0.0,
            "decoder_layers": 1,
            "decoder_start_token_id": 2,
            "dropout": 0.1,
            "early_stopping": True,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "encoder_layerdrop": 0.0,
            "encoder_layers": 1,
            "eos_token_id": 2,
            "forced_eos_token_id": 2,
            "forced_bos_token_id": 0,
            "gradient_checkpointing": False,
            "init_std": 0.02,
            "is_encoder_decoder": True,
            "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
            "max_position_embeddings": 64,
            "no_repeat_ngram_size": 3,
            "normalize_before": False,
            "num_hidden_layers": 1,
            "pad_token_id": 1,
            "scale_embedding": False,
            "num_beams": 3,
            "model_type": "florence2_language",
        },
        "vision_config": {
            "model_type": "davit",
            "drop_path_rate": 0.1,
            "patch_size": [7, 3, 3, 3],
            "patch_stride": [4, 2, 2, 2],
            "patch_padding": [3, 1, 1, 1],
            "patch_prenorm": [False, True, True, True],
            "enable_checkpoint": False,
            "dim_embed": DIM_EMBED,
            "num_heads": [1, 2, 2, 4],
            "num_groups": [1, 2, 2, 4],
            "depths": [1, 1, 2, 1],
            "window_size": 2,
            "projection_dim": 32,
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 8},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "vocab_size": rows,
        "torch_dtype": "float32",
        "transformers_version": "4.41.0.dev0",
        "is_encoder_decoder": True,
    }


def _preprocessor() -> dict[str, Any]:
    return {
        "auto_map": {"AutoProcessor": "processing_florence2.Florence2Processor"},
        "_valid_processor_keys": ["images", "do_resize", "size", "resample", "return_tensors"],
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": False,
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "CLIPImageProcessor",
        "image_seq_length": 5,
        "image_std": [0.229, 0.224, 0.225],
        "processor_class": "Florence2Processor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }


def original_state_dict(out: Path) -> dict[str, Any]:
    """Write tokenizer/config files into ``out`` and return the weights under original names."""
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    from captionkit.captioners.hf_arch import florence2_original as fo

    base = _tokenizer(out)
    rows = base + len(fo.TASK_TOKENS)  # 50265 + 1024 = 51289 in the real checkpoint
    raw = _config(rows)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(_preprocessor(), indent=2))
    torch.manual_seed(0)
    text = {k: v for k, v in raw["text_config"].items() if k in fo._TEXT_KEYS}
    model = Florence2ForConditionalGeneration(
        Florence2Config(vision_config=fo.vision_config(raw), text_config=text, image_token_id=0)
    )
    original: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().clone()
        # Norms start at exactly 1/0 in a fresh model: jitter them so a swapped weight shows.
        if re.search(r"norm\w*\.(weight|bias)$", name):
            tensor += 0.01 * torch.randn_like(tensor)
        # At init scale the decoder barely hears the encoder: every image got one caption.
        if ("encoder.layers" in name or "encoder_attn." in name) and tensor.dim() == 2:
            tensor *= 10
        if name == "model.multi_modal_projector.image_projection.weight":
            tensor = tensor.t().contiguous()
        original[original_key(name)] = tensor
    shared = original["language_model.model.shared.weight"]
    for tied in ("encoder.embed_tokens", "decoder.embed_tokens"):  # saved by torch.save, as in .bin
        original[f"language_model.model.{tied}.weight"] = shared.clone()
    original["language_model.lm_head.weight"] = shared.clone()
    original["language_model.final_logits_bias"] = torch.zeros(1, rows)
    return original


def steer_generation(out: Path, base_vocab: int) -> None:
    """Random weights babble: keep them on plain BPE tokens for a few steps so every caption is
    non-empty text. A real checkpoint needs none of this."""
    # pad, unk, mask, the 256 single bytes (decode to stray bytes) and the 1024 task tokens
    specials = [1, 3, 4, *range(5, 261), *range(base_vocab, base_vocab + 1024)]
    (out / "generation_config.json").write_text(
        json.dumps({"min_new_tokens": 4, "suppress_tokens": specials, "_from_model_config": True})
    )


def build(out: Path, *, fmt: str = "bin", drop: tuple[str, ...] = ()) -> Path:
    """The replica in ``out``: weights as ``pytorch_model.bin`` (base's format) or
    ``model.safetensors``; ``drop`` leaves named tensors out (an incomplete download)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    weights = original_state_dict(out)
    base = len(json.loads((out / "vocab.json").read_text()))
    steer_generation(out, base)
    for key in drop:
        del weights[key]
    if fmt == "bin":
        torch.save(weights, out / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    return out
