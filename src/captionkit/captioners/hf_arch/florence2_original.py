"""Florence-2 as Microsoft published it (microsoft/Florence-2-base, -large) on transformers 5.

Those repos declare ``model_type: "florence2"`` like transformers' native port, but their config
(a DaViT ``vision_config`` with ``dim_embed``, a BART-like ``florence2_language`` text config) and
their weight names (``vision_tower.*.fn.dw``, ``image_projection``, ``language_model.model.*``)
belong to remote code that no longer runs on transformers 5. The native class silently loads 8
of their 668 tensors. So the first load converts the checkpoint to the native layout — config,
weight names, and a native ``Florence2Processor`` built from the repo's BART tokenizer and
CLIP-style image settings — and saves it under the user cache dir; later loads reuse it while
the source files are unchanged. Every checkpoint tensor must land in the model, or the load
stops with a one-line :class:`~captionkit.errors.ModelLoadError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from captionkit.errors import CaptionkitError, ModelLoadError, require

#: What ``hf.py`` does with this model: send Florence-2 task tokens such as ``<CAPTION>``.
model_type = "florence2"

#: Bump when the conversion changes: older cached conversions are then redone.
CONVERTER_VERSION = 1
#: Written last into a converted folder; a folder without it is never trusted.
MARKER = "captionkit-florence2.json"
IMAGE_TOKEN = "<image>"

#: The tokens the original ``processing_florence2.py`` adds to the BART tokenizer at start-up,
#: in its order: their ids (50265...51288) are rows of the checkpoint's embedding matrix, so the
#: order is part of the model.
TASK_TOKENS: tuple[str, ...] = (
    "<od>", "</od>", "<ocr>", "</ocr>",
    *(f"<loc_{i}>" for i in range(1000)),
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
    "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
    "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
)  # fmt: skip

#: The remote code's DaViT defaults, for keys a config.json leaves out.
_DAVIT_DEFAULTS: dict[str, Any] = {
    "drop_path_rate": 0.1,
    "patch_size": [7, 3, 3, 3],
    "patch_stride": [4, 2, 2, 2],
    "patch_padding": [3, 1, 1, 1],
    "patch_prenorm": [False, True, True, True],
    "dim_embed": [256, 512, 1024, 2048],
    "num_heads": [8, 16, 32, 64],
    "num_groups": [8, 16, 32, 64],
    "depths": [1, 1, 9, 1],
    "window_size": 12,
    "projection_dim": 1024,
}
#: BART architecture keys carried from the original ``text_config`` to the native BartConfig.
_TEXT_KEYS = (
    "vocab_size", "max_position_embeddings", "d_model", "encoder_layers", "decoder_layers",
    "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads",
    "encoder_layerdrop", "decoder_layerdrop", "activation_function", "dropout",
    "attention_dropout", "activation_dropout", "init_std", "classifier_dropout",
    "scale_embedding", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id",
    "decoder_start_token_id", "forced_eos_token_id",
)  # fmt: skip
#: Decoding defaults the remote code's language model took from its text_config.
_GENERATION_KEYS = (
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
    "forced_bos_token_id", "forced_eos_token_id", "no_repeat_ngram_size", "num_beams",
    "early_stopping", "length_penalty", "min_length", "max_length",
)  # fmt: skip
_IMAGE_KEYS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
    "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
)  # fmt: skip
_TOKENIZER_FILES = (
    "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json",
)  # fmt: skip
_WEIGHT_FILES = (
    "model.safetensors.index.json", "model.safetensors",
    "pytorch_model.bin.index.json", "pytorch_model.bin",
)  # fmt: skip

_SHARED = "model.language_model.shared.weight"
#: Native tensors the checkpoint need not hold: tied to ``shared``, or a fixed sinusoid table.
TIED_OR_DERIVED = frozenset(
    {
        "lm_head.weight",
        "model.language_model.encoder.embed_tokens.weight",
        "model.language_model.decoder.embed_tokens.weight",
        "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",
    }
)

_BLOCK = r"vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block|channel_block)\."
_V = "model.vision_tower."
_B = _V + r"blocks.\1.\2.\3."
_P = "model.multi_modal_projector."
#: original name pattern -> native name, tried in order (the first full match wins).
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"vision_tower\.convs\.(\d+)\.proj\.(weight|bias)", _V + r"convs.\1.conv.\2"),
        (r"vision_tower\.convs\.(\d+)\.norm\.(weight|bias)", _V + r"convs.\1.norm.\2"),
        (_BLOCK + r"conv([12])\.fn\.dw\.(weight|bias)", _B + r"conv\4.\5"),
        (_BLOCK + r"(?:window_attn|channel_attn)\.norm\.(weight|bias)", _B + r"norm1.\4"),
        (_BLOCK + r"(window_attn|channel_attn)\.fn\.(qkv|proj)\.(weight|bias)", _B + r"\4.\5.\6"),
        (_BLOCK + r"ffn\.norm\.(weight|bias)", _B + r"norm2.\4"),
        (_BLOCK + r"ffn\.fn\.net\.(fc[12])\.(weight|bias)", _B + r"ffn.\4.\5"),
        (r"image_projection", _P + "image_projection.weight"),
        (r"image_proj_norm\.(weight|bias)", _P + r"image_proj_norm.\1"),
        (r"image_pos_embed\.(row|column)_embeddings\.weight",
         _P + r"image_position_embed.\1_embeddings.weight"),
        (r"visual_temporal_embed\.pos_idx_to_embed", _P + "visual_temporal_embed.pos_idx_to_embed"),
        (r"language_model\.model\.(.+)", r"model.language_model.\1"),
        (r"language_model\.lm_head\.weight", "lm_head.weight"),
    )
)  # fmt: skip
#: Original tensors with no native counterpart: BART's logit bias, zero in every release.
_DROPPED = frozenset({"language_model.final_logits_bias"})


def matches(config: dict[str, Any]) -> bool:
    """The original remote-code layout: ``model_type`` florence2 with a DaViT vision config
    (``dim_embed``; its ``model_type`` is "davit", or "" / "florence2_vision" once re-saved by
    the remote code) or an ``auto_map`` into ``modeling_florence2``. The native port
    (florence-community) has a ``florence_vision`` config with ``embed_dim`` and no auto_map."""
    if config.get("model_type") != "florence2":
        return False
    vision = config.get("vision_config") or {}
    if not isinstance(vision, dict) or vision.get("model_type") == "florence_vision":
        return False
    davit = vision.get("model_type") in ("davit", "florence2_vision") or (
        "dim_embed" in vision and "embed_dim" not in vision
    )
    refs = []
    for ref in (config.get("auto_map") or {}).values():
        refs.extend(ref if isinstance(ref, list) else [ref])
    remote = any(isinstance(r, str) and "modeling_florence2." in r for r in refs)
    return davit or (remote and "embed_dim" not in vision)


def native_key(key: str) -> str | None:
    """The native parameter name for an original checkpoint key; None for a tensor the native
    model drops (``final_logits_bias``); the key itself when no rule knows it (then the
    strict check reports it)."""
    if key in _DROPPED:
        return None
    for pattern, replacement in _RULES:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return key


def vision_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Native ``Florence2VisionConfig`` keyword arguments from the original DaViT config."""
    given = raw.get("vision_config") or {}
    vision = {**_DAVIT_DEFAULTS, **given}
    source = vision.get("image_feature_source", ["spatial_avg_pool", "temporal_avg_pool"])
    temporal = vision.get("visual_temporal_embedding") or {}
    position = vision.get("image_pos_embed") or {}
    if list(source) != ["spatial_avg_pool", "temporal_avg_pool"]:
        raise ModelLoadError(f"Florence-2 image_feature_source {source} is not supported")
    if (
        temporal.get("type", "COSINE") != "COSINE"
        or position.get("type", "learned_abs_2d") != "learned_abs_2d"
    ):
        raise ModelLoadError(
            "Florence-2 variants with other image position embeddings are not supported"
        )
    keys = ("depths", "patch_size", "patch_stride", "patch_padding", "patch_prenorm",
            "num_heads", "num_groups", "window_size", "drop_path_rate")  # fmt: skip
    return {
        **{k: vision[k] for k in keys},
        "embed_dim": vision["dim_embed"],
        "projection_dim": given.get("projection_dim")
        or raw.get("projection_dim")
        or _DAVIT_DEFAULTS["projection_dim"],
        "max_temporal_embeddings": temporal.get("max_temporal_embeddings", 100),
        "max_position_embeddings": position.get("max_pos_embeddings", 50),
    }


