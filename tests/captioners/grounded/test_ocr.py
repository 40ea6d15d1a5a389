"""OCR: text drawn with PIL is read back by the real PP-OCR models; nothing from blank images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from captionkit.captioners.grounded.ocr import TextSpan, load_ocr

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return (
        ImageFont.truetype(str(DEJAVU), size) if DEJAVU.exists() else ImageFont.load_default(size)
    )


def drawn(text: str, size: int = 64, canvas: tuple[int, int] = (420, 160)) -> np.ndarray:
    image = Image.new("RGB", canvas, (250, 250, 245))
    ImageDraw.Draw(image).text((50, 40), text, fill=(20, 20, 20), font=_font(size))
    return np.asarray(image)


def test_reads_drawn_word_and_nothing_from_blank(ocr_reader):
    open_sign, blank = ocr_reader.read_batch([drawn("OPEN"), np.full((160, 420, 3), 255, np.uint8)])
    assert blank == []
    assert [s.text.upper() for s in open_sign] == ["OPEN"]
    span = open_sign[0]
    assert isinstance(span, TextSpan) and span.score >= 0.75
    x1, y1, x2, y2 = span.box
    assert 30 <= x1 < 80 and 20 <= y1 < 70 and 180 < x2 <= 420 and 80 < y2 <= 160


def test_two_lines_come_top_to_bottom(ocr_reader):
    image = Image.new("RGB", (480, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.text((30, 30), "COFFEE", fill="black", font=_font(56))
    draw.text((30, 140), "BAKERY", fill="navy", font=_font(56))
    spans = ocr_reader.read(np.asarray(image))
    assert [s.text.upper() for s in spans] == ["COFFEE", "BAKERY"]


def test_short_spans_are_dropped():
    reader = load_ocr(min_chars=3)
    assert reader._engine is None  # lazy: nothing loaded yet
    assert reader.read(drawn("OK", size=72)) == []


@pytest.mark.parametrize("grey", [True, False])
def test_grey_input_is_accepted(ocr_reader, grey):
    image = drawn("EXIT", size=72)
    if grey:
        image = image.mean(axis=2).astype(np.uint8)
    assert [s.text.upper() for s in ocr_reader.read(image)] == ["EXIT"]
