"""microsoft/Phi-3.5-vision-instruct (and Phi-3-vision-128k-instruct) without remote code.

The repos ship ``modeling_phi3_v.py`` for ``trust_remote_code``, which no longer imports on
transformers 5. Their weights are a Phi-3-mini language model under transformers' own Phi-3 names
plus a CLIP ViT-L/14-336 tower, two learnt separators and a 2-layer projection under
``model.vision_embed_tokens``. :func:`load` builds that from transformers' ``Phi3ForCausalLM``
and ``CLIPVisionModel`` (:mod:`.model`) with captionkit's image/prompt processing
(:mod:`.processing`), and checks that every tensor in the checkpoint reached the model.

``config.json`` may carry a ``vision_config`` dict (``CLIPVisionConfig`` fields): a captionkit
extension that replaces the ViT-L/14-336 the published repos imply (they name it only in
``img_processor.model_name``); tests use it for a tiny tower.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from captionkit.errors import ModelLoadError

model_type = "phi3_v"

#: The tower the published checkpoints use (their config names it, the weights match it).
CLIP_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
    "attention_dropout": 0.0,
    "dropout": 0.0,
}
KNOWN_TOWERS = {"openai/clip-vit-large-patch14-336": CLIP_L14_336}
#: num_crops when preprocessor_config.json gives none: the model card's advice for one image.
DEFAULT_NUM_CROPS = 16
#: Keys of config.json that describe the remote code, not the model.
_NOT_MODEL_KEYS = (
    "model_type",
    "auto_map",
    "_attn_implementation",
    "attn_implementation",
    "img_processor",
    "embd_layer",
    "vision_config",
    "transformers_version",
    "_name_or_path",
)


def matches(config: dict[str, Any]) -> bool:
    """Phi-3-vision's layout: ``model_type`` phi3_v with an ``img_processor`` section."""
    return config.get("model_type") == "phi3_v" and isinstance(config.get("img_processor"), dict)


def _fail(model_id: str, reason: str) -> ModelLoadError:
    return ModelLoadError(f"cannot load the Phi-3-vision checkpoint '{model_id}': {reason}")


#: transformers warnings about a config style, or the weight report that a ModelLoadError
#: replaces: not worth a user's eye.
_NOISE = ("original_max_position_embeddings", "LOAD REPORT")


@contextmanager
def _transformers_warnings() -> Iterator[None]:
    """transformers' warnings held while loading and passed on after, minus :data:`_NOISE`;
    dropped when loading fails (the one-line error says what matters)."""
    from captionkit.captioners.hf_loading import replay, transformers_log

    with transformers_log() as held:
        yield
    replay([r for r in held if not any(text in r.getMessage() for text in _NOISE)])


def _first_line(exc: BaseException, limit: int = 160) -> str:
    from captionkit.captioners.hf_errors import first_line

    return first_line(exc, limit)


