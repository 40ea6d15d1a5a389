"""Text-only LLM runtimes used by the grounded writer and the rewrite stage.

``from captionkit.llm import load_llm`` is cheap: the interface types are plain dataclasses,
and torch, transformers or llama.cpp are imported only when a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from captionkit.llm.base import ChatMessage, GenerationConfig, TextLLM

__all__ = ["DEFAULT_LLM", "ChatMessage", "GenerationConfig", "TextLLM", "load_llm", "parse_spec"]

if TYPE_CHECKING:
    from captionkit.llm.loader import DEFAULT_LLM, load_llm, parse_spec


def __getattr__(name: str) -> Any:
    if name in ("load_llm", "parse_spec", "DEFAULT_LLM"):
        from captionkit.llm import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'captionkit.llm' has no attribute {name!r}")
