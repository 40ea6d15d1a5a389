"""A real two-node Ray cluster on this machine (127.0.0.1 only), a node's workers killed
mid-run: the job finishes and every image has exactly one result.

    head:   ray start --head --num-cpus 1 --resources '{"head": 1}'
    worker: ray start --address HEAD --num-cpus 2 --resources '{"worker": 1}'

The caption actors need the ``worker`` resource, so they all live on the second node; once
the first shard is written, every actor process there gets SIGKILL. Ray Data restarts the
actors and retries their in-flight batches; the driver drops any id written twice.
The driver is its own process (tests/cluster/two_node_driver.py), as the CLI would be. The
nodes and the driver use 127.0.0.1 addresses and a random auth token of this test's own
(Ray 2.60's servers listen on every interface; the token keeps the cluster closed). Teardown
stops the cluster by killing exactly the processes of this test's Ray session (found by its
own temp folder, and their descendants), never every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers.fakes import write_image

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
N_IMAGES = 48


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(temp: str) -> list:
    """This test's Ray processes: those naming its temp folder, and all their descendants
    (the agents and workers rename themselves ``ray::...`` and name no folder)."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp in part for part in proc.info["cmdline"] or []):
                found.add(proc)
                found.update(proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found)


def _kill_cluster(temp: str) -> None:
    import psutil

    for _ in range(3):
        procs = _ours(temp)
        if not procs:
            return
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=5)


@pytest.fixture
def two_nodes():
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "captionkit[ray]"')
    pytest.importorskip("psutil", reason="ray brings psutil")
    temp = tempfile.mkdtemp(prefix="ckray", dir="/tmp")
    port = _free_port()
    # The driver runs in its own process too, so the cluster can have its own auth token:
    # Ray's servers listen on every interface, the token keeps them closed to anyone else.
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(HERE)]),
    }
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                str(RAY),
                "start",
                "--head",
                "--port",
                str(port),
                "--temp-dir",
                temp,
                "--num-cpus",
                "1",
                "--resources",
                json.dumps({"head": 1}),
                "--include-dashboard",
                "false",
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                str(RAY),
                "start",
                "--address",
                f"127.0.0.1:{port}",
                "--num-cpus",
                "2",
                "--resources",
                json.dumps({"worker": 1}),
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield ray, temp, port, env
    finally:
        _kill_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _second_node_workers(temp: str) -> list[tuple[int, str]]:
    """The worker processes of the node started with the ``worker`` resource: children of
    its raylet named ``ray::...`` (the caption actors among them), not its agents."""
    import psutil

    for proc in _ours(temp):
        try:
            cmdline = proc.cmdline()
            if not any(c.startswith("--static_resource_list=worker,") for c in cmdline):
                continue
            return [
                (child.pid, child.name())
                for child in proc.children()
                if child.name().startswith("ray::") and "Agent" not in child.name()
            ]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return []


def test_killing_a_nodes_workers_mid_run_loses_nothing_and_duplicates_nothing(two_nodes, tmp_path):
    from captionkit.cluster.output import read_rows

    _, temp, port, env = two_nodes
    colours = ["red", "green", "blue", "white", "yellow", "black"]
    for i in range(N_IMAGES):
        write_image(tmp_path / "imgs" / f"{i:03d}.png", colours[i % len(colours)])
    out = tmp_path / "out"
    killed: list[str] = []

    def kill_when_a_shard_is_written() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            shards = list((out / "shards").glob("*.parquet")) if out.exists() else []
            if shards:
                for pid, name in _second_node_workers(temp):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(name)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_a_shard_is_written, daemon=True)
    killer.start()
    driver = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("two_node_driver.py")),
            f"127.0.0.1:{port}",
            str(tmp_path / "imgs"),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    killer.join(timeout=5)
    assert driver.returncode == 0, driver.stderr[-3000:]
    line = next(x for x in driver.stdout.splitlines() if x.startswith("RESULT "))
    summary = json.loads(line.removeprefix("RESULT "))
    # the caption actors themselves died mid-run (not only idle workers)
    assert any("MapWorker" in name for name in killed), killed
    rows = list(read_rows(out))
    ids = [r["id"] for r in rows]
    assert len(ids) == N_IMAGES and len(set(ids)) == N_IMAGES  # every image exactly once
    assert all(r["caption"] and not r["error"] for r in rows)
    assert (summary["captioned"], summary["failed"]) == (N_IMAGES, 0)
    # a rerun finds everything done
    assert (summary["again_captioned"], summary["again_resumed"]) == (0, N_IMAGES)
