"""Loading Hugging Face vision-language models: device, dtype, quantisation, clear errors.

Kept apart from ``hf.py`` (which prompts and generates) because every failure a user meets
first happens here: no network, a wrong id, a half-downloaded folder, no CUDA, a checkpoint
whose layout transformers no longer understands. Two rules hold throughout:

* **never caption with random weights**: after loading, the checkpoint's tensors are compared
  with the model's parameters; a model missing weights it needs is a :class:`ModelLoadError`;
* **say the real cause**: an unknown ``model_type``, remote code that no longer runs, a missing
  package, a local path that does not exist are each their own one-line error, never "could not
  be downloaded" (which is kept for what it means: a hub id that is neither cached nor reachable).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionkit.captioners.hf_errors import (  # noqa: F401  (missing_package: tests)
    check_local,
    config_error,
    first_line,
    looks_local,
    missing_package,
    not_downloadable,
    remote_code_error,
    remote_code_failure,
    unknown_type_error,
)
from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError, require

#: The Auto classes a remote-code config may name in ``auto_map``, in the order tried: the
#: image-to-text ones first, then a causal LM (how most remote-code VLMs register).
REMOTE_AUTO_CLASSES = (
    "AutoModelForImageTextToText",
    "AutoModelForVision2Seq",
    "AutoModelForCausalLM",
    "AutoModelForSeq2SeqLM",
)

#: Image-token cap applied to processors that size images by pixel count (Qwen2-VL's
#: ``max_pixels``) when the user sets none: 1024 tokens of (patch x merge)^2 pixels, about one
#: megapixel. The published default (16384 tokens) lets a 12 MP photo become ~15k tokens.
DEFAULT_MAX_IMAGE_TOKENS = 1024

#: Options passed to the image processor where it takes them (``-o max_pixels=...``).
PROCESSOR_OPTIONS = ("min_pixels", "max_pixels", "num_crops")


@dataclass
class LoadedModel:
    model: Any
    processor: Any  # AutoProcessor, or None when the checkpoint has only the pieces below
    image_processor: Any
    tokenizer: Any
    device: Any
    dtype: Any
    #: What was applied to the image processor (user options plus the default token cap).
    processor_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """What ``config.json`` says, read once: the raw dict, the layout module that loads it
    (``hf_arch``) if captionkit loads it itself, and transformers' config otherwise."""

    model_id: str
    path: str  # what from_pretrained receives (``~`` expanded)
    raw: dict[str, Any] | None
    arch: Any = None
    config: Any = None

    @property
    def model_type(self) -> str:
        if self.arch is not None:
            return self.arch.model_type
        return getattr(self.config, "model_type", "") or ""


def resolve_device(device: str) -> str:
    """The shared resolver (:mod:`captionkit.devices`), named here for older imports."""
    from captionkit.devices import resolve_device as shared

    return shared(device, extra="hf", feature="Hugging Face models")


def resolve_dtype(dtype: str, device: str) -> Any:
    """The shared resolver (:mod:`captionkit.devices`), named here for older imports."""
    from captionkit.devices import resolve_dtype as shared

    return shared(dtype, device, extra="hf", feature="Hugging Face models")


# -- transformers' log --------------------------------------------------------------------
#: Warnings that say nothing a captionkit user can act on: transformers falling back to its PIL
#: image processors where torchvision is absent works as well for captioning.
_BENIGN = ("requires torchvision (not installed); falling back",)


@contextmanager
def transformers_log() -> Iterator[list[logging.LogRecord]]:
    """Hold transformers' warnings while a model loads, instead of silencing them all.

    The caller decides afterwards: a weight report that becomes a :class:`ModelLoadError` is
    dropped (the error says it in one line), everything else is replayed to transformers' own
    handlers, so real warnings still reach the user. Progress bars stay off.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = hf_logging.get_logger()  # the "transformers" logger, where its handler lives
    records: list[logging.LogRecord] = []

    class _Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    hold = _Hold(logging.WARNING)
    saved = list(root.handlers)
    for handler in saved:
        root.removeHandler(handler)
    root.addHandler(hold)
    try:
        yield records
    finally:
        root.removeHandler(hold)
        for handler in saved:
            root.addHandler(handler)


def replay(records: list[logging.LogRecord]) -> None:
    """Send held records to transformers' handlers, minus the known-benign ones."""
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()
    for record in records:
        if any(text in record.getMessage() for text in _BENIGN):
            continue
        if record.levelno >= root.getEffectiveLevel():
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


