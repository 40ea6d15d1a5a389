"""Tiny randomly initialised vision-language checkpoints, saved the way real ones are.

Each builder writes a complete ``save_pretrained`` folder (weights, config, tokenizer,
processor) so tests exercise captionkit's real loading code without any download.
"""

from __future__ import annotations

from pathlib import Path

#: The vision tower every tiny checkpoint shares: 32 px images in 4x4 patches, 2 small layers.
TINY_VISION = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
)

WORDS = [
    "a",
    "dog",
    "cat",
    "man",
    "woman",
    "child",
    "runs",
    "sits",
    "plays",
    "on",
    "the",
    "in",
    "of",
    "grass",
    "beach",
    "water",
    "street",
    "red",
    "blue",
    "black",
    "white",
    "two",
    "people",
    "ball",
    "snow",
    "park",
    "picture",
    "image",
    "photo",
    "shows",
    "with",
    "and",
    "is",
    "are",
]


def make_tokenizer(
    extra_special: tuple[str, ...] = (),
    chat_template: str | None = None,
    wrap: bool = False,
    image_token: str | None = None,
    extra_words: tuple[str, ...] = (),
):
    """A word-level fast tokenizer built with `tokenizers` (no download).

    ``wrap`` adds BERT-style ``<s> ... </s>`` around every text, as BLIP's tokenizer does
    (BLIP swaps the first for its decoder-start token and drops the last). ``image_token``
    is declared the way newer processors look it up (``tokenizer.image_token_id``).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    image = [image_token] if image_token else []
    specials = ["<pad>", "<s>", "</s>", "<unk>", *image, *extra_special]
    words = [*WORDS, *(w for w in extra_words if w not in WORDS)]
    vocab = {tok: i for i, tok in enumerate(specials + words + [".", ",", "?", ":", "!"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if wrap:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(extra_special) or None,
        **({"extra_special_tokens": {"image_token": image_token}} if image_token else {}),
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def _steer(model, tok) -> None:
    """Random weights babble: keep them off special tokens and off an instant EOS, so every
    test caption is non-empty text (a real checkpoint needs neither)."""
    model.generation_config.min_new_tokens = 3
    model.generation_config.suppress_tokens = [
        i for i in tok.all_special_ids if i != tok.eos_token_id
    ]


def _tiny_llama(tok, max_positions: int):
    """The 2-layer Llama that the chat VLMs' language halves share."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def _seed():
    import torch

    torch.manual_seed(0)


def build_vit_gpt2(out: Path) -> Path:
    """VisionEncoderDecoder(ViT, GPT-2): the ViT-GPT2 captioner family."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    _seed()
    tok = make_tokenizer()
    enc = ViTConfig(
        **TINY_VISION,
    )
    dec = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = VisionEncoderDecoderConfig(encoder=enc.to_dict(), decoder=dec.to_dict())
    config.decoder.is_decoder = True
    config.decoder.add_cross_attention = True
    config.decoder_start_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    _steer(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def build_blip(out: Path) -> Path:
    """BLIP for conditional generation with its processor."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    _seed()
    tok = make_tokenizer(extra_special=("[DEC]",), wrap=True)
    config = BlipConfig(
        vision_config=dict(
            **TINY_VISION,
        ),
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            bos_token_id=tok.convert_tokens_to_ids("[DEC]"),
            pad_token_id=tok.pad_token_id,
            sep_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
    )
    model = BlipForConditionalGeneration(config)
    _steer(model, tok)
    model.save_pretrained(out)
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok
    ).save_pretrained(out)
    return out


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>{% else %} {{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_llava(out: Path) -> Path:
    """A LLaVA chat VLM (CLIP vision tower + projector + Llama) with a chat template."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    _seed()
    tok = make_tokenizer(extra_special=("<image>",), chat_template=CHAT_TEMPLATE)
    image_id = tok.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            **TINY_VISION,
            projection_dim=32,
        ),
        text_config=_tiny_llama(tok, max_positions=256),
        image_token_id=image_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    _steer(model, tok)
    model.save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # the CLS token ("full" strategy)
    )
    processor.save_pretrained(out)
    return out


def build_git(out: Path) -> Path:
    """GIT: a decoder-only captioner reading CLIP image features (no chat template)."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    _seed()
    tok = make_tokenizer(wrap=True)
    config = GitConfig(
        vision_config=dict(
            **TINY_VISION,
        ),
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GitForCausalLM(config)
    _steer(model, tok)
    model.save_pretrained(out)
    GitProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
    ).save_pretrained(out)
    return out


def build_florence2(out: Path) -> Path:
    """Florence-2 (DaViT vision + BART): a captioner driven by task tokens such as <CAPTION>."""
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )

    _seed()
    # The words Florence2Processor expands task tokens into ("What does the image describe?").
    tok = make_tokenizer(
        wrap=True, image_token="<image>", extra_words=("what", "does", "describe", "detail")
    )
    vision = Florence2VisionConfig(
        depths=(1, 1),
        patch_size=(7, 3),
        patch_stride=(4, 2),
        patch_padding=(3, 1),
        patch_prenorm=(False, True),
        embed_dim=(16, 32),
        num_heads=(2, 4),
        num_groups=(2, 4),
        window_size=2,
        projection_dim=32,
        max_position_embeddings=16,
        drop_path_rate=0.0,
    )
    text = BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    model = Florence2ForConditionalGeneration(
        Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    )
    _steer(model, tok)
    model.generation_config.decoder_start_token_id = tok.eos_token_id
    model.save_pretrained(out)
    # 32 px -> strides 4 and 2 -> 4x4 patch features, plus one pooled feature.
    image_processor = CLIPImageProcessor(
        size={"height": 32, "width": 32}, do_center_crop=False, image_seq_length=17
    )
    Florence2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


def build_idefics3(out: Path) -> Path:
    """Idefics3, the architecture of SmolVLM: SigLIP-style vision + pixel shuffle + Llama."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    _seed()
    template = CHAT_TEMPLATE.replace(" <image>", "<image>")
    tok = make_tokenizer(
        extra_special=("<fake_token_around_image>", "<global-img>", "<end_of_utterance>"),
        chat_template=template,
        image_token="<image>",
        extra_words=("user", "assistant"),
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**TINY_VISION),
        text_config=_tiny_llama(tok, max_positions=512),
        image_token_id=tok.image_token_id,
        scale_factor=2,
    )
    model = Idefics3ForConditionalGeneration(config)
    _steer(model, tok)
    model.save_pretrained(out)
    # One 32 px tile, no splitting: (32/8)^2 patches / scale_factor^2 = 4 image tokens.
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=template
    ).save_pretrained(out)
    return out


def build_clip(out: Path) -> Path:
    """A tiny random CLIP (word-level tokenizer, 32 px images): CLIPScore, re-ranking, QA."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    words = ["<pad>", "<unk>", "<s>", "</s>", "a", "photo", "depicts", "dog", "cat", "runs",
             "on", "the", "grass", "sleeps", "sofa", "red", "square"]  # fmt: skip
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(words), max_position_embeddings=16, eos_token_id=3,
                         pad_token_id=0, bos_token_id=2, **small),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out)
    return out
