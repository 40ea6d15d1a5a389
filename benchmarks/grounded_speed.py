"""Throughput of the grounded backend: through the engine vs a plain per-image loop.

The engine (``captionkit.api.caption``) decodes and preprocesses in worker threads while
the models run on whole batches; the plain loop decodes, preprocesses and captions one image
at a time in the calling thread. Both use the same, already loaded captioner, so model
loading is not timed. Ratios are measured in the same run.

    python benchmarks/grounded_speed.py [--images 48] [--llm-images 16] [--writer template,smollm2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / ".." / "shared" / "data" / "flickr8k-dev" / "images"
YOLOX = REPO / ".." / "shared" / "models" / "yolox_nano.onnx"


def plain_loop(captioner, paths: list[Path]) -> float:
    from captionkit.inputs.decode import decode_image
    from captionkit.types import CaptionRequest

    request = CaptionRequest()
    start = time.perf_counter()
    for path in paths:
        image = decode_image(path.read_bytes())
        captioner.caption_batch([captioner.preprocess(image, request)], request)
    return time.perf_counter() - start


def engine(captioner, paths: list[Path], batch_size: int | None) -> float:
    from captionkit.api import caption

    start = time.perf_counter()
    results = caption([str(p) for p in paths], captioner, store=False, batch_size=batch_size)
    seconds = time.perf_counter() - start
    assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
    return seconds


def main() -> None:
    from PIL import Image

    from captionkit.api import load_captioner
    from captionkit.types import CaptionRequest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--llm-images", type=int, default=16)
    parser.add_argument("--writer", default="template,smollm2")
    parser.add_argument("--detector", default="ssd")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    all_paths = sorted(IMAGES.glob("*.jpg"))
    print(f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    for writer in args.writer.split(","):
        n = args.images if writer == "template" else args.llm_images
        paths = all_paths[:n]
        weights = str(YOLOX) if args.detector == "yolox" else None
        captioner = load_captioner(
            "grounded", writer=writer, detector=args.detector, detector_weights=weights
        )
        warm = captioner.preprocess(Image.open(paths[0]).convert("RGB"), CaptionRequest())
        captioner.caption_batch([warm], CaptionRequest())  # load every model first
        loop_s = plain_loop(captioner, paths)
        engine_s = engine(captioner, paths, args.batch_size)
        print(
            f"{args.detector}+{writer:10} n={n:3}  plain loop {n / loop_s:5.2f} img/s  "
            f"engine {n / engine_s:5.2f} img/s  (engine/loop x{loop_s / engine_s:.2f})",
            flush=True,
        )
        captioner.close()


if __name__ == "__main__":
    main()
