"""Shared by the cluster tests: a local Ray whose worker processes know the fake backend.

Ray actors run in their own processes, so the fake backend a test registers in its own
process is unknown there; ``worker_process_setup_hook`` registers it in every worker.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def register_fake() -> None:
    """Run in every Ray worker process at start."""
    from captionkit.captioners import registry
    from helpers.fakes import FakeCaptioner

    if "fake" not in registry.backend_names():
        registry.register(FakeCaptioner)


def runtime_env() -> dict:
    path = os.pathsep.join([str(TESTS), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {
        "worker_process_setup_hook": "ray_fixtures.register_fake",
        "env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
    }


def _slow_classes():
    from typing import ClassVar

    from helpers.fakes import FakeCaptioner, FakeOptions

    class SlowOptions(FakeOptions):
        #: Seconds each caption_batch sleeps: keeps batches in flight long enough to kill.
        delay: float = 0.0

    class SlowFake(FakeCaptioner):
        name: ClassVar[str] = "slowfake"
        Options: ClassVar[type] = SlowOptions

        def __init__(self, model: str = "", options=None) -> None:
            super().__init__(model, options)
            self.caption_delay = self.options.delay

    return SlowFake


def register_slow() -> None:
    """Run in every Ray worker process at start (the two-node test)."""
    from captionkit.captioners import registry

    register_fake()
    if "slowfake" not in registry.backend_names():
        registry.register(_slow_classes())


def two_node_env() -> dict:
    env = runtime_env()
    env["worker_process_setup_hook"] = "ray_fixtures.register_slow"
    return env
