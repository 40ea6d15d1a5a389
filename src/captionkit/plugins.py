"""Named plugin tables: one way to find captioners, detectors, writers and LLM runtimes by name.

Every pluggable kind is a :class:`PluginTable`: built-ins as ``"module:Attr"`` import strings,
third-party packages through an entry-point group, and in-process registrations (tests,
notebooks). Nothing is imported until a name is asked for, so listing names stays cheap and a
broken plugin cannot break the others; every failure is a one-line ``captionkit.errors`` error.

API (engineer D, and any future kind)::

    from captionkit.plugins import PluginTable

    DETECTORS: PluginTable[type[Detector]] = PluginTable(
        group="captionkit.detectors",              # the entry-point group third parties use
        builtin={"ssd": "captionkit.captioners.grounded.detect:SSDDetector"},
        kind="detector",                           # the word used in error messages
        extras={"ssd": "grounded"},                # pip extra of each built-in (default "all")
    )
    DETECTORS.names()          # sorted: built-ins + entry points + registered
    DETECTORS.load("ssd")      # the object behind the name (imported on first use)
    DETECTORS.target("ssd")    # "module:Attr" (None for in-process registrations)
    DETECTORS.register(MyDetector, "mine"); DETECTORS.unregister("mine")
    DETECTORS.describe()       # [PluginInfo(name, target, loaded obj or None, problem)]

Errors: an unknown name -> ``UnknownBackendError("unknown detector 'x'; available: a, b")``;
a built-in whose optional package is missing -> ``MissingDependencyError`` naming its extra;
a third-party plugin whose package is missing -> ``UnknownBackendError`` naming the package.
Entry points never shadow a built-in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from captionkit.errors import MissingDependencyError, UnknownBackendError

T = TypeVar("T")

#: Finds the entry points of a group; injectable so a module can keep its own seam for tests.
EntryPointFinder = Callable[[str], Iterable[EntryPoint]]


def _default_finder(group: str) -> Iterable[EntryPoint]:
    return entry_points(group=group)


@dataclass(frozen=True)
class PluginInfo:
    """One name of a table, as ``captionkit info`` lists it."""

    name: str
    target: str | None
    obj: Any = None
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.problem is None


class PluginTable(Generic[T]):
    """Names -> lazily imported objects, from built-ins, entry points and registrations."""

    def __init__(
        self,
        group: str,
        builtin: Mapping[str, str],
        *,
        kind: str = "plugin",
        extras: Mapping[str, str] | None = None,
        default_extra: str = "all",
        find_entry_points: EntryPointFinder | None = None,
    ) -> None:
        self.group = group
        self.builtin = dict(builtin)
        self.kind = kind
        self.extras = dict(extras or {})
        self.default_extra = default_extra
        self._find = find_entry_points or _default_finder
        self._registered: dict[str, T] = {}

    # -- registration (in-process: tests, notebooks) ----------------------------------------
    def register(self, obj: T, name: str) -> T:
        self._registered[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)

    def registered(self, name: str) -> T | None:
        return self._registered.get(name)

    # -- lookup ------------------------------------------------------------------------------
    def targets(self) -> dict[str, str]:
        """Built-ins first; an entry point never shadows a built-in."""
        found = dict(self.builtin)
        for ep in self._find(self.group):
            found.setdefault(ep.name, ep.value)
        return found

    def target(self, name: str) -> str | None:
        return self.targets().get(name)

    def names(self) -> list[str]:
        return sorted(set(self.targets()) | set(self._registered))

    def extra(self, name: str) -> str:
        return self.extras.get(name, self.default_extra)

    def unknown(self, name: str) -> UnknownBackendError:
        """The one-line error for a name nobody provides (exposed so callers can reuse it)."""
        return UnknownBackendError(
            f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}"
        )

    def load(self, name: str) -> T:
        """The object behind ``name``; one-line errors when unknown or not importable."""
        if name in self._registered:
            return self._registered[name]
        target = self.targets().get(name)
        if target is None:
            raise self.unknown(name)
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] != "captionkit":
                if name not in self.builtin:  # a plugin: its extra is not ours to name
                    raise UnknownBackendError(
                        f"{self.kind} '{name}' needs the package '{exc.name}', "
                        "which is not installed"
                    ) from exc
                raise MissingDependencyError(
                    exc.name, self.extra(name), f"{self.kind} '{name}'"
                ) from exc
            raise
        obj: Any = module
        for part in attr.split(".") if attr else []:
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise UnknownBackendError(
                    f"{self.kind} '{name}': '{target}' names nothing ({part} not found)"
                ) from None
        return obj

    def describe(self) -> list[PluginInfo]:
        """Every name with its object, or the one-line problem that keeps it from loading."""
        infos = []
        targets = self.targets()
        for name in self.names():
            target = targets.get(name)
            try:
                infos.append(PluginInfo(name, target, self.load(name)))
            except Exception as exc:  # a broken plugin is reported, never fatal to the list
                infos.append(PluginInfo(name, target, None, f"{type(exc).__name__}: {exc}"))
        return infos
