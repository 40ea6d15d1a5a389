"""Render an :class:`~captionkit.eval.evaluate.EvalReport`: terminal table, JSON, HTML, Markdown.

The HTML page is one self-contained file (charts and thumbnails embedded as base64), so it
can be mailed or attached to an issue; the Markdown report writes its PNGs beside it in
``<name>_files/``. Both show a metrics table per system, the paired-bootstrap comparison,
bar charts per metric, length histograms and an examples grid (thumbnail, references, each
system's caption with its per-image CIDEr-D).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from captionkit.eval.clipscore import LABEL as CLIP_LABEL
from captionkit.eval.evaluate import EvalReport

#: Columns of the summary table, in order (shown when any system has them).
COLUMNS = (
    "BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE", "CLIP-S", "RefCLIP-S",
    "CHAIR-s", "CHAIR-i",
)  # fmt: skip
STAT_COLUMNS = ("mean_length", "vocabulary", "distinct-1", "distinct-2", "novel")


def _columns(report: EvalReport) -> list[str]:
    present = {m for s in report.systems for m in s.summary()}
    return [c for c in COLUMNS if c in present]


def _ci(report: EvalReport, name: str) -> str:
    iv = report.intervals.get(name)
    return f" [{iv.low:.3f}, {iv.high:.3f}]" if iv else ""


def to_json(report: EvalReport) -> dict[str, Any]:
    """A machine-readable report (``--json``): corpus, per-image scores and comparisons."""
    systems = []
    for s in report.systems:
        entry: dict[str, Any] = {
            "name": s.name,
            "source": s.source,
            "images": len(s.candidates),
            "missing": s.missing,
            "metrics": s.summary(),
            "skipped": s.metrics.skipped,
            "stats": s.stats.as_dict() if s.stats else None,
            "per_image": {k: {"caption": s.candidates[k], **s.per_image(k)} for k in s.candidates},
        }
        if s.name in report.intervals:
            iv = report.intervals[s.name]
            entry["cider_d_ci95"] = [iv.low, iv.high]
        if s.chair is not None:
            entry["chair"] = {
                "ground_truth": s.chair.ground_truth,
                "most_hallucinated": s.chair.most_hallucinated,
            }
        systems.append(entry)
    return {
        "dataset": report.dataset,
        "images": len(report.references),
        "protocol": "COCO caption (PTB tokens; corpus BLEU; CIDEr-D DF from these references)",
        "clip_model": report.clip_model,
        "clip_label": CLIP_LABEL if report.clip_model else None,
        "systems": systems,
        "cider_d_differences": [d.__dict__ for d in report.differences],
        "bootstrap_samples": report.bootstrap_samples,
        "notes": report.notes,
    }


def render_table(report: EvalReport):
    """A rich ``Table`` of corpus scores per system (CIDEr-D with its 95% interval)."""
    from rich.markup import escape
    from rich.table import Table

    cols = _columns(report)
    table = Table(title=f"{escape(report.dataset)}: {len(report.references)} images")
    table.add_column("system", no_wrap=True)
    for c in cols:
        table.add_column(c, justify="right", no_wrap=True)
        if c == "CIDEr-D" and report.intervals:
            table.add_column("CIDEr-D 95% CI", justify="right", no_wrap=True)
    table.add_column("len", justify="right")
    for s in report.systems:
        values = s.summary()
        row = [escape(s.name)]  # names come from file names and flags: never markup
        for c in cols:
            v = values.get(c)
            row.append("-" if v is None else f"{v:.3f}")
            if c == "CIDEr-D" and report.intervals:
                row.append(_ci(report, s.name).strip() or "-")
        row.append(f"{s.stats.mean_length:.1f}" if s.stats else "-")
        table.add_row(*row)
    return table


def differences_lines(report: EvalReport) -> list[str]:
    out = []
    for d in report.differences:
        verdict = "significant" if d.significant else "not significant"
        out.append(
            f"CIDEr-D {d.a} - {d.b} = {d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}] "
            f"({verdict} at 95%, {report.bootstrap_samples} paired resamples)"
        )
    return out


# ----------------------------------------------------------------------------- charts & images
def _charts(report: EvalReport) -> dict[str, bytes]:
    from captionkit.eval.charts import length_histograms, metric_bars

    scores = {s.name: s.summary() for s in report.systems}
    intervals = None
    if report.intervals:
        intervals = {"CIDEr-D": {n: (iv.low, iv.high) for n, iv in report.intervals.items()}}
    charts = {"metrics": metric_bars(scores, intervals)}
    lengths = {s.name: s.stats.lengths for s in report.systems if s.stats}
    if report.reference_stats:
        lengths["references"] = report.reference_stats.lengths
    if lengths:
        charts["lengths"] = length_histograms(lengths)
    return charts


def _thumbnail(path: Path, size: int = 200) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im = opened.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
            return buf.getvalue()
    except (OSError, ValueError):
        return None


def pick_examples(report: EvalReport, n: int) -> list[str]:
    """Images worth looking at: where systems disagree most on CIDEr-D, else the first ones."""
    keys = [k for k in report.references if all(k in s.candidates for s in report.systems)]
    if len(report.systems) > 1:

        def spread(k: str) -> float:
            vals = [s.metrics.per_image[k].get("CIDEr-D", 0.0) for s in report.systems]
            return max(vals) - min(vals)

        keys.sort(key=spread, reverse=True)
    return keys[:n]


def _b64(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 20px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:12px}
.card img{max-width:200px;display:block;margin-bottom:6px}
.chart{max-width:100%;height:auto}
.refs{color:#555;margin:4px 0} .sys b{color:#05a} .note{color:#a50}
"""


