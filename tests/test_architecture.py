"""The folder tree is the architecture: a module imports only from its own room and from rooms
on floors below it (README's architecture section). Checked on the source, lazy imports inside
functions included, so a shortcut upwards fails here instead of growing into a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "captionkit"

#: Room -> floor. A room is a top-level module or package of ``captionkit``.
FLOORS = {
    # 0: one-line errors, the base of everything
    "errors": 0,
    # 1: plain values, settings, the HTTP client, devices, plugin tables
    "types": 1,
    "config": 1,
    "http": 1,
    "devices": 1,
    "plugins": 1,
    # 2: where images come from, style -> prompt, metrics, hosted vendors' wire formats
    "inputs": 2,
    "styles": 2,
    "eval": 2,
    "providers": 2,
    "tags": 2,  # tag rules: the same for taggers, grounded facts and VLM tag lists
    # 3: prompt templates ({name}, {tags}, {caption}, {column:NAME})
    "prompts": 3,
    # 3: text LLM runtimes
    "llm": 3,
    # 4: backends behind one interface
    "captioners": 4,
    # 5: the engine (stages, drivers, store, sinks) and training
    "engine": 5,
    "train": 5,
    # 6: run assembly
    "session": 6,
    # 7: faces: the Python API, the HTTP server and page, the Ray cluster driver
    "api": 7,
    "serve": 7,
    "cluster": 7,
    "multistage": 7,  # stages files: several runs chained, each resumable
    # 8: the command line, which starts every other face (captionkit serve, --ray)
    "cli": 8,
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "captionkit":
        return None
    return parts[1] if len(parts) > 1 else ""  # "" is the package itself (__version__)


def _imports(path: Path) -> list[tuple[int, str]]:
    module_parts = ["captionkit", *path.relative_to(SRC).with_suffix("").parts]
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        package = module_parts
    else:
        package = module_parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_room_has_a_floor() -> None:
    rooms = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in _modules()}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_only(path: Path) -> None:
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    upward = []
    for line, name in _imports(path):
        room = _room(name)
        if room is None or room in ("", own):
            continue
        if FLOORS[room] >= FLOORS[own]:
            upward.append(f"line {line}: {name} (floor {FLOORS[room]} >= {FLOORS[own]})")
    assert not upward, f"{own} is on floor {FLOORS[own]} but imports: {upward}"
