"""A tiny random replica of microsoft/Phi-3.5-vision-instruct, laid out file for file.

The files carry the published keys (config.json with ``img_processor``/``embd_layer`` and
LongRoPE under its old name "su", preprocessor_config.json, tokenizer files with the real special
tokens and chat template, generation_config.json, sharded safetensors with an index). Weight
names and shapes are written out here from the published index, independently of captionkit's
model classes, so a naming slip in the loader shows up as a missing or unexpected tensor.

Sizes: a 2-layer Phi-3 language model (hidden 32) and a 3-layer CLIP tower on 56 px tiles of
14 px patches: 4x4 patches, merged 2x2 into 2x2 = 4 tokens per tile (the real 336/14 gives 144).
"""

from __future__ import annotations

import json
from pathlib import Path

#: The published chat template of Phi-3.5-vision-instruct's tokenizer_config.json.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
    "+ '<|end|>\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != "
    "'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}"
)
#: Phi-3's added special tokens, in their published order (32000...32010 in the real vocab).
SPECIALS = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
]
WORDS = (
    "a dog cat man woman child runs sits plays on the in of grass beach water street red blue "
    "black white two people ball snow park picture image photo shows with and is are describe "
    "this one sentence short caption what detail write alt text for"
).split()
LM = dict(hidden=32, layers=2, heads=2, intermediate=64)
VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
    projection_dim=16,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
TOKENS_PER_TILE = ((VISION["image_size"] // VISION["patch_size"]) // 2) ** 2  # 4


def build_tokenizer():
    """Word-level stand-in for Phi-3's SentencePiece tokenizer: BOS added like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *WORDS, ".", ",", "?"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tok.add_special_tokens({"eos_token": "<|endoftext|>"})
    return tok


def tensor_shapes(
    vocab_size: int, lm: dict | None = None, vision: dict | None = None
) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by its published name (tiny sizes unless given)."""
    lm, v = lm or LM, vision or VISION
    h, i = lm["hidden"], lm["intermediate"]
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab_size, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (vocab_size, h),
    }
    for n in range(lm["layers"]):
        p = f"model.layers.{n}."
        shapes.update(
            {
                p + "self_attn.qkv_proj.weight": (3 * h, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_up_proj.weight": (2 * i, h),
                p + "mlp.down_proj.weight": (h, i),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    c, ci = v["hidden_size"], v["intermediate_size"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    vm = "model.vision_embed_tokens.img_processor.vision_model."
    shapes.update(
        {
            vm + "embeddings.class_embedding": (c,),
            vm + "embeddings.patch_embedding.weight": (c, 3, v["patch_size"], v["patch_size"]),
            vm + "embeddings.position_embedding.weight": (patches + 1, c),
            vm + "pre_layrnorm.weight": (c,),
            vm + "pre_layrnorm.bias": (c,),
            vm + "post_layernorm.weight": (c,),
            vm + "post_layernorm.bias": (c,),
        }
    )
    for n in range(v["num_hidden_layers"]):
        p = f"{vm}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (c, c)
            shapes[p + f"self_attn.{proj}.bias"] = (c,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[p + f"{norm}.weight"] = (c,)
            shapes[p + f"{norm}.bias"] = (c,)
        shapes.update(
            {
                p + "mlp.fc1.weight": (ci, c),
                p + "mlp.fc1.bias": (ci,),
                p + "mlp.fc2.weight": (c, ci),
                p + "mlp.fc2.bias": (c,),
            }
        )
    e = "model.vision_embed_tokens."
    shapes.update(
        {
            e + "glb_GN": (1, 1, 4 * c),
            e + "sub_GN": (1, 1, 1, 4 * c),
            e + "img_projection.0.weight": (h, 4 * c),
            e + "img_projection.0.bias": (h,),
            e + "img_projection.2.weight": (h, h),
            e + "img_projection.2.bias": (h,),
        }
    )
    return shapes


def build(out: Path, *, num_crops: int = 4, drop: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write the replica into ``out``; ``drop`` leaves tensors out (a broken download)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save_pretrained(out)
    for stray in ("chat_template.jinja", "chat_template.json"):
        (out / stray).unlink(missing_ok=True)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    # as published: the class named is LlamaTokenizer, which transformers 5 overrides for phi3
    tok_cfg.update(
        chat_template=CHAT_TEMPLATE,
        processor_class="Phi3VProcessor",
        tokenizer_class="LlamaTokenizer",
        legacy=False,
    )
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    vocab_size = len(tok) + 5  # like 32064 > 32011: embedding rows no token uses
    head_half = LM["hidden"] // LM["heads"] // 2
    config = {
        "_name_or_path": "Phi-3.5-vision-instruct",
        "architectures": ["Phi3VForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_phi3_v.Phi3VConfig",
            "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
        },
        "bos_token_id": 1,
        "embd_layer": {
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": LM["hidden"],
        "img_processor": {
            "image_dim_out": VISION["hidden_size"],
            "model_name": "openai/clip-vit-large-patch14-336",
            "name": "clip_vision_model",
            "num_img_tokens": TOKENS_PER_TILE,
        },
        "vision_config": VISION,
        "initializer_range": 0.02,
        "intermediate_size": LM["intermediate"],
        "max_position_embeddings": 131072,
        "model_type": "phi3_v",
        "num_attention_heads": LM["heads"],
        "num_hidden_layers": LM["layers"],
        "num_key_value_heads": LM["heads"],
        "original_max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "long_factor": [1.0 + k for k in range(head_half)],
            "short_factor": [1.0 + 0.1 * k for k in range(head_half)],
            "type": "su",
        },
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.38.1",
        "use_cache": True,
        "vocab_size": vocab_size,
        "_attn_implementation": "flash_attention_2",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "auto_map": {
                    "AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
                    "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
                },
                "do_convert_rgb": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_processor_type": "Phi3VImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "num_crops": num_crops,
                "num_img_tokens": TOKENS_PER_TILE,
                "processor_class": "Phi3VProcessor",
            },
            indent=2,
        )
    )
    eos = [ids["<|endoftext|>"], ids["<|assistant|>"], ids["<|end|>"]]
    # Random weights babble: keep them off special and unused ids and off an instant stop.
    suppress = [0, 1, 2] + [i for t, i in ids.items() if i not in eos]
    suppress += list(range(len(tok), vocab_size))
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": eos,
                "pad_token_id": ids["<|endoftext|>"],
                "min_new_tokens": 3,
                "suppress_tokens": suppress,
            },
            indent=2,
        )
    )

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in tensor_shapes(vocab_size).items():
        if name in drop:
            continue
        t = torch.randn(shape, generator=gen) * 0.2
        if name.endswith("norm.weight") or ("layer_norm" in name and name.endswith(".weight")):
            t = 1.0 + 0.1 * t
        tensors[name] = t.contiguous()
    language = {k: v for k, v in tensors.items() if "vision_embed_tokens" not in k}
    vision = {k: v for k, v in tensors.items() if "vision_embed_tokens" in k}
    shards = {
        "model-00001-of-00002.safetensors": language,
        "model-00002-of-00002.safetensors": vision,
    }
    weight_map = {}
    for file, part in shards.items():
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return out
