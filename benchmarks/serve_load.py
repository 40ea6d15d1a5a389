"""Load on ``captionkit serve``: N requests of one image each from C concurrent clients.

For each model (the grounded default, a tiny random hf ViT-GPT2 built on the spot) a real
server process is started on 127.0.0.1 twice: with micro-batching (the backend's batch size,
``--max-wait-ms`` 10) and with ``--max-batch 1``. Each run reports errors (non-200 answers
and per-image errors), p50/p99 request latency, img/s, the mean batch size the server saw
(``/v1/metrics``), and the ratio of img/s with micro-batching vs batch size 1 — measured in
the same run. The results store is off (``--store none``), so every request is computed.

    python benchmarks/serve_load.py [--requests 1000] [--clients 50] [--models grounded,tiny-hf]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / ".." / "shared" / "data" / "flickr8k-dev" / "images"


def photos(n: int = 32) -> list[tuple[str, bytes]]:
    """Real Flickr8k photos when ../shared is there, else generated pictures."""
    found = sorted(IMAGES.glob("*.jpg"))[:n] if IMAGES.is_dir() else []
    if found:
        return [(p.name, p.read_bytes()) for p in found]
    import io
    import random

    from PIL import Image

    rng = random.Random(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        img = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        img.save(buf, format="JPEG")
        out.append((f"gen{i}.jpg", buf.getvalue()))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: str | None, extra: list[str], threads: int | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "captionkit.cli.main", "serve", "--port", str(port)]
    args += ["--store", "none", "--max-queue", "4096", *extra]
    if model:
        args += ["--model", model]
    env = dict(os.environ)
    if threads:  # torch/OpenMP threads per op: on a small box they fight the batcher's threads
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def load(url: str, images: list[tuple[str, bytes]], requests: int, clients: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    jobs = itertools.islice(itertools.cycle(images), requests)
    lock = asyncio.Lock()

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            async with lock:
                job = next(jobs, None)
            if job is None:
                return
            name, data = job
            start = time.perf_counter()
            try:
                r = await http.post(
                    f"{url}/v1/caption", files=[("images", (name, data, "image/jpeg"))]
                )
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                else:
                    result = r.json()["results"][0]
                    if result["error"]:
                        errors.append(result["error"])
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        name, data = images[0]  # warm-up: the first call pays for lazy initialisation
        await http.post(f"{url}/v1/caption", files=[("images", (name, data, "image/jpeg"))])
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
        metrics = (await http.get(f"{url}/v1/metrics")).json()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))] * 1000

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "img_s": len(latencies) / seconds,
        "mean_batch": metrics["batches"]["mean_size"],
        "seconds": seconds,
    }


def tiny_hf(folder: Path) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_models import build_vit_gpt2

    return f"hf:{build_vit_gpt2(folder)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--models", default="grounded,tiny-hf")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1 if (os.cpu_count() or 1) <= 4 else 0,
        help="OMP_NUM_THREADS of the server (0: leave it); default 1 on boxes of <= 4 cores",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    images = photos()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.models.split(","):
            model = None if label == "grounded" else tiny_hf(Path(tmp) / "vit-gpt2")
            figures = {}
            for mode, extra in (
                ("micro-batching", ["--max-wait-ms", str(args.max_wait_ms)]),
                ("batch size 1", ["--max-batch", "1", "--max-wait-ms", "0"]),
            ):
                proc, url = start_server(model, extra, args.threads)
                try:
                    figures[mode] = asyncio.run(load(url, images, args.requests, args.clients))
                finally:
                    stop_server(proc)
                f = figures[mode]
                print(
                    f"{label:9} {mode:15} {f['requests']} req, {f['errors']} errors, "
                    f"p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms, "
                    f"{f['img_s']:.1f} img/s, mean batch {f['mean_batch']:.2f}"
                    + (f" (first error: {f['first_error']})" if f["errors"] else ""),
                    flush=True,
                )
            ratio = figures["micro-batching"]["img_s"] / figures["batch size 1"]["img_s"]
            rows.append((label, figures, ratio))
    print(
        f"\n{args.requests} requests of one image from {args.clients} clients, store off, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={args.threads or 'unset'}:"
    )
    print("| model | mode | errors | p50 ms | p99 ms | img/s | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for label, figures, _ in rows:
        for mode, f in figures.items():
            print(
                f"| {label} | {mode} | {f['errors']} | {f['p50_ms']:.0f} | {f['p99_ms']:.0f} | "
                f"{f['img_s']:.1f} | {f['mean_batch']:.2f} |"
            )
    for label, _, ratio in rows:
        print(f"{label}: micro-batching vs batch size 1: x{ratio:.2f} img/s")


if __name__ == "__main__":
    main()
