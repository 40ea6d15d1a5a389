"""Replicas of the other chat VLMs: SmolVLM, DeepSeek-VL (converted and original), Qwen2-VL."""

from __future__ import annotations

from pathlib import Path

from helpers.replicas.pieces import (
    CLIP_MEAN,
    CLIP_STD,
    RESCALE,
    Replica,
    generation,
    model_from_config,
    tiny_llama,
    tokenizer,
    weights,
    write_json,
)

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_smolvlm(out: Path) -> Replica:
    """HuggingFaceTB/SmolVLM-Instruct: Idefics3 (SigLIP + pixel shuffle + SmolLM2) with image
    splitting on (a 2x2 grid of tiles plus the global image here), processor_config's
    image_seq_len, the template in chat_template.json."""
    tok = tokenizer(
        out,
        specials={
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
        },
        extra_special=("<fake_token_around_image>", "<image>", "<global-img>"),
        extra_tokens={"image_token": "<image>"},
        chat_template=SMOLVLM_TEMPLATE,
        config={"model_max_length": 16384},
    )
    write_json(
        out / "config.json",
        {
            "architectures": ["Idefics3ForConditionalGeneration"],
            "image_token_id": tok.convert_tokens_to_ids("<image>"),
            "model_type": "idefics3",
            "scale_factor": 2,
            "text_config": tiny_llama(
                tok,
                _name_or_path="HuggingFaceTB/SmolLM2-1.7B-Instruct",
                architectures=["VLlama3ForCausalLM"],
                max_position_embeddings=1024,
                pad_token_id=tok.pad_token_id,
                rms_norm_eps=1e-05,
                rope_theta=273768.0,
                tie_word_embeddings=False,
                torch_dtype="bfloat16",
            ),
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.46.0.dev0",
            "use_cache": True,
            "vision_config": {
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "max_image_size": {"longest_edge": 32},
                "model_type": "idefics3",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "size": {"longest_edge": 64},
                "tie_word_embeddings": False,
                "torch_dtype": "bfloat16",
                "use_base_siglip": False,
            },
            "vocab_size": len(tok),
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "do_convert_rgb": True,
            "do_image_splitting": True,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Idefics3ImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": 32},
            "processor_class": "Idefics3Processor",
            "resample": 1,
            "rescale_factor": RESCALE,
            "size": {"longest_edge": 64},
        },
    )
    write_json(
        out / "processor_config.json",
        {"image_seq_len": 4, "processor_class": "Idefics3Processor"},
    )
    write_json(out / "chat_template.json", {"chat_template": SMOLVLM_TEMPLATE})
    generation(out, tok)
    weights(out, model_from_config(out))
    return Replica(
        "HuggingFaceTB/SmolVLM-Instruct",
        out,
        ("model.connector.modality_projection.proj.weight",) * 2,
    )


#: deepseek-community's DeepSeek-VL template: a system line, then "User: <image>text" turns.
DEEPSEEK_TEMPLATE = (
    "{%- set sys = 'You are a helpful language and vision assistant. You are able to understand "
    "the visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language.' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set sys = messages[0]['content'][0]['text'] -%}{%- set messages = messages[1:] -%}"
    "{%- endif -%}{{ sys }}{{ '\n\n' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}User: {%- else -%}Assistant:{%- endif -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}<image_placeholder>"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- if message['role'] == 'user' -%}{{ '\n\n' }}{%- else -%}<｜end▁of▁sentence｜>"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)


def build_deepseek_vl(out: Path) -> Replica:
    """deepseek-community/deepseek-vl-7b-chat: DeepseekVLHybrid (SigLIP low-res + SAM high-res
    towers, Llama), converted for transformers; its processor expands <image_placeholder>."""
    tok = tokenizer(
        out,
        specials={
            "bos_token": "<｜begin▁of▁sentence｜>",
            "eos_token": "<｜end▁of▁sentence｜>",
            "pad_token": "<｜▁pad▁｜>",
            "unk_token": "<unk>",
        },
        extra_special=("<image_placeholder>",),
        extra_tokens={"image_token": "<image_placeholder>"},
        chat_template=DEEPSEEK_TEMPLATE,
        config={"model_max_length": 16384},
    )
    write_json(
        out / "config.json",
        {
            "architectures": ["DeepseekVLHybridForConditionalGeneration"],
            "high_res_vision_config": {
                "global_attn_indexes": [0],
                "hidden_size": 16,
                "image_size": 64,
                "mlp_dim": 24,
                "model_type": "sam_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "output_channels": 4,
                "patch_size": 16,
                "window_size": 2,
            },
            "image_token_id": tok.convert_tokens_to_ids("<image_placeholder>"),
            "model_type": "deepseek_vl_hybrid",
            "text_config": tiny_llama(
                tok,
                max_position_embeddings=512,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            ),
            "torch_dtype": "bfloat16",
            "transformers_version": "4.56.0.dev0",
            "vision_config": {
                "hidden_act": "gelu",
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "model_type": "siglip_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "vision_use_head": False,
            },
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "high_res_image_mean": CLIP_MEAN,
            "high_res_image_std": CLIP_STD,
            "high_res_resample": 3,
            "high_res_size": {"height": 64, "width": 64},
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "DeepseekVLHybridImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "min_size": 14,
            "processor_class": "DeepseekVLHybridProcessor",
            "resample": 3,
            "rescale_factor": RESCALE,
            "size": {"height": 32, "width": 32},
        },
    )
    write_json(
        out / "processor_config.json",
        {"num_image_tokens": 16, "processor_class": "DeepseekVLHybridProcessor"},
    )
    write_json(out / "chat_template.json", {"chat_template": DEEPSEEK_TEMPLATE})
    generation(out, tok)
    weights(out, model_from_config(out))
    return Replica(
        "deepseek-community/deepseek-vl-7b-chat",
        out,
        ("model.aligner.high_res_vision_proj.weight",) * 2,
    )


