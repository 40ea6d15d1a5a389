"""Backends by name, resolved from a model spec such as ``hf:Salesforce/blip-image-captioning``.

Built-in backends are listed here as import strings and third-party packages add theirs
through the ``captionkit.captioners`` entry-point group, exactly like the built-ins: nothing is
imported until a backend is asked for, so listing backends stays cheap and a broken plugin
cannot break the others.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from captionkit.captioners.base import Captioner
from captionkit.errors import ConfigError, UnknownBackendError
from captionkit.plugins import PluginTable

ENTRY_POINT_GROUP = "captionkit.captioners"

#: name -> "module:Class". A new built-in backend is one module plus one line here.
BUILTIN: dict[str, str] = {
    "hf": "captionkit.captioners.hf:HFCaptioner",
    "grounded": "captionkit.captioners.grounded.pipeline:GroundedCaptioner",
    "openai": "captionkit.captioners.api.openai:OpenAICaptioner",
    "openai-compatible": "captionkit.captioners.api.openai:OpenAICompatibleCaptioner",
    "gemini": "captionkit.captioners.api.gemini:GeminiCaptioner",
    "anthropic": "captionkit.captioners.api.anthropic:AnthropicCaptioner",
    "tagger": "captionkit.captioners.tagger:TaggerCaptioner",
}


def _find_entry_points(group: str) -> Any:
    return entry_points(group=group)  # looked up at call time: tests patch ``entry_points``


#: The generic table (captionkit.plugins) behind the functions below; detectors, writers and
#: LLM runtimes use the same class with their own group.
BACKENDS: PluginTable[type[Captioner]] = PluginTable(
    ENTRY_POINT_GROUP,
    BUILTIN,
    kind="backend",
    extras={"hf": "hf", "grounded": "grounded", "tagger": "tagger"},
    default_extra="api",
    find_entry_points=_find_entry_points,
)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    target: str
    extra: str
    requires: tuple[str, ...]
    description: str
    available: bool
    problem: str | None = None


def register(cls: type[Captioner], name: str | None = None) -> type[Captioner]:
    """Register a backend class in-process (tests, notebooks); usable as a decorator."""
    return BACKENDS.register(cls, name or cls.name)


def unregister(name: str) -> None:
    BACKENDS.unregister(name)


def _targets() -> dict[str, str]:
    return BACKENDS.targets()


def backend_names() -> list[str]:
    return BACKENDS.names()


def get_backend(name: str) -> type[Captioner]:
    """The class behind ``name``; raises a one-line error when unknown or not importable."""
    return BACKENDS.load(name)


def _extra_guess(name: str) -> str:
    return BACKENDS.extra(name)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``backend:model`` (the model part may itself contain ``:`` or ``/``).

    A bare word that is a backend name (``grounded``) has an empty model; a bare path or hub
    id (``/models/blip``, ``org/name``) is taken as a Hugging Face model for convenience.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("--model is empty; try --model grounded or --model hf:ORG/NAME")
    head, sep, tail = spec.partition(":")
    names = set(backend_names())
    if sep and head in names:
        return head, tail
    if sep and re.fullmatch(r"[a-z][a-z0-9_-]+", head) and not tail.startswith("//"):
        raise UnknownBackendError(
            f"unknown backend '{head}' in '{spec}'; available: {', '.join(sorted(names))}"
        )
    if not sep and spec in names:
        return spec, ""
    if "/" in spec or spec.startswith("."):
        return "hf", spec
    raise UnknownBackendError(
        f"cannot tell which backend '{spec}' means; write BACKEND:MODEL, e.g. hf:{spec} "
        f"(backends: {', '.join(sorted(names))})"
    )


def create(spec: str, **options: Any) -> Captioner:
    """Build the captioner a spec names, validating ``options`` against its Options model."""
    from pydantic import ValidationError

    name, model = parse_spec(spec)
    cls = get_backend(name)
    try:
        opts = cls.Options(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"backend '{name}': {where}: {first['msg']}") from None
    return cls(model, opts)


def describe_backends() -> list[BackendInfo]:
    """Every known backend with what it needs and whether that is installed here."""
    infos = []
    for name in backend_names():
        own = BACKENDS.registered(name)
        target = _targets().get(name, own.__module__ if own is not None else "")
        try:
            cls = get_backend(name)
        except Exception as exc:  # a plugin failing to import is reported, not fatal
            infos.append(BackendInfo(name, target, _extra_guess(name), (), "", False, str(exc)))
            continue
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        problem = f"missing: {', '.join(missing)}" if missing else None
        infos.append(
            BackendInfo(
                name, target, cls.extra, cls.requires, cls.description, not missing, problem
            )
        )
    return infos
