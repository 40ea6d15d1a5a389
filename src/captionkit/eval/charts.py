"""Report charts drawn with matplotlib (Agg) and returned as PNG bytes.

Kept apart from :mod:`captionkit.eval.report` so the text formats never import matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from captionkit.errors import require


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    require("matplotlib", "eval", "report charts")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def metric_bars(
    scores: Mapping[str, Mapping[str, float]],
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> bytes:
    """One small bar chart per metric, one bar per system; error bars where intervals exist.

    ``scores`` is system -> metric -> value; ``intervals`` is metric -> system -> (low, high).
    """
    plt = _pyplot()
    systems = list(scores)
    metrics = [m for m in dict.fromkeys(m for s in systems for m in scores[s])]
    cols = min(4, max(1, len(metrics)))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = [scores[s].get(metric, float("nan")) for s in systems]
        err = None
        if intervals and metric in intervals:
            iv = intervals[metric]
            err = [
                [
                    max(v - iv[s][0], 0) if s in iv else 0
                    for s, v in zip(systems, values, strict=True)
                ],
                [
                    max(iv[s][1] - v, 0) if s in iv else 0
                    for s, v in zip(systems, values, strict=True)
                ],
            ]
        colour = [colours[i % len(colours)] for i in range(len(systems))]
        ax.bar(range(len(systems)), values, color=colour, yerr=err, capsize=4)
        ax.set_title(metric, fontsize=10)
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels(systems, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def length_histograms(lengths: Mapping[str, Sequence[int]]) -> bytes:
    """Caption length (tokens) histograms, one panel per system (references included)."""
    plt = _pyplot()
    names = list(lengths)
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = range(0, top + 2)
    size = (3.2 * len(names), 2.4)
    fig, axes = plt.subplots(1, len(names), figsize=size, squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (ax, name) in enumerate(zip(axes.flat, names, strict=True)):
        ax.hist(lengths[name], bins=bins, color=colours[i % len(colours)], alpha=0.85)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("tokens", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _png(fig)
