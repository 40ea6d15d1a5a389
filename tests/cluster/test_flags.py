"""Cluster flags and checks that need no running Ray (they run without the extra too)."""

from __future__ import annotations

import sys

import pytest

from captionkit import session
from captionkit.errors import ConfigError, InputError


def test_cluster_flags_without_ray_are_one_line():
    with pytest.raises(ConfigError, match="--actors is for cluster runs: add --ray"):
        session.build_run(["x"], model="fake", actors=2)


def test_a_table_without_ray_says_how(tmp_path):
    run = session.build_run([str(tmp_path / "t.parquet")], model="grounded")
    with pytest.raises(InputError, match="with --ray"):
        session.check_inputs(run)


def test_ray_needs_an_output_folder():
    from captionkit.cluster.driver import output_folder

    run = session.build_run(["x"], model="grounded", ray="auto")
    with pytest.raises(ConfigError, match="--output-dir"):
        output_folder(run)


class _FakeCluster:
    """What ``_pool_size`` reads of Ray: the cluster's resources (a GPU node, simulated)."""

    def __init__(self, gpus: float) -> None:
        self.gpus = gpus

    def cluster_resources(self) -> dict:
        return {"CPU": 16.0, **({"GPU": self.gpus} if self.gpus else {})}


def test_one_actor_per_gpu_by_default_and_fractions_share_a_gpu():
    from captionkit.cluster.driver import _pool_size

    assert _pool_size(_FakeCluster(8), None, None) == (8, 1.0)
    assert _pool_size(_FakeCluster(8), None, 0.5) == (16, 0.5)
    assert _pool_size(_FakeCluster(8), 3, 2) == (3, 2)
    assert _pool_size(_FakeCluster(0), None, None) == (1, 0.0)
    with pytest.raises(ConfigError, match="cluster has 0 GPU"):
        _pool_size(_FakeCluster(0), None, 1)


def test_ray_absent_names_the_extra(monkeypatch):
    from captionkit.cluster.driver import connect
    from captionkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "captionkit\[ray\]"'):
        connect("auto")
