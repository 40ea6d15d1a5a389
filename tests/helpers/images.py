"""Image files for tests: solid colours, and a forged decompression bomb."""

from __future__ import annotations

from pathlib import Path


def write_image(path: Path, size=(64, 48), color=(200, 30, 30), fmt=None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A well-formed PNG whose header claims 10 gigapixels, with a few bytes of pixel data:
    what a decompression bomb looks like before anything is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
