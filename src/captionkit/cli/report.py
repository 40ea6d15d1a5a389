"""What ``captionkit caption`` prints about a run: notes, the dry-run line, the summary.

The numbers come from run assembly (:class:`captionkit.session.Outcome`,
:class:`captionkit.session.Estimate`); this module only words them. Notes and the summary go
to stderr, so stdout stays the caption stream; every path and message is escaped for rich.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from captionkit.cli.display import markup
from captionkit.session import Estimate, Outcome, RunSpec, skipped_text

if TYPE_CHECKING:
    from captionkit.engine.sinks import Sink


def console() -> Any:
    """Where notes and the summary go: stderr, so stdout stays the caption stream. Lines are
    not wrapped, so a long path stays whole (and findable with grep)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def note_ignored(run: RunSpec, flags: dict[str, str]) -> None:
    """One line per backend flag the chosen backend has no option for (it is not used)."""
    for field in run.ignored:
        flag = flags.get(field, f"--{field.replace('_', '-')}")
        console().print(
            f"note: {markup(flag)} is not an option of backend '{markup(run.backend_name)}'; ignored"
        )


def print_estimate(est: Estimate) -> None:
    """``3 images: ~1,234 input + ~180 output tokens, cost ~0.0012`` on stdout."""
    line = f"{est.images} image{'' if est.images == 1 else 's'}"
    if est.uncounted:
        line += f" (+{est.uncounted} URLs or unreadable files not counted)"
    if est.tokens is None:
        typer.echo(f"{line}; backend '{est.backend}' runs locally: no token cost")
        return
    cost = est.tokens.get("cost")
    money = f", cost ~{cost:.4f}" if cost is not None else " (set prices to estimate cost)"
    typer.echo(
        f"{line}: ~{est.tokens['input_tokens']:,} input + "
        f"~{est.tokens['output_tokens']:,} output tokens{money}"
    )


def exit_code(outcome: Outcome, sinks: Sequence[Sink] = ()) -> int:
    """The run's exit code; an image whose caption a sink could not write (its XMP, say)
    counts as a failed image (1)."""
    code = outcome.summary.exit_code
    if code == 0 and any(sink.failed_writes() for sink in sinks):
        return 1
    return code


def print_summary(
    outcome: Outcome, skipped: Counter[str] | None = None, sinks: Sequence[Sink] = ()
) -> None:
    """The run in a few lines on stderr, then what each sink has to say."""
    summary, out = outcome.summary, console()
    if not summary.total and not summary.interrupted:
        out.print("no images found: the paths listed on standard input held none")
    parts = [f"{summary.captioned} captioned"]
    if summary.cached:
        parts.append(f"{summary.cached} from the store")
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (sidecar exists)")
    if summary.failed:
        parts.append(f"[red]{summary.failed} failed[/red]")
    rate = f" at {summary.rate:.2f} img/s" if summary.captioned else ""
    out.print(f"{', '.join(parts)} in {summary.seconds:.1f} s{rate}")
    passed_over = skipped_text(skipped or Counter())
    if passed_over:
        out.print(f"  skipped: {passed_over}")
    totals = {k: v for k, v in outcome.usage.items() if v}
    cost = totals.pop("cost", None)
    if totals:
        text = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in totals.items())
        out.print(f"  {text}" + (f", cost: {cost:.4f}" if cost else ""))
    for source, error in summary.failures[:20]:
        out.print(f"  [red]failed[/red] {markup(source)}: {markup(error)}")
    if summary.failed > 20:
        out.print(f"  ... and {summary.failed - 20} more (see --format jsonl for all)")
    if summary.interrupted:
        where = f" in {markup(outcome.store_path)}" if outcome.store_path is not None else ""
        out.print(
            f"[yellow]interrupted[/yellow]: finished captions are kept{where}; "
            "rerun the same command to resume"
        )
    for sink in sinks:
        for line in sink.report():
            out.print(f"  {markup(line)}")
