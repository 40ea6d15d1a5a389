"""Per-image latency of the grounded pipeline's vision models at batch sizes 1 and 8.

Runs each model (ssd, yolox, scene, ocr) over the shared Flickr8k photos, after one warm-up
batch, and prints milliseconds per image for each batch size and their ratio measured in the
same run. Decoding the JPEGs happens before timing. Usage:

    python benchmarks/grounded_vision.py [--limit 150] [--threads 2] [--only ssd,yolox]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PHOTOS = SHARED / "data" / "flickr8k-dev" / "images"
YOLOX = SHARED / "models" / "yolox_nano.onnx"
KINDS = ("ssd", "yolox", "scene", "ocr")


def build(kind: str, threads: int):
    """(model, batch function) for one kind, loaded before timing starts."""
    from captionkit.captioners.grounded.detectors import load_detector
    from captionkit.captioners.grounded.ocr import load_ocr
    from captionkit.captioners.grounded.scene import load_scene_classifier

    if kind == "ssd":
        model = load_detector("ssd", threads=threads).load()
        return model.detect_batch
    if kind == "yolox":
        model = load_detector("yolox", weights=str(YOLOX), threads=threads).load()
        return model.detect_batch
    if kind == "scene":
        return load_scene_classifier(threads=threads).load().classify_batch
    return load_ocr(threads=threads).load().read_batch


def per_image_ms(run, images: list[np.ndarray], batch_size: int) -> float:
    run(images[:batch_size])  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        run(images[i : i + batch_size])
    return (time.perf_counter() - start) * 1000 / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=150, help="how many photos (max 150)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per model")
    parser.add_argument("--only", default=",".join(KINDS), help="comma-separated kinds")
    args = parser.parse_args()

    paths = sorted(PHOTOS.glob("*.jpg"))[: args.limit]
    if not paths:
        raise SystemExit(f"no photos under {PHOTOS}")
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(np.asarray(im.convert("RGB")))
    cpu = platform.processor() or platform.machine()
    print(f"{len(images)} photos, threads={args.threads}, {cpu}")
    print(f"{'model':<6} {'bs=1 ms/img':>12} {'bs=8 ms/img':>12} {'bs8/bs1':>8}")
    for kind in args.only.split(","):
        run = build(kind.strip(), args.threads)
        one, eight = per_image_ms(run, images, 1), per_image_ms(run, images, 8)
        print(f"{kind:<6} {one:>12.1f} {eight:>12.1f} {eight / one:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
