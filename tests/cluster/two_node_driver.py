"""The driver of the two-node test, run as its own process (as ``captionkit caption --ray``
would be): connects to the cluster at argv[1], captions argv[2] into argv[3], prints a JSON
summary. Its own process keeps the pytest process's earlier local Ray state out of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    address, images, out = sys.argv[1:4]
    import ray
    from ray_fixtures import register_slow, two_node_env

    from captionkit import session
    from captionkit.cluster.driver import run_cluster

    register_slow()
    ray.init(address=address, runtime_env=two_node_env(), log_to_driver=False)
    run = session.build_run(
        [images],
        model="slowfake",
        ray=address,
        actors=2,
        batch_size=2,
        output_dir=out,
        store="none",
        options={"delay": 0.25},
        ray_resources={"worker": 0.5},
    )
    first = run_cluster(run, out, shard_rows=4, flush_seconds=1.0)
    again = run_cluster(run, out)
    print(
        "RESULT "
        + json.dumps(
            {
                "captioned": first.captioned,
                "failed": first.failed,
                "duplicates": first.duplicates,
                "again_captioned": again.captioned,
                "again_resumed": again.resumed,
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
