"""``python fake_server.py ARGS``: ``captionkit ARGS`` with the fake backend registered.

``FAKE_DELAY`` (seconds per model call) slows it down, so a test can catch requests in
flight (SIGTERM, client disconnects) against a real uvicorn process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captionkit.captioners import registry
from helpers.fakes import FakeCaptioner


class SlowFake(FakeCaptioner):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.caption_delay = float(os.environ.get("FAKE_DELAY", "0"))


if __name__ == "__main__":
    registry.register(SlowFake, "fake")
    from captionkit.cli.main import run

    run(sys.argv[1:])
