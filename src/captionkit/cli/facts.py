"""``captionkit facts IMAGE``: show what the grounded backend sees, so a person can check it.

Prints the facts a grounded caption is written from (objects, colours, counts, relations,
setting, text) and, with ``--draw``, renders the boxes and labels onto a copy of the image.
It is also the trace of the precision stage: why each object may be named (``evidence``),
which detections were left out and why (``rejected``), and the one place a caption may
state with its source and confidence (``place``), so every phrase of a caption can be
followed back to a fact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

if TYPE_CHECKING:
    from PIL.Image import Image

    from captionkit.captioners.grounded.facts import Facts
    from captionkit.captioners.grounded.pipeline import GroundedCaptioner

#: Distinct, readable box colours, cycled per label.
BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def command(
    image: Path = typer.Argument(..., help="The image to analyse."),
    draw: Path | None = typer.Option(None, "--draw", help="Write the image with boxes here."),
    json_out: bool = typer.Option(False, "--json", help="Print the facts as JSON."),
    detector: str = typer.Option("ssd", help="Detector: ssd, yolox or ultralytics."),
    detector_weights: str | None = typer.Option(None, help="Local weights file for the detector."),
    conf: float = typer.Option(0.3, help="Minimum detection confidence."),
    scene: bool = typer.Option(True, "--scene/--no-scene", help="Guess the setting."),
    ocr: bool = typer.Option(False, "--ocr/--no-ocr", help="Read text in the image."),
    palette: str = typer.Option("coarse", help="Colour names: coarse or css."),
    precision: bool = typer.Option(
        True, "--precision/--no-precision", help="Apply the calibrated precision stage."
    ),
) -> None:
    """Print the grounded facts of IMAGE (objects, colours, relations, setting, text)."""
    from captionkit.captioners.registry import create
    from captionkit.cli.display import plain
    from captionkit.cli.prechecks import check_image_output
    from captionkit.errors import InputError, OutputError
    from captionkit.inputs.decode import decode_image
    from captionkit.types import CaptionRequest

    if not image.is_file():
        raise InputError(f"{plain(image)} is not a file; pass the path of one image")
    if draw is not None:  # before the detector loads: a drawing that cannot be saved is caught now
        check_image_output(draw, "--draw")
    pil = decode_image(image.read_bytes())
    captioner = cast(
        "GroundedCaptioner",
        create(
            "grounded",
            detector=detector,
            detector_weights=detector_weights,
            conf=conf,
            scene=scene,
            ocr=ocr,
            palette=palette,
            precision=precision,
        ),
    )
    facts = captioner.facts_batch([captioner.preprocess(pil, CaptionRequest())])[0]
    if json_out:
        typer.echo(facts.model_dump_json(indent=2))
    else:
        print_facts(facts, str(image))
    if draw is not None:
        try:
            draw_facts(pil, facts).save(draw)
        except OSError as exc:  # the folder changed since the check, or the disk is full
            raise OutputError(f"cannot write --draw {plain(draw)}: {exc}") from None
        typer.echo(f"wrote {plain(draw)}", err=json_out)


def print_facts(facts: Facts, title: str = "") -> None:
    """A rich table of objects plus the other facts, one line each."""
    from rich.console import Console
    from rich.table import Table

    from captionkit.captioners.grounded.facts import setting_text
    from captionkit.captioners.grounded.grammar import join_list
    from captionkit.cli.display import markup

    console = Console()
    table = Table(title=f"{markup(title)} ({facts.width}x{facts.height})")
    for col in ("object", "score", "colours", "box (x1, y1, x2, y2)", "source", "evidence"):
        table.add_column(col)
    for o in facts.objects:
        box = ", ".join(f"{v:.0f}" for v in o.box)
        cells = (o.id, f"{o.score:.2f}", ", ".join(o.colours), box, o.source, o.evidence)
        table.add_row(*(markup(c) for c in cells))
    console.print(table)
    lines: list[tuple[str, Any]] = [
        ("counts", join_list(facts.count_phrases()) or "nothing detected"),
        ("relations", "; ".join(r.text() for r in facts.relations)),
        ("setting", setting_text(facts.scene)),
        ("ground", facts.ground_colour and f"{facts.ground_colour} ({facts.surface or '?'})"),
        ("image colours", ", ".join(facts.image_colours)),
        ("text", ", ".join(f"'{t.text}'" for t in facts.texts)),
        ("place", facts.place and f"{facts.place.word} ({facts.place.source}, "
                                  f"{facts.place.confidence:.2f})"),
        ("activity cues", "; ".join(f"{c.value} ({'+'.join(c.labels)} {c.mass:.2f})"
                                    for c in facts.cues)),
        ("left out", "; ".join(f"{r.label} {r.score:.2f}: {r.reason}" for r in facts.rejected)),
    ]  # fmt: skip
    if facts.scene and facts.scene.labels:
        lines.append(("classifier", ", ".join(f"{n} {p:.2f}" for n, p in facts.scene.labels)))
    for name, value in lines:
        if value:
            console.print(f"[bold]{name}:[/bold] {markup(value)}", highlight=False)


def draw_facts(image: Image, facts: Facts) -> Image:
    """A copy of ``image`` with each object's box and ``id score colour`` label."""
    from PIL import ImageDraw, ImageFont

    out = image.convert("RGB").copy()
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    try:
        font = ImageFont.load_default(size=max(12, round(max(out.size) / 45)))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    labels = sorted({o.label for o in facts.objects})
    for o in facts.objects:
        colour = BOX_COLOURS[labels.index(o.label) % len(BOX_COLOURS)]
        x1, y1, x2, y2 = o.box
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{o.id} {o.score:.2f} {o.colour or ''}".strip()
        tx1, ty1, tx2, ty2 = pen.textbbox((x1, y1), text, font=font)
        top = y1 - (ty2 - ty1) - 4 if y1 - (ty2 - ty1) - 4 >= 0 else y1
        pen.rectangle((x1, top, x1 + (tx2 - tx1) + 6, top + (ty2 - ty1) + 4), fill=colour)
        pen.text((x1 + 3, top + 2 - (ty1 - y1)), text, fill="white", font=font)
    return out