def to_html(report: EvalReport, examples: int = 24) -> str:
    """The self-contained HTML report."""
    esc = html.escape
    cols = _columns(report)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>captionkit eval: {esc(report.dataset)}</title><style>{_CSS}</style></head><body>",
        f"<h1>captionkit eval: {esc(report.dataset)}</h1>",
        f"<p>{len(report.references)} images; COCO caption protocol (PTB tokens, corpus BLEU,"
        " CIDEr-D with document frequencies from these references).",
    ]
    if report.clip_model:
        parts.append(f" CLIP model: <code>{esc(report.clip_model)}</code> ({esc(CLIP_LABEL)}).")
    parts.append("</p>")
    for n in report.notes:
        parts.append(f"<p class='note'>{esc(n)}</p>")
    parts.append("<h2>Metrics</h2><table><tr><th>system</th><th>source</th><th>images</th>")
    parts += [f"<th>{esc(c)}</th>" for c in cols]
    parts += [f"<th>{esc(c)}</th>" for c in STAT_COLUMNS] + ["</tr>"]
    for s in report.systems:
        values = s.summary()
        row = [f"<tr><td>{esc(s.name)}</td><td>{esc(s.source)}</td>"]
        row.append(f"<td class=num>{len(s.candidates)}</td>")
        for c in cols:
            v = values.get(c)
            cell = "-" if v is None else f"{v:.3f}"
            if c == "CIDEr-D" and v is not None:
                cell += _ci(report, s.name)
            row.append(f"<td class=num>{cell}</td>")
        stats = s.stats.as_dict() if s.stats else {}
        for c in STAT_COLUMNS:
            v = stats.get(c)
            row.append(f"<td class=num>{'-' if v is None else f'{v:.3g}'}</td>")
        parts.append("".join(row) + "</tr>")
    parts.append("</table>")
    diffs = differences_lines(report)
    if diffs:
        parts.append("<h2>Is the difference real?</h2><ul>")
        parts += [f"<li>{esc(d)}</li>" for d in diffs] + ["</ul>"]
    charts = _charts(report)
    parts.append("<h2>Charts</h2>")
    for name, png in charts.items():
        parts.append(f"<p><img class='chart' alt='{name}' src='{_b64(png, 'image/png')}'></p>")
    hall = [s for s in report.systems if s.chair and s.chair.most_hallucinated]
    if hall:
        parts.append("<h2>Most hallucinated objects (CHAIR)</h2><ul>")
        for s in hall:
            assert s.chair is not None  # ``hall`` holds only systems with CHAIR results
            items = ", ".join(f"{o} ({c})" for o, c in s.chair.most_hallucinated)
            parts.append(f"<li><b>{esc(s.name)}</b>: {esc(items)}</li>")
        parts.append("</ul>")
    keys = pick_examples(report, examples)
    if keys:
        parts.append("<h2>Examples</h2><div class='grid'>")
        for k in keys:
            thumb = _thumbnail(report.images[k])
            img = f"<img alt='{esc(k)}' src='{_b64(thumb, 'image/jpeg')}'>" if thumb else ""
            refs = "<br>".join(esc(r) for r in report.references[k])
            syss = "".join(
                f"<div class='sys'><b>{esc(s.name)}</b> "
                f"(CIDEr-D {s.metrics.per_image[k].get('CIDEr-D', 0):.2f}): "
                f"{esc(s.candidates[k])}</div>"
                for s in report.systems
            )
            parts.append(
                f"<div class='card'>{img}<code>{esc(k)}</code><div class='refs'>{refs}</div>"
                f"{syss}</div>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_markdown(report: EvalReport, assets: Path, examples: int = 12) -> str:
    """The Markdown report; charts and thumbnails are written as files into ``assets``."""
    assets.mkdir(parents=True, exist_ok=True)
    cols = _columns(report)
    lines = [f"# captionkit eval: {report.dataset}", ""]
    lines.append(f"{len(report.references)} images; COCO caption protocol.")
    if report.clip_model:
        lines.append(f"CLIP model: `{report.clip_model}` ({CLIP_LABEL}).")
    lines += [f"> {n}" for n in report.notes] + [""]
    lines.append("| system | images | " + " | ".join(cols) + " | mean length |")
    lines.append("|---" * (len(cols) + 3) + "|")
    for s in report.systems:
        values = s.summary()
        cells = []
        for c in cols:
            v = values.get(c)
            cell = "-" if v is None else f"{v:.3f}"
            cells.append(cell + (_ci(report, s.name) if c == "CIDEr-D" and v is not None else ""))
        mean_len = f"{s.stats.mean_length:.1f}" if s.stats else "-"
        lines.append(
            f"| {s.name} | {len(s.candidates)} | " + " | ".join(cells) + f" | {mean_len} |"
        )
    lines.append("")
    lines += [f"- {d}" for d in differences_lines(report)] + [""]
    for name, png in _charts(report).items():
        (assets / f"{name}.png").write_bytes(png)
        lines += [f"![{name}]({assets.name}/{name}.png)", ""]
    keys = pick_examples(report, examples)
    if keys:
        names = " | ".join(s.name for s in report.systems)
        lines += ["## Examples", "", f"| image | references | {names} |"]
        lines.append("|---" * (len(report.systems) + 2) + "|")
        for i, k in enumerate(keys):
            thumb = _thumbnail(report.images[k], 160)
            cell = k
            if thumb:
                (assets / f"ex{i}.jpg").write_bytes(thumb)
                cell = f"![{k}]({assets.name}/ex{i}.jpg)"
            refs = "<br>".join(r.replace("|", "/") for r in report.references[k])
            syss = [
                f"{s.candidates[k].replace('|', '/')} (CIDEr-D "
                f"{s.metrics.per_image[k].get('CIDEr-D', 0):.2f})"
                for s in report.systems
            ]
            lines.append(f"| {cell} | {refs} | " + " | ".join(syss) + " |")
    return "\n".join(lines) + "\n"


#: Report formats by suffix, and whether each draws charts (which need matplotlib).
FORMATS = {".html": True, ".htm": True, ".md": True, ".json": False}


def check_report_path(output: str | Path) -> Path:
    """Refuse an output the report could not be written as, before any captioning or scoring:
    an unknown suffix, or a charted format (HTML, Markdown) without matplotlib installed."""
    from captionkit.errors import ConfigError, require

    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--output must end in .html, .md or .json (got '{path.name}')")
    if FORMATS[suffix]:
        require("matplotlib", "eval", f"the charts of a {suffix} report (or write .json)")
    return path


def write_report(report: EvalReport, output: str | Path, examples: int = 24) -> Path:
    """Write ``output`` as HTML (``.html``/``.htm``), Markdown (``.md``) or JSON (``.json``)."""
    path = check_report_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in {".html", ".htm"}:
        path.write_text(to_html(report, examples), encoding="utf-8")
    elif suffix == ".md":
        assets = path.with_name(path.stem + "_files")
        path.write_text(to_markdown(report, assets, min(examples, 12)), encoding="utf-8")
    else:
        path.write_text(json.dumps(to_json(report), indent=2), encoding="utf-8")
    return path
