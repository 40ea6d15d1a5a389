"""Hosted vendors behind one interface: each is one :class:`~captionkit.providers.base.Provider`
subclass in one module, found by name here.

The image captioners (``captioners/api``) and the HTTP text LLMs (``llm/openai_compat``) both
speak to vendors only through these classes. Adding a vendor is one module plus one line in
:data:`BUILTIN`, or, from another package, an entry point in the group ``captionkit.providers``
(``name = "package.module:Class"``). Importing this package is cheap: a vendor's module is
imported when it is first asked for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from captionkit.errors import ConfigError

if TYPE_CHECKING:
    from captionkit.providers.base import Provider

ENTRY_POINT_GROUP = "captionkit.providers"

#: Built-in vendors: name -> "module:Class".
BUILTIN: dict[str, str] = {
    "openai": "captionkit.providers.openai:OpenAIProvider",
    "openai-compatible": "captionkit.providers.openai_compatible:OpenAICompatibleProvider",
    "gemini": "captionkit.providers.gemini:GeminiProvider",
    "anthropic": "captionkit.providers.anthropic:AnthropicProvider",
}


def _table() -> dict[str, str]:
    table = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        table.setdefault(ep.name, ep.value)  # a plug-in never shadows a built-in
    return table


def provider_names() -> list[str]:
    """Every vendor name: the built-ins, then installed plug-ins."""
    return list(_table())


def get_provider(name: str) -> type[Provider]:
    """The :class:`Provider` class registered as ``name``; ConfigError naming the known ones."""
    from captionkit.providers.base import Provider

    table = _table()
    target = table.get(name)
    if target is None:
        raise ConfigError(f"unknown provider '{name}'; known: {', '.join(table)}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"provider '{name}' ({target}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"provider '{name}' ({target}) is not a Provider subclass")
    return cls


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "get_provider", "provider_names"]
