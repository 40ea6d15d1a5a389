"""Loading Hugging Face vision-language models: device, dtype, quantisation, clear errors.

Kept apart from ``hf.py`` (which prompts and generates) because every failure a user meets
first happens here: no network, a wrong id, a half-downloaded folder, no CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError, require


@dataclass
class LoadedModel:
    model: Any
    processor: Any  # AutoProcessor, or None when the checkpoint has only the pieces below
    image_processor: Any
    tokenizer: Any
    device: Any
    dtype: Any


def resolve_device(device: str) -> str:
    torch = require("torch", "hf", "Hugging Face models")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    torch = require("torch", "hf", "Hugging Face models")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            dtype
        ]
    except KeyError:
        raise ConfigError(
            f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16"
        ) from None


def _load_error(model_id: str, exc: Exception) -> ModelLoadError:
    local = Path(model_id).expanduser()
    if local.exists():
        reason = str(exc).splitlines()[0][:200]
        return ModelLoadError(
            f"cannot load the model in {local}: {reason} (is it a complete save_pretrained folder?)"
        )
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return ModelLoadError(
        f"cannot load '{model_id}': it is not a local folder and not in the Hugging Face cache "
        f"({hf_home}), and it could not be downloaded. Connect to the network once, or copy the "
        f"model folder here and pass --model hf:/path/to/dir (or set HF_HOME)"
    )


def load_config(
    model_id: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> Any:
    """The model's config alone: seconds instead of minutes, and every "wrong id / no
    network / not a model folder" failure shows up here."""
    transformers = require("transformers", "hf", "Hugging Face models")
    transformers.logging.set_verbosity_error()
    from captionkit.captioners import hf_arch

    raw = hf_arch.read_raw_config(model_id, revision)
    arch = hf_arch.find(raw)
    if arch is not None:  # a layout captionkit loads itself: AutoConfig would misread it
        from types import SimpleNamespace

        return SimpleNamespace(model_type=arch.model_type, captionkit_arch=arch, raw=raw)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    try:
        return transformers.AutoConfig.from_pretrained(
            str(Path(model_id).expanduser()) if model_id.startswith("~") else model_id, **kwargs
        )
    except Exception as exc:  # OSError/ValueError/HF hub errors: all mean "not loadable"
        raise _load_error(model_id, exc) from None


def load_model(
    model_id: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load model + processor pieces for ``model_id`` (a hub id or a local folder)."""
    require("torch", "hf", "Hugging Face models")
    transformers = require("transformers", "hf", "Hugging Face models")
    # Progress bars and advice from transformers would drown captionkit's own output.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if model_id.startswith("~"):
        model_id = str(Path(model_id).expanduser())
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        common["revision"] = revision
    kwargs: dict[str, Any] = {"dtype": torch_dtype, **common}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantize:
        if quantize not in ("4bit", "8bit"):
            raise ConfigError("--quantize must be 4bit or 8bit")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependencyError("bitsandbytes", "hf", "--quantize") from None
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=quantize == "4bit",
            load_in_8bit=quantize == "8bit",
            bnb_4bit_compute_dtype=torch_dtype,
        )
        kwargs["device_map"] = "auto"

    from captionkit.captioners import hf_arch

    arch = hf_arch.find(hf_arch.read_raw_config(model_id, revision))
    if arch is not None:
        model, processor = arch.load(
            model_id, hf_arch.read_raw_config(model_id, revision), device=dev, dtype=torch_dtype,
            revision=revision,
        )
        return LoadedModel(
            model, processor, processor.image_processor, processor.tokenizer, dev, torch_dtype
        )

    config = load_config(model_id, trust_remote_code=trust_remote_code, revision=revision)

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    auto = (
        transformers.AutoModelForImageTextToText
        if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        else transformers.AutoModelForCausalLM  # remote-code VLMs such as Phi-3.5-vision
    )
    try:
        model = auto.from_pretrained(model_id, config=config, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration" in str(exc) and not trust_remote_code:
            raise ModelLoadError(
                f"'{model_id}' needs its own code: rerun with -o trust_remote_code=true "
                "if you trust its authors"
            ) from None
        raise _load_error(model_id, exc) from None
    except Exception as exc:
        raise _load_error(model_id, exc) from None
    if not quantize:
        model.to(dev)
    model.eval()

    processor = image_processor = tokenizer = None
    try:
        processor = transformers.AutoProcessor.from_pretrained(model_id, **common)
    except Exception:  # encoder-decoder checkpoints often ship only the two parts below
        processor = None
    if processor is not None and hasattr(processor, "image_processor"):
        image_processor = processor.image_processor
        tokenizer = getattr(processor, "tokenizer", None)
    else:
        processor = None
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(model_id, **common)
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, **common)
        except Exception as exc:
            raise ModelLoadError(
                f"'{model_id}' has no image processor/tokenizer files next to its weights "
                f"({str(exc).splitlines()[0][:120]}); save them with save_pretrained too"
            ) from None
    return LoadedModel(model, processor, image_processor, tokenizer, dev, torch_dtype)
