"""Build the encoder-decoder captioner that training starts from, and save it complete.

A model is either assembled from any HF vision encoder plus any causal-LM decoder (with
cross-attention added to the decoder), or continued from an existing captioning checkpoint.
Whatever is saved carries its image processor, tokenizer and the special-token ids in both the
config and the generation config, so ``captionkit caption --model hf:DIR`` loads it as is.

Why not ``VisionEncoderDecoderModel.from_encoder_decoder_pretrained``: in transformers 5.x it
reads ``decoder_config.is_decoder``, which GPT-2-style configs no longer have, and it loads a
CLIP/SigLIP id as the full two-tower model. Building the two halves here avoids both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, ModelLoadError, require

#: Two-tower ids whose vision half is a separate class (loaded from the same checkpoint).
_VISION_TOWERS = {
    "clip": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip2": "Siglip2VisionModel",
    "chinese_clip": "ChineseCLIPVisionModel",
    "blip": "BlipVisionModel",
    "altclip": "AltCLIPVisionModel",
}


@dataclass
class CaptionModel:
    """The three things a captioning checkpoint is made of, kept together."""

    model: Any
    image_processor: Any
    tokenizer: Any

    def save(self, directory: str | Path) -> Path:
        """Save model, image processor and tokenizer side by side (a loadable hf: dir)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out


def _transformers() -> Any:
    tf = require("transformers", "train", "training captioners")
    # the load reports list every new cross-attention weight; errors still show
    tf.utils.logging.set_verbosity_error()
    return tf


def load_image_processor(source: str) -> Any:
    """The encoder's own preprocessing (never restated by the caller).

    ``backend="pil"`` keeps the PIL backend: the default one needs torchvision.
    """
    tf = _transformers()
    try:
        return tf.AutoImageProcessor.from_pretrained(source, backend="pil")
    except Exception as exc:
        raise ModelLoadError(
            f"no image processor found for '{source}': {_first_line(exc)}"
        ) from exc


def load_tokenizer(source: str) -> Any:
    tf = _transformers()
    try:
        tok = tf.AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"no tokenizer found for '{source}': {_first_line(exc)}") from exc
    if tok.pad_token is None:  # GPT-2 has none; padding positions are masked out anyway
        tok.pad_token = tok.eos_token
    return tok


def load_encoder(source: str) -> Any:
    """A vision model whose forward takes ``pixel_values`` (the vision tower of CLIP-likes)."""
    tf = _transformers()
    try:
        config = tf.AutoConfig.from_pretrained(source)
        tower = _VISION_TOWERS.get(getattr(config, "model_type", ""))
        if tower is not None:
            return getattr(tf, tower).from_pretrained(source)
        return tf.AutoModel.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"cannot load encoder '{source}': {_first_line(exc)}") from exc


def load_decoder(source: str) -> Any:
    """A causal LM with cross-attention layers added (new layers start randomly initialised)."""
    tf = _transformers()
    try:
        config = tf.AutoConfig.from_pretrained(source)
        config.add_cross_attention = True
        config.is_decoder = True
        return tf.AutoModelForCausalLM.from_pretrained(source, config=config)
    except Exception as exc:
        raise ModelLoadError(f"cannot load decoder '{source}': {_first_line(exc)}") from exc


def build_model(
    encoder: str | None = None,
    decoder: str | None = None,
    init: str | None = None,
    *,
    max_new_tokens: int = 40,
) -> CaptionModel:
    """Assemble encoder + decoder, or continue from a captioning checkpoint ``init``."""
    tf = _transformers()
    if init:
        if encoder or decoder:
            raise ConfigError("give either --init CHECKPOINT or --encoder/--decoder, not both")
        try:
            model = tf.VisionEncoderDecoderModel.from_pretrained(init)
        except Exception as exc:
            raise ModelLoadError(
                f"'{init}' is not an encoder-decoder captioning checkpoint: {_first_line(exc)}"
            ) from exc
        bundle = CaptionModel(model, load_image_processor(init), load_tokenizer(init))
    else:
        if not (encoder and decoder):
            raise ConfigError("give --encoder ID and --decoder ID (or --init CHECKPOINT)")
        enc, dec = load_encoder(encoder), load_decoder(decoder)
        model = tf.VisionEncoderDecoderModel(encoder=enc, decoder=dec)
        bundle = CaptionModel(model, load_image_processor(encoder), load_tokenizer(decoder))
    configure_special_tokens(bundle, max_new_tokens=max_new_tokens)
    return bundle


def build_from_configs(
    encoder_config: Any, decoder_config: Any, image_processor: Any, tokenizer: Any
) -> CaptionModel:
    """A randomly initialised model of a given architecture (benchmarks, tests)."""
    tf = _transformers()
    decoder_config.add_cross_attention = True
    decoder_config.is_decoder = True
    config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder_config, decoder_config
    )
    bundle = CaptionModel(tf.VisionEncoderDecoderModel(config=config), image_processor, tokenizer)
    configure_special_tokens(bundle)
    return bundle


def configure_special_tokens(bundle: CaptionModel, *, max_new_tokens: int = 40) -> None:
    """Write pad/eos/decoder-start ids into config and generation config.

    Without them the model cannot shift labels right nor stop generating, and a loader that
    reads only ``generation_config.json`` would decode forever.
    """
    tok, model = bundle.tokenizer, bundle.model
    if tok.eos_token_id is None:
        raise ModelLoadError("the decoder's tokenizer has no end-of-sequence token")
    start = next(i for i in (tok.bos_token_id, tok.cls_token_id, tok.eos_token_id) if i is not None)
    ids = {
        "decoder_start_token_id": start,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": start,
    }
    for key, value in ids.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    if model.generation_config.max_new_tokens is None:
        model.generation_config.max_new_tokens = max_new_tokens


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