def _split_text_config(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    text = raw.get("text_config") or {}
    bart = {k: text[k] for k in _TEXT_KEYS if k in text}
    generation = {k: text[k] for k in _GENERATION_KEYS if text.get(k) is not None}
    return bart, generation


# -- source files ------------------------------------------------------------------------------
def _source_files(model_id: str, revision: str | None) -> tuple[Path, dict[str, Path]]:
    """The repo's folder and the files the conversion reads (weights, config, tokenizer...)."""
    from captionkit.captioners.hf_arch import repo_file

    def fetch(name: str) -> Path | None:
        return repo_file(model_id, name, revision)

    files: dict[str, Path] = {}
    for name in ("config.json", "preprocessor_config.json", "generation_config.json",
                 *_TOKENIZER_FILES):  # fmt: skip
        if (path := fetch(name)) is not None:
            files[name] = path
    for name in _WEIGHT_FILES:
        if (path := fetch(name)) is None:
            continue
        files[name] = path
        if name.endswith(".index.json"):
            shards = sorted(
                set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
            )
            for shard in shards:
                if (shard_path := fetch(shard)) is None:
                    raise ModelLoadError(
                        f"Florence-2 checkpoint '{model_id}' lacks weight shard {shard}; "
                        "is the download complete?"
                    )
                files[shard] = shard_path
        break
    else:
        raise ModelLoadError(
            f"Florence-2 checkpoint '{model_id}' has no weights (model.safetensors or "
            "pytorch_model.bin) here or in the Hugging Face cache; connect to the network once, "
            "or pass --model hf:/path/to/the/downloaded/folder"
        )
    if "config.json" not in files or "preprocessor_config.json" not in files:
        missing = "config.json" if "config.json" not in files else "preprocessor_config.json"
        raise ModelLoadError(f"Florence-2 checkpoint '{model_id}' lacks {missing}")
    return files["config.json"].parent, files


def _fingerprint(files: dict[str, Path]) -> str:
    """Changes when any source file does (path, size, modification time): stat only, no reads."""
    entries = []
    for name, path in sorted(files.items()):
        stat = path.stat()
        entries.append([name, str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    payload = json.dumps({"version": CONVERTER_VERSION, "files": entries})
    return hashlib.sha256(payload.encode()).hexdigest()


def default_cache_root() -> Path:
    """``<user cache dir>/captionkit/converted``: where converted checkpoints live."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "converted"


def converted_dir(model_id: str, revision: str | None, cache_root: Path | None = None) -> Path:
    """Where the conversion of ``model_id`` (a hub id at a revision, or a folder) is cached."""
    local = Path(model_id).expanduser()
    source = str(local.resolve()) if local.is_dir() else f"{model_id}@{revision or 'main'}"
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / f"florence2-{hashlib.sha256(source.encode()).hexdigest()[:24]}"


def _is_current(directory: Path, fingerprint: str) -> bool:
    try:
        return json.loads((directory / MARKER).read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- conversion --------------------------------------------------------------------------------
def _read_weights(files: dict[str, Path]) -> dict[str, Any]:
    torch = require("torch", "hf", "Florence-2")
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for name, path in files.items():
        if name.endswith(".safetensors"):
            tensors.update(load_file(str(path)))
        elif name.endswith(".bin"):
            tensors.update(torch.load(str(path), map_location="cpu", weights_only=True))
    return tensors


def convert_state_dict(original: dict[str, Any]) -> dict[str, Any]:
    """Rename an original state dict to native names; tied copies are checked and dropped."""
    torch = require("torch", "hf", "Florence-2")
    native: dict[str, Any] = {}
    for key, tensor in original.items():
        name = native_key(key)
        if name is None:
            if torch.count_nonzero(tensor):
                raise ModelLoadError(
                    f"Florence-2 checkpoint has a non-zero {key}, which transformers' "
                    "Florence-2 cannot represent"
                )
            continue
        if key == "image_projection":  # a bare (in, out) matrix; nn.Linear keeps (out, in)
            tensor = tensor.t()
        native[name] = tensor.contiguous()
    for tied in ("model.language_model.encoder.embed_tokens.weight",
                 "model.language_model.decoder.embed_tokens.weight", "lm_head.weight"):  # fmt: skip
        if tied not in native:
            continue
        copy = native.pop(tied)
        if _SHARED not in native:
            native[_SHARED] = copy
        elif not torch.equal(copy, native[_SHARED]):
            raise ModelLoadError(
                f"Florence-2 checkpoint's {tied} differs from the shared embedding; untied "
                "embeddings are not supported"
            )
    return native


def _tokenizer(src: Path, rows: int) -> Any:
    """The repo's BART tokenizer with the original processor's task tokens (same ids) and the
    ``<image>`` placeholder the native processor expects."""
    from tokenizers import AddedToken
    from transformers import BartTokenizer

    tok = BartTokenizer.from_pretrained(str(src))
    vocab = tok.get_vocab()
    missing = [t for t in TASK_TOKENS if t not in vocab]
    if missing:
        tok.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if len(tok) > rows:
        raise ModelLoadError(
            f"Florence-2 tokenizer has {len(tok)} tokens but the checkpoint embeds {rows}; "
            "the tokenizer files do not belong to these weights"
        )
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens(
            [AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True
        )
    return tok


def _image_processor(src: Path, vision: dict[str, Any]) -> Any:
    import transformers

    settings = json.loads((src / "preprocessor_config.json").read_text(encoding="utf-8"))
    kwargs = {k: settings[k] for k in _IMAGE_KEYS if settings.get(k) is not None}
    size = kwargs.get("size") or {"height": 768, "width": 768}
    height, width = (size["height"], size["width"]) if "height" in size else (768, 768)
    for k, s, p in zip(
        vision["patch_size"], vision["patch_stride"], vision["patch_padding"], strict=True
    ):
        height, width = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    # One token per final feature cell plus the pooled one: what the projector emits.
    kwargs["image_seq_length"] = height * width + 1
    try:
        import torchvision  # noqa: F401

        cls: Any = transformers.CLIPImageProcessor
    except ImportError:
        cls = transformers.CLIPImageProcessorPil
    return cls(**kwargs)


def _check_keys(native: dict[str, Any], config: Any) -> None:
    """Every native tensor present with the right shape, and no checkpoint tensor left over."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    with torch.device("meta"):
        expected = {
            k: tuple(v.shape)
            for k, v in Florence2ForConditionalGeneration(config).state_dict().items()
        }
    unknown = sorted(set(native) - set(expected))
    if unknown:
        raise ModelLoadError(
            f"Florence-2 checkpoint has {len(unknown)} tensor(s) the model has no place for "
            f"(first: {unknown[0]})"
        )
    absent = sorted(set(expected) - set(native) - TIED_OR_DERIVED)
    if absent:
        raise ModelLoadError(
            f"Florence-2 checkpoint lacks {len(absent)} tensor(s) the model needs (first: "
            f"{absent[0]}); is the download complete?"
        )
    for key, tensor in native.items():
        if tuple(tensor.shape) != expected[key]:
            raise ModelLoadError(
                f"Florence-2 checkpoint tensor {key} has shape {tuple(tensor.shape)}, its "
                f"config says {expected[key]}"
            )


def _write_converted(src: Path, files: dict[str, Path], raw: dict[str, Any], out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BartConfig, Florence2Config, Florence2Processor, GenerationConfig

    native = convert_state_dict(_read_weights(files))
    if _SHARED not in native:
        raise ModelLoadError(f"Florence-2 checkpoint lacks its token embedding ({_SHARED})")
    rows = native[_SHARED].shape[0]
    tok = _tokenizer(src, rows)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id >= rows:  # the placeholder needs a row; its input is replaced by image features
        extra = torch.zeros(
            image_id + 1 - rows, native[_SHARED].shape[1], dtype=native[_SHARED].dtype
        )
        native[_SHARED] = torch.cat([native[_SHARED], extra]).contiguous()
    vision = vision_config(raw)
    bart, generation = _split_text_config(raw)
    bart["vocab_size"] = native[_SHARED].shape[0]
    config = Florence2Config(
        vision_config=vision, text_config=BartConfig(**bart).to_dict(), image_token_id=image_id
    )
    _check_keys(native, config)

    save_file(native, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    if "generation_config.json" in files:  # the repo's own defaults win over text_config's
        saved = json.loads(files["generation_config.json"].read_text(encoding="utf-8"))
        generation.update(
            {
                k: v
                for k, v in saved.items()
                if k not in ("transformers_version", "_from_model_config")
            }
        )
    suppress = [int(i) for i in generation.get("suppress_tokens") or []]
    generation["suppress_tokens"] = sorted({*suppress, image_id})  # never write the placeholder
    GenerationConfig(**generation).save_pretrained(out)

    staging = out / ".tokenizer"
    tok.save_pretrained(staging)
    from transformers import BartTokenizer

    tok = BartTokenizer.from_pretrained(str(staging), image_token=IMAGE_TOKEN)
    Florence2Processor(
        image_processor=_image_processor(src, vision), tokenizer=tok
    ).save_pretrained(out)
    shutil.rmtree(staging, ignore_errors=True)


def convert(
    model_id: str,
    raw: dict[str, Any],
    *,
    revision: str | None = None,
    cache_root: Path | None = None,
) -> Path:
    """The native-layout folder for this original checkpoint, converting only when the cached
    one is missing or its source files changed. Written in a temporary sibling and renamed into
    place, so a killed conversion never leaves a folder a later load would trust."""
    src, files = _source_files(model_id, revision)
    fingerprint = _fingerprint(files)
    target = converted_dir(model_id, revision, cache_root)
    if _is_current(target, fingerprint):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from captionkit.llm.gguf import sweep_stale_tmp

    sweep_stale_tmp(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        try:
            _write_converted(src, files, raw, tmp)
        except CaptionkitError:
            raise
        except Exception as exc:  # a malformed file: one line, not a traceback
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(
                f"cannot convert Florence-2 checkpoint '{model_id}': {reason}"
            ) from None
        info = {"fingerprint": fingerprint, "source": model_id, "revision": revision,
                "created": time.time(), "version": CONVERTER_VERSION}  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(info))
        _swap_in(tmp, target, fingerprint)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _swap_in(tmp: Path, target: Path, fingerprint: str) -> None:
    """Move the finished conversion to ``target``, replacing a stale one; a concurrent process
    that finished the same conversion first wins."""
    if target.exists():
        if _is_current(target, fingerprint):
            return
        old = target.with_name(f".tmp-old-{target.name}-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_current(target, fingerprint):
            raise


def load(
    model_id: str,
    config: dict[str, Any],
    *,
    device: Any,
    dtype: Any,
    revision: str | None = None,
    cache_root: Path | None = None,
) -> tuple[Any, Any]:
    """Native ``Florence2ForConditionalGeneration`` + ``Florence2Processor`` for an original
    checkpoint, every one of its tensors loaded (checked again on load: a cache folder edited
    or damaged since conversion is reported, not half-used)."""
    transformers = require("transformers", "hf", "Florence-2")
    folder = convert(model_id, config, revision=revision, cache_root=cache_root)
    try:
        model, info = transformers.Florence2ForConditionalGeneration.from_pretrained(
            str(folder), dtype=dtype, output_loading_info=True
        )
        processor = transformers.Florence2Processor.from_pretrained(str(folder))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(
            f"cannot load the converted Florence-2 in {folder}: {reason} (delete that folder to "
            "convert again)"
        ) from None
    missing = sorted(set(info.get("missing_keys") or ()) - TIED_OR_DERIVED)
    wrong = sorted(
        set(info.get("unexpected_keys") or ()) | {str(m) for m in info.get("mismatched_keys") or ()}
    )
    if missing or wrong:
        raise ModelLoadError(
            f"the converted Florence-2 in {folder} does not fit the model "
            f"({(missing or wrong)[0]}); delete that folder to convert again"
        )
    model.to(device)
    model.eval()
    return model, processor