#: Qwen2-VL-Instruct's template (chat_template.json): a default system turn, structured or
#: string content, <|vision_start|><|image_pad|><|vision_end|> per image.
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen2_vl(out: Path) -> Replica:
    """Qwen/Qwen2-VL-2B-Instruct: the flat text config of transformers 4.41 with a
    vision_config, mrope rope_scaling, tied embeddings, min/max_pixels in the preprocessor
    config, weights under model.* (language) and visual.* (vision)."""
    specials = ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
    tok = tokenizer(
        out,
        specials={
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
        extra_special=(*specials, "<|image_pad|>", "<|video_pad|>"),
        chat_template=QWEN2VL_TEMPLATE,
        config={"model_max_length": 32768, "bos_token": None},
    )
    ids = tok.convert_tokens_to_ids
    write_json(
        out / "config.json",
        {
            "architectures": ["Qwen2VLForConditionalGeneration"],
            "attention_dropout": 0.0,
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": tok.eos_token_id,
            "vision_start_token_id": ids("<|vision_start|>"),
            "vision_end_token_id": ids("<|vision_end|>"),
            "vision_token_id": ids("<|vision_pad|>"),
            "image_token_id": ids("<|image_pad|>"),
            "video_token_id": ids("<|video_pad|>"),
            "hidden_act": "silu",
            "hidden_size": 32,
            "initializer_range": 0.02,
            "intermediate_size": 64,
            "max_position_embeddings": 512,
            "max_window_layers": 2,
            "model_type": "qwen2_vl",
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "num_key_value_heads": 1,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 512,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.41.2",
            "use_cache": True,
            "use_sliding_window": False,
            "vision_config": {
                "depth": 2,
                "embed_dim": 32,
                "mlp_ratio": 2,
                "num_heads": 2,
                "in_chans": 3,
                "hidden_size": 32,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "spatial_patch_size": 14,
                "temporal_patch_size": 2,
            },
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vocab_size": len(tok),
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor",
        },
    )
    write_json(out / "chat_template.json", {"chat_template": QWEN2VL_TEMPLATE})
    generation(out, tok, bos_token_id=ids("<|endoftext|>"))
    weights(
        out,
        model_from_config(out),
        [("model.language_model.", "model."), ("model.visual.", "visual.")],
    )
    return Replica(
        "Qwen/Qwen2-VL-2B-Instruct",
        out,
        ("visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"),
    )


def build_deepseek_ai_original(out: Path) -> Replica:
    """deepseek-ai/deepseek-vl-7b-chat: the original layout (model_type multi_modality, no
    auto_map, code only in the DeepSeek-VL GitHub package) that transformers cannot load."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "config.json",
        {
            "aligner_config": {
                "cls": "MlpProjector",
                "model_type": "aligner",
                "params": {
                    "depth": 2,
                    "input_dim": 32,
                    "n_embed": 32,
                    "projector_type": "low_high_hybrid_split_mlp_gelu",
                },
            },
            "architectures": ["MultiModalityCausalLM"],
            "language_config": {
                "max_position_embeddings": 512,
                "model_type": "llama",
                "num_hidden_layers": 2,
                "torch_dtype": "float16",
                "vocab_size": 64,
            },
            "model_type": "multi_modality",
            "torch_dtype": "float16",
            "transformers_version": "4.38.2",
            "vision_config": {
                "cls": "HybridVisionTower",
                "model_type": "vision",
                "params": {
                    "concat_type": "tuple",
                    "freeze_high": True,
                    "freeze_low": True,
                    "high_res_cfg": {"image_size": 64, "model_name": "sam_b_downsample"},
                    "low_res_cfg": {"image_size": 32, "model_name": "siglip_large_patch16_384"},
                },
            },
        },
    )
    torch.manual_seed(0)
    save_file(
        {
            "aligner.high_up_proj.weight": torch.randn(16, 32),
            "language_model.model.embed_tokens.weight": torch.randn(64, 32),
        },
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return Replica(
        "deepseek-ai/deepseek-vl-7b-chat",
        out,
        ("language_model.model.embed_tokens.weight", ""),
    )
