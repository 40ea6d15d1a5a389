"""The Ray cluster path with 1 and 2 actors vs the single-process engine: same images, one run.

    python benchmarks/ray_throughput.py [--images DIR] [--limit 96] [--model hf:DIR]

Without --model it builds the tests' tiny random ViT-GPT2 (offline, anywhere). It starts a
local Ray (``num_cpus`` = this machine's cores), then times, on the same images:

* the single-process engine (``captionkit caption`` without ``--ray``; model load excluded);
* ``--ray`` with 1 and 2 actors: wall time from submit to the last shard (it includes Ray
  starting the actors and each loading its model), and the steady rate, from the same
  configuration timed on one image (the fixed cost) and on all: ``(n - 1) / (wall_n - wall_1)``;

and samples the resident memory of every caption actor process while it runs, with the
input count doubled for the 1-actor case, to show memory per actor is flat in the number of
inputs (rows stream through; nothing per image is kept on the actor). Ratios are printed
beside the absolute figures, all measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# Ray gives a 1-CPU actor one intra-op thread (OMP_NUM_THREADS=1); the single-process engine
# gets the same, or the comparison measures thread oversubscription on a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class ActorMemory:
    """Peak RSS per caption actor process (``ray::MapWorker(...CaptionActor)``), sampled."""

    def __init__(self) -> None:
        import psutil

        self.peak: dict[int, int] = {}
        self._before = {p.pid for p in psutil.process_iter()}  # earlier runs' actors, exiting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "name"]):
                name = proc.info["name"] or ""
                if "CaptionActor" not in name or proc.info["pid"] in self._before:
                    continue
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[proc.info["pid"]] = max(self.peak.get(proc.info["pid"], 0), rss)
            time.sleep(0.2)

    def summary(self) -> str:
        if not self.peak:
            return "n/a"
        mib = sorted(v / 2**20 for v in self.peak.values())
        return ", ".join(f"{m:.0f}" for m in mib) + " MiB"


def single_process(run_kw: dict, inputs: list[str]) -> tuple[float, int]:
    from captionkit import session

    run = session.build_run(inputs, **run_kw)
    captioner = session.load(run)
    try:
        start = time.perf_counter()
        outcome = session.execute(run, session.sources(run), sinks=[], captioner=captioner)
        elapsed = time.perf_counter() - start
    finally:
        captioner.close()
    return elapsed, outcome.summary.captioned


def on_ray(run_kw: dict, inputs: list[str], actors: int) -> tuple[float, int, str]:
    from captionkit import session
    from captionkit.cluster.driver import run_cluster

    out = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    run = session.build_run(inputs, ray="auto", actors=actors, output_dir=str(out), **run_kw)
    start = time.perf_counter()
    with ActorMemory() as memory:
        outcome = run_cluster(run, out)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return elapsed, outcome.captioned, memory.summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/flickr8k-dev/images"))
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    images = Path(args.images)
    paths = sorted(images.glob("*.jpg"))
    if len(paths) < args.limit:  # no ../shared: make images (same for every contender)
        from helpers.fakes import write_image

        images = Path(tempfile.mkdtemp(prefix="ray-bench-imgs-"))
        colours = ["red", "green", "blue", "white", "yellow", "black"]
        paths = [
            write_image(images / f"{i:05d}.jpg", colours[i % 6], size=(320, 240))
            for i in range(args.limit * 2)
        ]
    half = [str(p) for p in paths[: args.limit]]
    double = [str(p) for p in paths[: args.limit * 2]]
    spec = args.model
    if spec is None:
        from helpers.tiny_models import build_vit_gpt2

        spec = "hf:" + str(build_vit_gpt2(Path(tempfile.mkdtemp()) / "vit-gpt2"))
    run_kw = {
        "model": spec,
        "store": "none",
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "sidecar": False,
        "backend_flags": {"device": "cpu"},
    }
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    n = len(half)
    single_s, done = single_process(run_kw, half)
    assert done == n, done
    results = {}
    for actors in (1, 2):
        fixed = on_ray(run_kw, half[:1], actors)[0]
        wall, done, mem = on_ray(run_kw, half, actors)
        assert done == n, done
        results[actors] = (wall, (n - 1) / max(wall - fixed, 1e-9), fixed, mem)
    double_run = on_ray(run_kw, double, 1)
    ray.shutdown()

    cores = os.cpu_count()
    threads = os.environ["OMP_NUM_THREADS"]
    print(
        f"images: {n}  model: {spec}  batch size: {args.batch_size}  cores: {cores}  "
        f"OMP threads: {threads}"
    )
    print(f"single-process engine : {n / single_s:6.2f} img/s  ({single_s:.1f} s, model loaded)")
    for actors, (wall, steady, fixed, mem) in results.items():
        print(
            f"ray, {actors} actor(s)       : {n / wall:6.2f} img/s wall ({wall:.1f} s, of which "
            f"{fixed:.1f} s fixed: actor start + model load), steady {steady:6.2f} img/s = "
            f"{steady / (n / single_s):.2f}x single-process; actor RSS peak: {mem}"
        )
    print(f"2 actors / 1 actor, steady: {results[2][1] / results[1][1]:.2f}x")
    wall, m, mem = double_run
    print(
        f"ray, 1 actor, {m} images: {m / wall:6.2f} img/s wall; actor RSS peak: {mem} "
        f"(vs {results[1][3]} with {n}: memory per actor vs input count)"
    )


if __name__ == "__main__":
    main()
