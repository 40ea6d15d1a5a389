"""Engine vs a plain per-image loop, same tiny captioner, same images, one run.

    python benchmarks/engine_throughput.py [--images DIR] [--batch-size 8] [--model hf:DIR]

Without --model it builds the tests' tiny random ViT-GPT2 (so it runs offline anywhere); the
figure that matters is the ratio, measured here in one process on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def plain_loop(captioner, paths, request) -> float:
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB")
        captioner.caption_batch([captioner.preprocess(image, request)], request)
    return time.perf_counter() - start


def engine(captioner, paths, request, batch_size: int, workers: int) -> float:
    from captionkit.engine.runner import Runner, RunOptions
    from captionkit.inputs.sources import iter_sources

    runner = Runner(
        captioner, request, store=None, options=RunOptions(batch_size=batch_size, workers=workers)
    )
    start = time.perf_counter()
    summary = runner.run(iter_sources([str(p) for p in paths]))
    elapsed = time.perf_counter() - start
    assert summary.captioned == len(paths), summary.failures[:3]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/flickr8k-dev/images"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    args = parser.parse_args()

    from captionkit.captioners.registry import create
    from captionkit.types import CaptionRequest, Decoding

    paths = sorted(Path(args.images).glob("*.jpg"))
    if not paths:
        sys.exit(f"no images in {args.images}")
    spec = args.model
    if spec is None:
        from helpers.tiny_models import build_vit_gpt2

        spec = "hf:" + str(build_vit_gpt2(Path(tempfile.mkdtemp()) / "vit-gpt2"))
    captioner = create(spec, device="cpu")
    request = CaptionRequest(decoding=Decoding(max_new_tokens=args.max_new_tokens))
    plain_loop(captioner, paths[:4], request)  # warm-up
    loop_s = plain_loop(captioner, paths, request)
    engine_s = engine(captioner, paths, request, args.batch_size, args.workers)
    n = len(paths)
    print(f"images: {n}  model: {spec}  batch size: {args.batch_size}  workers: {args.workers}")
    print(f"plain per-image loop: {n / loop_s:7.2f} img/s  ({loop_s:.2f} s)")
    print(f"captionkit engine   : {n / engine_s:7.2f} img/s  ({engine_s:.2f} s)")
    print(f"engine / loop       : {loop_s / engine_s:7.2f}x")


if __name__ == "__main__":
    main()
