"""A local Ray for the cluster tests (module-scoped: starting Ray costs seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ray_fixtures, for Ray's workers too


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "captionkit[ray]"')
    pytest.importorskip("pyarrow", reason='needs the ray extra: pip install "captionkit[ray]"')
    from ray_fixtures import register_fake, runtime_env

    register_fake()  # the driver's process too
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=runtime_env(),
    )
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    from captionkit.captioners import registry

    registry.unregister("fake")
