"""Replicas of the image-to-text captioners: ViT-GPT2, BLIP, GIT, Florence-2 (native)."""

from __future__ import annotations

from pathlib import Path

from helpers.replicas.pieces import (
    CLIP_MEAN,
    CLIP_STD,
    RESCALE,
    Replica,
    generation,
    model_from_config,
    tokenizer,
    weights,
    write_json,
)


def build_vit_gpt2(out: Path) -> Replica:
    """nlpconnect/vit-gpt2-image-captioning: VisionEncoderDecoder(ViT, GPT-2), a GPT-2
    tokenizer whose one special token is <|endoftext|>, the old ViTFeatureExtractor config,
    and GPT-2's attention-mask buffers stored in the checkpoint."""
    from transformers import VisionEncoderDecoderModel

    end = "<|endoftext|>"
    tok = tokenizer(
        out,
        specials={"bos_token": end, "eos_token": end, "unk_token": end, "pad_token": end},
        config={"model_max_length": 1024},
    )
    write_json(
        out / "config.json",
        {
            "architectures": ["VisionEncoderDecoderModel"],
            "bos_token_id": tok.bos_token_id,
            "decoder": {
                "activation_function": "gelu_new",
                "add_cross_attention": True,
                "architectures": ["GPT2LMHeadModel"],
                "bos_token_id": tok.bos_token_id,
                "decoder_start_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id,
                "is_decoder": True,
                "model_type": "gpt2",
                "n_ctx": 64,
                "n_embd": 32,
                "n_head": 2,
                "n_inner": None,
                "n_layer": 2,
                "n_positions": 64,
                "pad_token_id": tok.pad_token_id,
                "vocab_size": len(tok),
            },
            "decoder_start_token_id": tok.bos_token_id,
            "encoder": {
                "architectures": ["ViTModel"],
                "hidden_act": "gelu",
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "model_type": "vit",
                "num_attention_heads": 2,
                "num_channels": 3,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "qkv_bias": True,
            },
            "eos_token_id": tok.eos_token_id,
            "is_encoder_decoder": True,
            "model_type": "vision-encoder-decoder",
            "pad_token_id": tok.pad_token_id,
            "tie_word_embeddings": False,
            "transformers_version": "4.11.0.dev0",
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "ViTFeatureExtractor",
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "resample": 2,
            "size": 32,
        },
    )
    generation(out, tok, decoder_start_token_id=tok.bos_token_id)
    model = model_from_config(out, VisionEncoderDecoderModel)
    import torch

    buffers = {}  # GPT-2 checkpoints of that age also hold its causal-mask buffers
    for i in range(2):
        buffers[f"decoder.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(
            1, 1, 64, 64
        )
        buffers[f"decoder.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    weights(out, model, extra=buffers)
    return Replica(
        "nlpconnect/vit-gpt2-image-captioning",
        out,
        (
            "decoder.transformer.h.0.attn.c_attn.weight",
            "decoder.transformer.h.0.attn.c_attn.weight",
        ),
    )


def build_blip(out: Path) -> Replica:
    """Salesforce/blip-image-captioning-base: a BERT tokenizer with BLIP's [DEC] start token,
    BlipImageProcessor at 384 px (here 32), weights under text_decoder.bert / vision_model."""
    tok = tokenizer(
        out,
        specials={
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
            "bos_token": "[DEC]",
        },
        extra_special=("[ENC]",),
        template="[CLS] $A [SEP]",
        config={"do_lower_case": True, "model_max_length": 512},
    )
    write_json(
        out / "config.json",
        {
            "architectures": ["BlipForConditionalGeneration"],
            "image_text_hidden_size": 32,
            "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592,
            "model_type": "blip",
            "projection_dim": 32,
            "text_config": {
                "bos_token_id": tok.bos_token_id,
                "hidden_size": 32,
                "initializer_factor": 1.0,
                "intermediate_size": 64,
                "max_position_embeddings": 64,
                "model_type": "blip_text_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "pad_token_id": tok.pad_token_id,
                "sep_token_id": tok.sep_token_id,
                "eos_token_id": tok.sep_token_id,
                "vocab_size": len(tok),
                "encoder_hidden_size": 32,
            },
            "torch_dtype": "float32",
            "transformers_version": "4.26.0.dev0",
            "vision_config": {
                "dropout": 0.0,
                "hidden_size": 32,
                "image_size": 32,
                "initializer_factor": 1.0,
                "initializer_range": 0.02,
                "intermediate_size": 64,
                "model_type": "blip_vision_model",
                "num_attention_heads": 2,
                "num_channels": 3,
                "num_hidden_layers": 2,
                "patch_size": 8,
            },
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_resize": True,
            "do_rescale": True,
            "do_convert_rgb": True,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": "BlipImageProcessor",
            "processor_class": "BlipProcessor",
            "resample": 3,
            "rescale_factor": RESCALE,
            "size": {"height": 32, "width": 32},
        },
    )
    generation(out, tok, eos_token_id=tok.sep_token_id)
    weights(out, model_from_config(out))
    return Replica(
        "Salesforce/blip-image-captioning-base",
        out,
        (
            "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
            "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
        ),
    )


def build_git(out: Path) -> Replica:
    """microsoft/git-base-coco: GitForCausalLM, a BERT tokenizer (prompts end in [SEP]),
    CLIPImageProcessor; weights under git.* and output.*."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer(
        out,
        specials={
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        template="[CLS] $A [SEP]",
        config={"do_lower_case": True, "model_max_length": 512},
    )
    write_json(
        out / "config.json",
        {
            "architectures": ["GitForCausalLM"],
            "attention_probs_dropout_prob": 0.1,
            "bos_token_id": tok.cls_token_id,
            "classifier_dropout": None,
            "eos_token_id": tok.sep_token_id,
            "hidden_act": "gelu",
            "hidden_size": 32,
            "initializer_range": 0.02,
            "intermediate_size": 64,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 64,
            "model_type": "git",
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "num_image_with_embedding": None,
            "pad_token_id": tok.pad_token_id,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.26.0.dev0",
            "use_cache": True,
            "vision_config": {
                "dropout": 0.0,
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "model_type": "git_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "projection_dim": 32,
            },
            "vocab_size": len(tok),
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": CLIP_MEAN,
            "image_processor_type": "CLIPImageProcessor",
            "image_std": CLIP_STD,
            "processor_class": "GitProcessor",
            "resample": 3,
            "rescale_factor": RESCALE,
            "size": {"shortest_edge": 32},
        },
    )
    generation(out, tok, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    weights(out, model_from_config(out, AutoModelForCausalLM.from_config))
    return Replica(
        "microsoft/git-base-coco",
        out,
        ("git.encoder.layer.0.attention.self.query.weight",) * 2,
    )


def build_florence2_community(out: Path) -> Replica:
    """florence-community/Florence-2-base: the native conversion, saved by transformers itself
    (its layout is save_pretrained's), driven by task tokens."""
    from helpers.tiny_models import build_florence2

    build_florence2(out)
    return Replica(
        "florence-community/Florence-2-base",
        out,
        ("model.language_model.encoder.layers.0.fc1.weight",) * 2,
    )