def vision_spec(model_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """The image side of ``config.json``, checked for what this implementation supports."""
    img = config.get("img_processor") or {}
    embd = config.get("embd_layer") or {}
    if img.get("name", "clip_vision_model") != "clip_vision_model":
        raise _fail(model_id, f"unsupported image tower {img.get('name')!r}")
    override = config.get("vision_config")
    tower = img.get("model_name", "openai/clip-vit-large-patch14-336")
    if isinstance(override, dict):
        vision = {**CLIP_L14_336, **override}
    elif tower in KNOWN_TOWERS:
        vision = dict(KNOWN_TOWERS[tower])
    else:
        raise _fail(model_id, f"unknown image tower {tower!r} and no vision_config")
    if not embd.get("use_hd_transform", True) or not embd.get("with_learnable_separator", True):
        raise _fail(model_id, "only the HD-transform layout with learnt separators is supported")
    if embd.get("hd_transform_order", "sub_glb") not in ("sub_glb", "glb_sub"):
        raise _fail(model_id, f"unknown hd_transform_order {embd.get('hd_transform_order')!r}")
    if embd.get("projection_cls", "mlp") not in ("mlp", "linear"):
        raise _fail(model_id, f"unknown projection_cls {embd.get('projection_cls')!r}")
    if img.get("type_feature", "patch") != "patch":
        raise _fail(model_id, f"unsupported type_feature {img.get('type_feature')!r}")
    side, rest = divmod(int(vision["image_size"]), int(vision["patch_size"]))
    if rest or side % 2:
        raise _fail(model_id, "the tile's patch grid must be whole and even (2x2 merge)")
    dim_out = img.get("image_dim_out", vision["hidden_size"])
    per_tile = img.get("num_img_tokens", (side // 2) ** 2)
    if dim_out != vision["hidden_size"] or per_tile != (side // 2) ** 2:
        raise _fail(
            model_id,
            f"img_processor (image_dim_out {dim_out}, num_img_tokens {per_tile}) does not match "
            f"the tower ({vision['hidden_size']}-d, {(side // 2) ** 2} tokens per tile)",
        )
    return {
        "vision_config": vision,
        "layer_idx": int(img.get("layer_idx", -2)),
        "hd_transform_order": embd.get("hd_transform_order", "sub_glb"),
        "projection_cls": embd.get("projection_cls", "mlp"),
        "tokens_per_side": side // 2,
    }


def text_config(model_id: str, config: dict[str, Any], spec: dict[str, Any]) -> Any:
    """A native ``Phi3Config`` from the raw config (LongRoPE's old name "su" translated)."""
    with _transformers_warnings():
        try:
            return _text_config(config, spec)
        except Exception as exc:  # the strict config dataclass names the bad field
            reason = _first_line(exc)
            raise _fail(model_id, f"config.json is not a Phi-3 config ({reason})") from None


def _text_config(config: dict[str, Any], spec: dict[str, Any]) -> Any:
    from transformers import Phi3Config

    kwargs = {k: v for k, v in config.items() if k not in _NOT_MODEL_KEYS}
    rope = kwargs.get("rope_scaling")
    if isinstance(rope, dict):
        rope = dict(rope)
        kind = rope.pop("type", None) or rope.get("rope_type")
        rope["rope_type"] = "longrope" if kind in ("su", "longrope") else kind
        kwargs["rope_scaling"] = rope
    cfg = Phi3Config(**kwargs)
    cfg.phi3v = spec
    cfg.image_token_id = None  # set by load() from the tokenizer
    return cfg


def _read_json(model_id: str, name: str, revision: str | None) -> dict[str, Any]:
    """A small JSON file of the repo ({} when absent)."""
    from captionkit.captioners.hf_arch import repo_file

    path = repo_file(model_id, name, revision)
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(model_id, f"{name} is unreadable ({exc})") from None
    return data if isinstance(data, dict) else {}


def placeholder_id(tokenizer: Any, vocab_size: int) -> int:
    """The id image placeholders use, one no text can produce: ``<|image|>`` where the
    vocabulary has it, else the last embedding row when the embedding is larger than the
    tokenizer (Phi-3's 32064 rows for 32011 tokens), else ``<unk>``. Never a negative id (the
    remote code's choice), which repetition penalties would index the vocabulary with."""
    unk = tokenizer.unk_token_id
    token_id = tokenizer.convert_tokens_to_ids("<|image|>")
    if token_id is not None and token_id != unk and 0 <= token_id < vocab_size:
        return int(token_id)
    if len(tokenizer) < vocab_size:
        return vocab_size - 1
    if unk is not None:
        return int(unk)
    raise ValueError("the tokenizer has no <|image|>, no spare id and no unknown token")


def load_processor(
    model_id: str,
    config: dict[str, Any],
    *,
    revision: str | None = None,
    num_crops: int | None = None,
    model_config: Any = None,
) -> Any:
    """Tokenizer (with the chat template) + HD image processor from the repo's own files."""
    from transformers import AutoTokenizer

    from .processing import CHAT_TEMPLATE, CLIP_MEAN, CLIP_STD, Phi3VImageProcessor, Phi3VProcessor

    spec = vision_spec(model_id, config)
    model_config = model_config or text_config(model_id, config, spec)
    pre = _read_json(model_id, "preprocessor_config.json", revision)
    try:
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        # Handing over the config keeps AutoTokenizer from reading config.json, whose auto_map
        # would make it ask on the terminal whether to run the repo's code.
        kwargs["config"] = model_config
        with _transformers_warnings():
            tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False, **kwargs)
    except Exception as exc:  # missing/corrupt tokenizer files
        raise _fail(model_id, f"its tokenizer does not load ({_first_line(exc)})") from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    crops = num_crops if num_crops is not None else pre.get("num_crops", DEFAULT_NUM_CROPS)
    try:
        crops = int(crops)
        if crops < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(model_id, f"num_crops must be a whole number >= 1, got {crops!r}") from None
    image_processor = Phi3VImageProcessor(
        num_crops=crops,
        crop_size=int(spec["vision_config"]["image_size"]),
        tokens_per_side=spec["tokens_per_side"],
        image_mean=pre.get("image_mean", CLIP_MEAN),
        image_std=pre.get("image_std", CLIP_STD),
    )
    try:
        token_id = placeholder_id(tokenizer, int(model_config.vocab_size))
    except ValueError as exc:
        raise _fail(model_id, str(exc)) from None
    return Phi3VProcessor(image_processor, tokenizer, token_id)


def load(
    model_id: str,
    config: dict[str, Any],
    *,
    device: str = "cpu",
    dtype: Any = None,
    revision: str | None = None,
    num_crops: int | None = None,
    processor_options: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(model, processor) on ``device`` in ``dtype``; ModelLoadError unless every checkpoint
    tensor fills a model parameter of its shape and no parameter is left unfilled.

    ``num_crops`` (or ``processor_options={"num_crops": N}``, from ``-o num_crops=N``) replaces
    the repo's tile budget; other processor options are refused: tiles, not pixel counts, size
    this model's images.
    """
    from captionkit.errors import ConfigError

    options = {k: v for k, v in (processor_options or {}).items() if v is not None}
    unknown = sorted(set(options) - {"num_crops"})
    if unknown:
        raise ConfigError(
            f"-o {unknown[0]}: Phi-3-vision's image processor takes no '{unknown[0]}' "
            "(it sizes images by -o num_crops=N, tiles of the vision tower's size)"
        )
    if num_crops is None:
        num_crops = options.get("num_crops")
    spec = vision_spec(model_id, config)
    cfg = text_config(model_id, config, spec)  # checks config.json before any download
    processor = load_processor(
        model_id, config, revision=revision, num_crops=num_crops, model_config=cfg
    )
    cfg.image_token_id = processor.image_token_id
    model = _load_weights(model_id, cfg, dtype, revision)
    _complete_generation_config(model, processor.tokenizer)
    model.to(device)
    model.eval()
    return model, processor


def _load_weights(model_id: str, cfg: Any, dtype: Any, revision: str | None) -> Any:
    """The checkpoint into :class:`Phi3VForCausalLM`, transformers' own loader doing the work
    (safetensors shards, dtype, CLIP's weight-name prefix); its report checked here."""
    from .model import Phi3VForCausalLM

    kwargs: dict[str, Any] = {
        "config": cfg,
        "output_loading_info": True,
        "ignore_mismatched_sizes": True,  # reported below, in one line
    }
    if dtype is not None:
        kwargs["dtype"] = dtype
    if revision:
        kwargs["revision"] = revision
    with _transformers_warnings():
        try:
            # output_loading_info=True: a (model, report) pair, whatever the stub says
            loaded: Any = Phi3VForCausalLM.from_pretrained(model_id, **kwargs)
            model, info = loaded
        except OSError as exc:  # no weights in the folder, not cached and no network
            if Path(model_id).expanduser().is_dir():
                raise _fail(model_id, f"{_first_line(exc)} (is the download complete?)") from None
            raise _fail(
                model_id,
                "its weights are not in the Hugging Face cache and could not be downloaded "
                "(connect once, or pass a local folder: --model hf:/path/to/dir)",
            ) from None
        except Exception as exc:  # a truncated or corrupt shard
            raise _fail(model_id, f"{type(exc).__name__}: {_first_line(exc)}") from None
        _check_loading_info(model_id, info)
    return model


#: Checkpoint tensors with no parameter to fill that are harmless: CLIP's position ids (a
#: buffer in old transformers) and a second name some exports give the shared token embedding.
_HARMLESS_EXTRA = (".position_ids", "vision_embed_tokens.wte.weight")


def _check_loading_info(model_id: str, info: dict[str, Any]) -> None:
    """One line naming what went wrong, so no caption is ever made with random weights."""
    missing = sorted(info.get("missing_keys") or [])
    extra = sorted(k for k in info.get("unexpected_keys") or [] if not k.endswith(_HARMLESS_EXTRA))
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        first = mismatched[0]
        if isinstance(first, (tuple, list)) and len(first) == 3:
            first = f"{first[0]}: {tuple(first[1])} in the checkpoint, {tuple(first[2])} expected"
        raise _fail(
            model_id,
            f"{len(mismatched)} tensor(s) have another shape than config.json describes "
            f"(e.g. {first})",
        )
    if missing:
        raise _fail(
            model_id,
            f"{len(missing)} tensor(s) are missing from its weights (e.g. {missing[0]}), so it "
            "would caption with random weights; the download may be incomplete",
        )
    if extra:
        raise _fail(
            model_id,
            f"{len(extra)} tensor(s) in its weights belong to no part of Phi-3-vision "
            f"(e.g. {extra[0]}): another layout under the same model_type",
        )


def _complete_generation_config(model: Any, tokenizer: Any) -> None:
    """Stop at ``<|end|>`` (the end of an assistant turn) even where generation_config.json
    lists only ``<|endoftext|>``, and pad with the tokenizer's pad token."""
    gen = model.generation_config
    eos = gen.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    for token in ("<|end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id and token_id not in eos_ids:
            eos_ids.append(int(token_id))
    if eos_ids:
        gen.eos_token_id = eos_ids
    if gen.pad_token_id is None:
        pad = tokenizer.pad_token_id
        gen.pad_token_id = pad if pad is not None else (eos_ids[0] if eos_ids else None)
