"""Counters an operator watches: requests, images, batch sizes, latency, the queue.

Plain counters under one lock (updated from the event loop and the batcher's threads);
latency percentiles over the last :data:`WINDOW` requests, which is what an operator wants to
see now, not since start. ``GET /v1/metrics`` answers :meth:`Metrics.snapshot` as JSON, or
the Prometheus text format with ``?format=prometheus``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

WINDOW = 2048


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[int] = Counter()  # by HTTP status
        #: captioned, cached, failed, cancelled (dropped unseen by the model: client gone)
        self.images = Counter[str]()
        self.batches: Counter[int] = Counter()  # batch size -> batches of that size
        self.rejected = 0  # 503: the queue was full
        self.disconnected = 0  # clients that went away before their answer
        self._latency: deque[float] = deque(maxlen=WINDOW)

    def request(self, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[status] += 1
            if seconds is not None and status < 400:
                self._latency.append(seconds)

    def image(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.images[outcome] += n

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches[size] += 1

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def disconnect(self) -> None:
        with self._lock:
            self.disconnected += 1

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            latency = list(self._latency)
            batches = dict(sorted(self.batches.items()))
            n_batches = sum(batches.values())
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "requests": {
                    "total": sum(self.requests.values()),
                    "by_status": {str(k): v for k, v in sorted(self.requests.items())},
                    "rejected_queue_full": self.rejected,
                    "client_disconnected": self.disconnected,
                },
                "images": dict(self.images),
                "batches": {
                    "total": n_batches,
                    "mean_size": round(sum(k * v for k, v in batches.items()) / n_batches, 3)
                    if n_batches
                    else 0.0,
                    "sizes": {str(k): v for k, v in batches.items()},
                },
                "latency_ms": {
                    "window": len(latency),
                    "p50": round(percentile(latency, 0.5) * 1000, 2),
                    "p90": round(percentile(latency, 0.9) * 1000, 2),
                    "p99": round(percentile(latency, 0.99) * 1000, 2),
                },
                **extra,
            }

    def prometheus(self, **gauges: float) -> str:
        """The same figures in Prometheus' text format."""
        snap = self.snapshot()
        lines = [
            "# TYPE captionkit_requests_total counter",
            *(
                f'captionkit_requests_total{{status="{k}"}} {v}'
                for k, v in snap["requests"]["by_status"].items()
            ),
            "# TYPE captionkit_requests_rejected_total counter",
            f"captionkit_requests_rejected_total {self.rejected}",
            "# TYPE captionkit_images_total counter",
            *(f'captionkit_images_total{{outcome="{k}"}} {v}' for k, v in snap["images"].items()),
            "# TYPE captionkit_batches_total counter",
            *(
                f'captionkit_batches_total{{size="{k}"}} {v}'
                for k, v in snap["batches"]["sizes"].items()
            ),
            "# TYPE captionkit_request_latency_ms gauge",
            *(
                f'captionkit_request_latency_ms{{quantile="{q}"}} {snap["latency_ms"][p]}'
                for q, p in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))
            ),
        ]
        for name, value in gauges.items():
            lines += [f"# TYPE captionkit_{name} gauge", f"captionkit_{name} {value}"]
        return "\n".join(lines) + "\n"