# -- config --------------------------------------------------------------------------------
def inspect_checkpoint(
    model_id: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> Checkpoint:
    """The model's config alone: seconds instead of minutes, and every "wrong id / no
    network / not a model folder / unknown architecture" failure shows up here."""
    transformers = require("transformers", "hf", "Hugging Face models")
    from captionkit.captioners import hf_arch

    local = check_local(model_id)
    path = str(local) if local is not None else model_id
    raw = hf_arch.read_raw_config(path, revision)
    ckpt = Checkpoint(model_id, path, raw, arch=hf_arch.find(raw))
    if ckpt.arch is not None:  # a layout captionkit loads itself: AutoConfig would misread it
        return ckpt
    if raw is None and local is None:
        # The hub had no config.json for us (offline and not cached, or no such repo): asking
        # again through AutoConfig would only repeat the hub's retries (~25 s offline).
        raise not_downloadable(model_id)
    if raw and raw.get("model_type"):
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if raw["model_type"] not in CONFIG_MAPPING:  # also holds types registered at runtime
            error = unknown_type_error(model_id, raw, trust_remote_code)
            if error is not None:
                raise error
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    with transformers_log() as held:
        try:
            ckpt.config = transformers.AutoConfig.from_pretrained(path, **kwargs)
        except Exception as exc:  # OSError/ValueError/hub errors/remote code: find the cause
            raise config_error(ckpt, exc) from None
    replay(held)
    return ckpt


# -- weights -------------------------------------------------------------------------------
def _repo_file(ckpt: Checkpoint, name: str) -> str | None:
    """A file of the checkpoint's folder or hub snapshot, if it is there (never downloads
    more than the hub client would for from_pretrained; None when absent or unreachable)."""
    from captionkit.captioners.hf_arch import repo_file

    found = repo_file(ckpt.path, name)
    return str(found) if found else None


def _declared_processor(ckpt: Checkpoint) -> str:
    """The processor class the repo declares ("" for none): a repo with a processor needs it,
    an image processor and a tokenizer alone do not make a chat VLM work."""
    import json

    for name in ("processor_config.json", "preprocessor_config.json"):
        found = _repo_file(ckpt, name)
        if found is None:
            continue
        try:
            declared = json.loads(Path(found).read_text("utf-8")).get("processor_class")
        except (TypeError, OSError, ValueError, AttributeError):
            declared = None
        if declared:
            return str(declared)
    chat = any(_repo_file(ckpt, n) for n in ("chat_template.json", "chat_template.jinja"))
    return "a processor" if chat else ""


def _checkpoint_tensor_count(ckpt: Checkpoint) -> int | None:
    """How many tensors the checkpoint holds (from the safetensors index or headers)."""
    import json

    try:
        index = _repo_file(ckpt, "model.safetensors.index.json")
        if index:
            return len(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"])
        single = _repo_file(ckpt, "model.safetensors")
        if single:
            from safetensors import safe_open

            with safe_open(single, "pt") as handle:
                return len(list(handle.keys()))
    except Exception:  # unreadable: the caller estimates from the loading report
        return None
    return None


def check_weights(ckpt: Checkpoint, model: Any, info: dict[str, Any]) -> None:
    """Refuse a model that did not receive all of its weights from the checkpoint.

    ``info`` is from_pretrained's loading info: its missing keys already exclude tied weights
    and the buffers a class declares optional, so anything left would be random.
    """
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    cls = type(model).__name__
    where = f"'{ckpt.model_id}'"
    if mismatched:
        key, in_ckpt, in_model = mismatched[0]
        raise ModelLoadError(
            f"{where}: {len(mismatched)} weights in the checkpoint have other shapes than in the "
            f"model class {cls} (e.g. '{key}': {tuple(in_ckpt)} vs {tuple(in_model)}); the config "
            "does not describe these weights"
        )
    if not missing:
        return
    if unexpected:
        total = _checkpoint_tensor_count(ckpt) or len(unexpected)
        raise ModelLoadError(
            f"{where}: {len(unexpected)} of {total} weights in the checkpoint do not match the "
            f"model class {cls} (e.g. '{unexpected[0]}'; {len(missing)} of its weights would be "
            "random); it may need -o trust_remote_code=true or a newer captionkit"
        )
    raise ModelLoadError(
        f"{where}: {len(missing)} weights of the model class {cls} are not in the checkpoint "
        f"(e.g. '{missing[0]}'), so it would caption with random weights; the download may be "
        "incomplete"
    )


def _auto_class(transformers: Any, ckpt: Checkpoint, trust_remote_code: bool) -> Any:
    """The Auto class to load with: the one the repo's ``auto_map`` names when its code is
    trusted (the native class would ignore the code the user asked for), else by model_type."""
    auto_map = (ckpt.raw or {}).get("auto_map") or {}
    if trust_remote_code and auto_map:
        for name in REMOTE_AUTO_CLASSES:
            if name in auto_map and hasattr(transformers, name):
                return getattr(transformers, name)
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if ckpt.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def check_placement(device: str, quantize: str | None, low_vram: bool) -> None:
    """Refuse, before any weights load, placements this machine cannot do: bitsandbytes'
    4/8-bit kernels and accelerate's GPU/CPU split both need a CUDA GPU."""
    if quantize and quantize not in ("4bit", "8bit"):
        raise ConfigError("--quantize must be 4bit or 8bit")
    cuda = device.startswith("cuda")
    if quantize and not cuda:
        raise ConfigError(
            f"--quantize {quantize} needs a CUDA GPU (bitsandbytes), but the model runs on "
            f"{device}; drop --quantize (or use --dtype bfloat16 to halve memory)"
        )
    if low_vram and not cuda:
        raise ConfigError(
            f"--low-vram splits a model between a CUDA GPU and the CPU, but the model runs on "
            f"{device}; drop --low-vram"
        )
    if low_vram:
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise MissingDependencyError("accelerate", "hf", "--low-vram") from None


def placement_kwargs(low_vram: bool) -> dict[str, Any]:
    """from_pretrained arguments for --low-vram: accelerate fills the GPU layer by layer and
    keeps the rest in CPU memory, moving each layer in when it runs (slower, but it fits)."""
    if not low_vram:
        return {}
    return {"device_map": "auto"}


def _quantization(transformers: Any, quantize: str, torch_dtype: Any) -> dict[str, Any]:
    if quantize not in ("4bit", "8bit"):
        raise ConfigError("--quantize must be 4bit or 8bit")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MissingDependencyError("bitsandbytes", "hf", "--quantize") from None
    return {
        "quantization_config": transformers.BitsAndBytesConfig(
            load_in_4bit=quantize == "4bit",
            load_in_8bit=quantize == "8bit",
            bnb_4bit_compute_dtype=torch_dtype,
        ),
        "device_map": "auto",
    }


def _model_error(ckpt: Checkpoint, exc: Exception, trust_remote_code: bool) -> Exception:
    if isinstance(exc, ImportError):
        missing = missing_package(ckpt.model_id, exc)
        if missing is not None:
            return missing
    if remote_code_failure(exc):
        return remote_code_error(ckpt.model_id, exc)
    if isinstance(exc, ValueError) and "Unrecognized configuration" in str(exc):
        if (ckpt.raw or {}).get("auto_map") and not trust_remote_code:
            return ModelLoadError(
                f"'{ckpt.model_id}' needs its own code: rerun with -o trust_remote_code=true "
                "if you trust its authors"
            )
        return ModelLoadError(
            f"'{ckpt.model_id}' (model_type '{ckpt.model_type}') has no image-to-text or "
            "causal-LM class in transformers, so captionkit cannot caption with it"
        )
    if isinstance(exc, OSError) and Path(ckpt.path).is_dir():
        return ModelLoadError(
            f"cannot load the model in {ckpt.path}: {first_line(exc)} (is it a complete "
            "save_pretrained folder?)"
        )
    if isinstance(exc, OSError):
        return not_downloadable(ckpt.model_id)
    return ModelLoadError(f"cannot load '{ckpt.model_id}': {type(exc).__name__}: {first_line(exc)}")


def load_model(
    model_id: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    processor_options: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
    low_vram: bool = False,
) -> LoadedModel:
    """Load model + processor pieces for ``model_id`` (a hub id or a local folder).

    The processor comes first: its failures (a missing torchvision, a bad ``-o`` option) take
    seconds to find, the weights of a 7B model minutes.
    """
    require("torch", "hf", "Hugging Face models")
    ckpt = checkpoint or inspect_checkpoint(
        model_id, trust_remote_code=trust_remote_code, revision=revision
    )
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    options = {k: v for k, v in (processor_options or {}).items() if v is not None}
    if ckpt.arch is not None:
        unsupported = [
            flag
            for flag, value in (
                ("--quantize", quantize),
                ("--low-vram", low_vram),
                ("-o attn_implementation", attn_implementation),
            )
            if value
        ]
        if unsupported:  # said, never silently ignored
            raise ConfigError(
                f"'{model_id}' is loaded by captionkit's own code for its layout, which does not "
                f"support {' or '.join(unsupported)}; leave it out"
            )
        return _load_arch(ckpt, dev, torch_dtype, revision, options)
    check_placement(dev, quantize, low_vram)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        common["revision"] = revision
    processor, image_processor, tokenizer, applied = load_processor(ckpt, common, options)
    model = load_weights(
        ckpt,
        dev,
        torch_dtype,
        quantize=quantize,
        trust_remote_code=trust_remote_code,
        revision=revision,
        attn_implementation=attn_implementation,
        low_vram=low_vram,
    )
    return LoadedModel(model, processor, image_processor, tokenizer, dev, torch_dtype, applied)


def load_weights(
    ckpt: Checkpoint,
    dev: str,
    torch_dtype: Any,
    *,
    quantize: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    low_vram: bool = False,
) -> Any:
    """The model with every weight it needs from the checkpoint (or a ModelLoadError).

    Attention: transformers picks SDPA by default where the class supports it (ViT, GPT-2,
    Idefics3, LLaVA...; not BLIP or GIT); ``-o attn_implementation`` overrides."""
    transformers = require("transformers", "hf", "Hugging Face models")
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantize:
        kwargs.update(_quantization(transformers, quantize, torch_dtype))
    elif low_vram:
        kwargs.update(placement_kwargs(low_vram))
    auto = _auto_class(transformers, ckpt, trust_remote_code)
    with transformers_log() as held:
        try:
            model, info = auto.from_pretrained(
                ckpt.path,
                config=ckpt.config,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported by check_weights, in one line
                **kwargs,
            )
        except Exception as exc:
            raise _model_error(ckpt, exc, trust_remote_code) from None
        check_weights(ckpt, model, info)
    # check_weights judged the load report: what is left (checkpoint tensors the class does not
    # use, such as old GPT-2 mask buffers) cannot make a caption wrong.
    replay([r for r in held if "LOAD REPORT" not in r.getMessage()])
    if not quantize and not low_vram:  # device_map placed them (accelerate's hooks move them)
        model.to(dev)
    model.eval()
    return model


def _load_arch(
    ckpt: Checkpoint, dev: str, torch_dtype: Any, revision: str | None, options: dict[str, Any]
) -> LoadedModel:
    """A layout captionkit loads itself (``hf_arch``): the module returns model + processor."""
    import inspect

    load = ckpt.arch.load
    extra: dict[str, Any] = {}
    if options:
        if "processor_options" not in inspect.signature(load).parameters:
            raise ConfigError(
                f"'{ckpt.model_id}' takes no processor options ({', '.join(sorted(options))})"
            )
        extra["processor_options"] = options
    model, processor = load(
        ckpt.path, ckpt.raw, device=dev, dtype=torch_dtype, revision=revision, **extra
    )
    return LoadedModel(
        model,
        processor,
        processor.image_processor,
        processor.tokenizer,
        dev,
        torch_dtype,
        dict(options),
    )


# -- processor -----------------------------------------------------------------------------
def _takes(image_processor: Any, name: str) -> bool:
    """Does this image processor understand the option ``name``?"""
    import inspect

    declared = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", {})
    if name in declared or name in getattr(image_processor, "__dict__", {}):
        return True
    try:
        params = inspect.signature(type(image_processor).__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _pixel_cap(image_processor: Any) -> tuple[int | None, int]:
    """(the processor's current max pixels, the default cap) for pixel-count processors."""
    size = getattr(image_processor, "size", None)
    current = None
    if size is not None and (isinstance(size, dict) or hasattr(size, "get")):
        current = size.get("longest_edge") or size.get("max_pixels")
    current = current or getattr(image_processor, "max_pixels", None)
    unit = int(getattr(image_processor, "patch_size", 14) or 14) * int(
        getattr(image_processor, "merge_size", 1) or 1
    )
    return current, DEFAULT_MAX_IMAGE_TOKENS * unit * unit


def processor_kwargs(model_id: str, image_processor: Any, options: dict[str, Any]) -> dict:
    """The options to load the image processor with: the user's (each must be one the
    processor takes; a typo is an error) plus the default image-token cap."""
    for name in options:
        if not _takes(image_processor, name):
            raise ConfigError(
                f"-o {name}: the image processor of '{model_id}' "
                f"({type(image_processor).__name__}) takes no '{name}'"
            )
    kwargs = dict(options)
    if "max_pixels" not in kwargs and _takes(image_processor, "max_pixels"):
        current, cap = _pixel_cap(image_processor)
        if current is None or current > cap:
            kwargs["max_pixels"] = cap
            if "min_pixels" in kwargs and kwargs["min_pixels"] > cap:
                kwargs["max_pixels"] = kwargs["min_pixels"]
    return kwargs


def load_processor(
    ckpt: Checkpoint, common: dict[str, Any], options: dict[str, Any]
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(processor or None, image processor, tokenizer, options applied).

    The image processor is loaded on its own first: its options are checked and applied there
    (a processor cannot be told which sub-part an option is for), then it replaces the one the
    full processor loaded. A missing package (torchvision for Qwen2-VL's video processor) is a
    run-wide error naming it, not a processor quietly set to None.
    """
    import transformers

    path = ckpt.path
    with transformers_log() as held:
        image_processor = applied = None
        no_image_processor = "no preprocessor_config.json"
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(path, **common)
        except ImportError as exc:
            raise missing_package(ckpt.model_id, exc) or _model_error(
                ckpt, exc, bool(common.get("trust_remote_code"))
            ) from None
        except Exception as exc:  # remote code and hub errors raise anything
            # No image processor files (the processor may still carry one), or unreadable
            # ones: the reason is kept for the error below if nothing else supplies one.
            image_processor, no_image_processor = None, first_line(exc, 300)
        if image_processor is not None:
            applied = processor_kwargs(ckpt.model_id, image_processor, options)
            if applied:
                image_processor = transformers.AutoImageProcessor.from_pretrained(
                    path, **common, **applied
                )
        elif options:
            raise ConfigError(
                f"'{ckpt.model_id}' has no image processor to take {', '.join(sorted(options))}"
            )
        processor = tokenizer = None
        failure: Exception | None = None
        try:
            processor = transformers.AutoProcessor.from_pretrained(path, **common)
        except ImportError as exc:
            missing = missing_package(ckpt.model_id, exc)
            if missing is not None:
                raise missing from None
            processor, failure = None, exc
        except Exception as exc:  # encoder-decoder checkpoints often ship only the parts below
            processor, failure = None, exc
        if processor is not None and hasattr(processor, "image_processor"):
            if image_processor is not None:
                processor.image_processor = image_processor
            image_processor = processor.image_processor
            tokenizer = getattr(processor, "tokenizer", None)
        else:
            if processor is not None:  # AutoProcessor fell back to a bare tokenizer
                failure = TypeError(
                    f"transformers {transformers.__version__} has no processor class for it "
                    f"(got a {type(processor).__name__})"
                )
            processor = None
            try:
                if image_processor is None:
                    raise OSError(no_image_processor)
                tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
            except Exception as exc:  # the tokenizers library raises bare Exceptions
                raise ModelLoadError(
                    f"'{ckpt.model_id}' has no image processor/tokenizer files next to its "
                    f"weights ({first_line(exc, 300)}); save them with save_pretrained too"
                ) from None
            declared = _declared_processor(ckpt) if failure is not None else ""
            if declared and failure is not None:
                # A chat VLM cannot caption without its processor (it places the image tokens):
                # say why it failed once, rather than fail every image.
                raise ModelLoadError(
                    f"'{ckpt.model_id}': its processor ({declared}) cannot be loaded: "
                    f"{first_line(failure)}"
                )
    replay(held)
    return processor, image_processor, tokenizer, applied or {}
