"""Replicas of LLaVA-layout chat VLMs: llava-1.5 and JoyCaption (transformers 4.x weight names)."""

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

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _llava_legacy_names() -> list[tuple[str, str]]:
    """LLaVA checkpoints saved by transformers 4.x (llava-hf, JoyCaption)."""
    return [
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ]


def build_llava15(out: Path) -> Replica:
    """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/336 (here 32 px), Vicuna, "default" feature
    strategy from layer -2, config keys of transformers 4.36 (image_token_index), the template
    in chat_template.json, weights under language_model.model.* / vision_tower.*."""
    tok = tokenizer(
        out,
        specials={
            "unk_token": "<unk>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
        },
        extra_special=("<image>",),
        config={"legacy": False, "padding_side": "left"},
    )
    image = tok.convert_tokens_to_ids("<image>")
    write_json(
        out / "config.json",
        {
            "architectures": ["LlavaForConditionalGeneration"],
            "ignore_index": -100,
            "image_token_index": image,
            "model_type": "llava",
            "pad_token_id": tok.pad_token_id,
            "projector_hidden_act": "gelu",
            "text_config": tiny_llama(
                tok,
                _name_or_path="lmsys/vicuna-7b-v1.5",
                architectures=["LlamaForCausalLM"],
                max_position_embeddings=256,
                rms_norm_eps=1e-05,
                torch_dtype="float16",
            ),
            "tie_word_embeddings": False,
            "torch_dtype": "float16",
            "transformers_version": "4.36.0.dev0",
            "vision_config": {
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "model_type": "clip_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "projection_dim": 32,
                "vocab_size": 32000,
            },
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
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
            "processor_class": "LlavaProcessor",
            "resample": 3,
            "rescale_factor": RESCALE,
            "size": {"shortest_edge": 32},
        },
    )
    write_json(
        out / "processor_config.json",
        {
            "image_token": "<image>",
            "num_additional_image_tokens": 1,
            "patch_size": 8,
            "processor_class": "LlavaProcessor",
            "vision_feature_select_strategy": "default",
        },
    )
    write_json(out / "chat_template.json", {"chat_template": LLAVA_TEMPLATE})
    generation(out, tok)
    weights(out, model_from_config(out), _llava_legacy_names())
    return Replica(
        "llava-hf/llava-1.5-7b-hf",
        out,
        (
            "language_model.model.layers.0.self_attn.q_proj.weight",
            "model.language_model.layers.0.self_attn.q_proj.weight",
        ),
    )


#: JoyCaption Beta One's template (Llama 3.1 style): string content only — the first user turn
#: gets the image tokens and ``.replace``s any the user wrote, a system turn is slotted in.
JOYCAPTION_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- set ns = namespace(first=true) %}"
    "{%- for message in messages %}"
    "{%- if ns.first and message['role'] == 'user' %}{%- set ns.first = false %}"
    "{{- '<|start_header_id|>user<|end_header_id|>\n\n"
    "<|reserved_special_token_70|><|reserved_special_token_69|><|reserved_special_token_71|>'"
    " + message['content'].replace('<|reserved_special_token_69|>', '').lstrip() + '<|eot_id|>' }}"
    "{%- else %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)
JOYCAPTION_SYSTEM = "You are a helpful image captioner."


def build_joycaption(out: Path) -> Replica:
    """fancyfeast/llama-joycaption-beta-one-hf-llava: LLaVA with a SigLIP tower ("full"
    features from layer -2) and Llama 3.1, a string-content template with a system turn, the
    image token <|reserved_special_token_69|>; weights in transformers 4.x LLaVA names."""
    image_token = "<|reserved_special_token_69|>"
    tok = tokenizer(
        out,
        specials={
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": "<|finetune_right_pad_id|>",
            "unk_token": "<|reserved_special_token_0|>",
        },
        extra_special=(
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|reserved_special_token_70|>",
            image_token,
            "<|reserved_special_token_71|>",
        ),
        template="<|begin_of_text|> $A",
        chat_template=JOYCAPTION_TEMPLATE,
        config={"model_max_length": 131072},
    )
    image = tok.convert_tokens_to_ids(image_token)
    write_json(
        out / "config.json",
        {
            "architectures": ["LlavaForConditionalGeneration"],
            "ignore_index": -100,
            "image_seq_length": 16,
            "image_token_index": image,
            "model_type": "llava",
            "projector_hidden_act": "gelu",
            "text_config": tiny_llama(
                tok,
                _name_or_path="unsloth/Meta-Llama-3.1-8B-Instruct",
                architectures=["LlamaForCausalLM"],
                bos_token_id=tok.bos_token_id,
                eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id],
                max_position_embeddings=512,
                rope_scaling={
                    "factor": 8.0,
                    "high_freq_factor": 4.0,
                    "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 256,
                    "rope_type": "llama3",
                },
                rope_theta=500000.0,
                torch_dtype="bfloat16",
            ),
            "torch_dtype": "bfloat16",
            "transformers_version": "4.48.3",
            "vision_config": {
                "hidden_act": "gelu_pytorch_tanh",
                "hidden_size": 32,
                "image_size": 32,
                "intermediate_size": 64,
                "layer_norm_eps": 1e-06,
                "model_type": "siglip_vision_model",
                "num_attention_heads": 2,
                "num_hidden_layers": 2,
                "patch_size": 8,
                "vision_use_head": False,
            },
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "full",
        },
    )
    write_json(
        out / "preprocessor_config.json",
        {
            "do_convert_rgb": None,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "SiglipImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "LlavaProcessor",
            "resample": 2,
            "rescale_factor": RESCALE,
            "size": {"height": 32, "width": 32},
        },
    )
    write_json(
        out / "processor_config.json",
        {
            "image_token": image_token,
            "num_additional_image_tokens": 0,
            "patch_size": 8,
            "processor_class": "LlavaProcessor",
            "vision_feature_select_strategy": "full",
        },
    )
    write_json(out / "chat_template.json", {"chat_template": JOYCAPTION_TEMPLATE})
    generation(
        out, tok, eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id]
    )
    weights(out, model_from_config(out), _llava_legacy_names())
    return Replica(
        "fancyfeast/llama-joycaption-beta-one-hf-llava",
        out,
        (
            "multi_modal_projector.linear_1.weight",
            "model.multi_modal_projector.linear_1.weight",
        ),
        options={"system_prompt": JOYCAPTION_SYSTEM},
    )


#: SmolVLM's template: "<|im_start|>User:<image>text<end_of_utterance>\nAssistant:".
