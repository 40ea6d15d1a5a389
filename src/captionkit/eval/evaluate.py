"""One evaluation run: several systems' captions scored on one dataset, side by side.

This is the whole of ``captionkit eval`` except producing captions (the CLI brings them, from
a backend through the public API or from files): metrics, CLIPScore, CHAIR, statistics and
the paired bootstrap, gathered into an :class:`EvalReport` that :mod:`captionkit.eval.report`
renders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from captionkit.errors import ConfigError
from captionkit.eval.bootstrap import Interval, PairedDifference, bootstrap
from captionkit.eval.chair import ChairResult, chair
from captionkit.eval.clipscore import ClipScorer, ClipScoreResult
from captionkit.eval.datasets import CaptionDataset
from captionkit.eval.metrics import DEFAULT_METRICS, METRIC_GROUPS, MetricResult, score_all
from captionkit.eval.stats import CaptionStats, caption_stats

#: Every name ``--metrics`` accepts.
ALL_METRICS = (*METRIC_GROUPS, "clipscore", "chair", "stats")
DEFAULT_ALL = (*DEFAULT_METRICS, "chair", "stats")


@dataclass
class SystemEval:
    """One system's captions and every score computed for them."""

    name: str
    candidates: dict[str, str]
    metrics: MetricResult
    stats: CaptionStats | None = None
    clip: ClipScoreResult | None = None
    chair: ChairResult | None = None
    source: str = ""
    missing: int = 0

    def summary(self) -> dict[str, float]:
        """Metric name -> corpus value, in report order."""
        out = dict(self.metrics.corpus)
        if self.clip is not None:
            out["CLIP-S"] = self.clip.clip_s
            if self.clip.refclip_s is not None:
                out["RefCLIP-S"] = self.clip.refclip_s
        if self.chair is not None:
            out["CHAIR-s"] = self.chair.chair_s
            out["CHAIR-i"] = self.chair.chair_i
        return out

    def per_image(self, key: str) -> dict[str, float]:
        out = dict(self.metrics.per_image.get(key, {}))
        if self.clip is not None:
            out.update(self.clip.per_image.get(key, {}))
        return out


@dataclass
class EvalReport:
    """Everything a report shows; built by :func:`evaluate`."""

    dataset: str
    images: dict[str, Path]
    references: dict[str, list[str]]
    systems: list[SystemEval]
    reference_stats: CaptionStats | None = None
    intervals: dict[str, Interval] = field(default_factory=dict)
    differences: list[PairedDifference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    clip_model: str | None = None
    bootstrap_samples: int = 0


def evaluate(
    dataset: CaptionDataset,
    systems: Mapping[str, Mapping[str, str]],
    *,
    metrics: Sequence[str] = DEFAULT_ALL,
    clip_scorer: ClipScorer | None = None,
    detections: Mapping[str, Sequence[str]] | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> EvalReport:
    """Score each system (name -> image key -> caption) against ``dataset``'s references.

    Images a system has no caption for are left out of that system's scores and counted in
    ``missing``; the bootstrap compares systems on the images they all captioned.
    """
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}")
    if "clipscore" in metrics and clip_scorer is None:
        raise ConfigError("clipscore needs a CLIP model: pass --clip-model ID|DIR")
    refs = dataset.references()
    images = {it.key: it.image for it in dataset.items}
    notes: list[str] = []

    def note(msg: str) -> None:
        if msg not in notes:
            notes.append(msg)
            if warn:
                warn(msg)

    coco = [m for m in metrics if m in METRIC_GROUPS]
    results = []
    for name, cands in systems.items():
        cands = {k: v for k, v in cands.items() if k in refs}
        if not cands:
            raise ConfigError(f"system {name!r} has no caption for any image of {dataset.name}")
        scored = score_all(cands, refs, coco, warn=note)
        source = (sources or {}).get(name, "")
        sys_eval = SystemEval(name, dict(cands), scored, source=source)
        sys_eval.missing = len(refs) - len(cands)
        if "stats" in metrics:
            sys_eval.stats = caption_stats(list(cands.values()), refs)
        if "chair" in metrics:
            sys_eval.chair = chair(cands, refs, detections)
        if clip_scorer is not None and "clipscore" in metrics:
            sys_eval.clip = clip_scorer.score(cands, images, refs)
        results.append(sys_eval)
    report = EvalReport(dataset.name, images, refs, results, notes=notes)
    report.clip_model = clip_scorer.name if clip_scorer is not None else None
    if "stats" in metrics:
        first_refs = [r[0] for r in refs.values() if r]
        report.reference_stats = caption_stats(first_refs)
    if "cider" in metrics and bootstrap_samples > 0:
        per = {s.name: {k: v["CIDEr-D"] for k, v in s.metrics.per_image.items()} for s in results}
        report.intervals, report.differences = bootstrap(per, samples=bootstrap_samples, seed=seed)
        report.bootstrap_samples = bootstrap_samples
    return report
