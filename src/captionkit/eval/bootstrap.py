"""Bootstrap confidence intervals, so a difference between systems can be judged real or noise.

Images are resampled with replacement and the mean of per-image scores recomputed (CIDEr-D's
document frequencies stay those of the full set, the usual approximation: recomputing them
per resample would cost a full CIDEr run each time and changes little). Systems compared
side by side share the same resamples (a paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    mean: float
    low: float
    high: float


@dataclass
class PairedDifference:
    """``a - b``: its mean, interval, and the share of resamples where ``a`` did not beat ``b``."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    p_not_better: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def bootstrap(
    per_image: Mapping[str, Mapping[str, float]],
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, Interval], list[PairedDifference]]:
    """Intervals for each system's mean score and for every pairwise difference.

    ``per_image`` maps system name -> image key -> score; only images every system scored
    are used, so the comparison is paired.
    """
    systems = list(per_image)
    if not systems:
        return {}, []
    keys = sorted(set.intersection(*(set(per_image[s]) for s in systems)))
    if not keys:
        return {}, []
    matrix = np.array([[per_image[s][k] for k in keys] for s in systems], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keys), size=(samples, len(keys)))
    means = matrix[:, idx].mean(axis=2)  # systems x samples
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha], axis=1)
    intervals = {
        s: Interval(float(matrix[i].mean()), float(lo[i]), float(hi[i]))
        for i, s in enumerate(systems)
    }
    diffs = []
    for i in range(len(systems)):
        for j in range(i + 1, len(systems)):
            d = means[i] - means[j]
            dlo, dhi = np.quantile(d, [alpha, 1 - alpha])
            diffs.append(
                PairedDifference(
                    systems[i],
                    systems[j],
                    float(matrix[i].mean() - matrix[j].mean()),
                    float(dlo),
                    float(dhi),
                    float((d <= 0).mean()),
                )
            )
    return intervals, diffs
