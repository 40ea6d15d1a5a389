"""The one image decoder: orientation, modes, animations, and refusing bad or forged input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from captionkit.errors import ImageDecodeError
from captionkit.inputs.decode import DecodeLimits, content_hash, decode_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_plain_rgb_roundtrip():
    out = decode_image(encode(Image.new("RGB", (40, 30), (10, 200, 30)), "PNG"))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert out.getpixel((5, 5)) == (10, 200, 30)


def test_exif_orientation_6_is_applied():
    # Stored landscape: red left half, blue right half; Orientation=6 means "rotate 90° CW".
    img = Image.new("RGB", (64, 32), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (32, 64)
    top, bottom = out.getpixel((16, 8)), out.getpixel((16, 56))
    assert top[0] > 200 and top[2] < 60, top  # the left edge went to the top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert 0x0112 not in out.getexif() or out.getexif()[0x0112] == 1


@pytest.mark.parametrize(
    "img",
    [
        Image.new("RGBA", (20, 20), (255, 0, 0, 0)),
        Image.new("LA", (20, 20), (0, 0)),
    ],
    ids=["RGBA", "LA"],
)
def test_transparent_pixels_composited_on_white(img):
    out = decode_image(encode(img, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_half_transparent_rgba_blends_with_white():
    out = decode_image(encode(Image.new("RGBA", (20, 20), (0, 0, 0, 128)), "PNG"))
    value = out.getpixel((3, 3))
    assert all(120 <= c <= 135 for c in value), value


def test_opaque_rgba_keeps_its_colour():
    out = decode_image(encode(Image.new("RGBA", (20, 20), (0, 0, 200, 255)), "PNG"))
    assert out.getpixel((3, 3)) == (0, 0, 200)


def test_palette_with_transparency_composited_on_white():
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (10, 0, 20, 20))  # right half palette index 1 (red), left index 0
    out = decode_image(encode(img, "PNG", transparency=0))
    assert out.getpixel((2, 2)) == (255, 255, 255)  # transparent black -> white
    assert out.getpixel((15, 2)) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb():
    out = decode_image(encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def test_16_bit_greyscale_scaled_not_clipped():
    arr = np.full((20, 30), 65535, dtype=np.uint16)
    arr[:, :15] = 32768
    out = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((25, 5)) == (255, 255, 255)
    mid = out.getpixel((5, 5))
    assert 120 <= mid[0] <= 135, mid  # clipping would have made this 255 too


def test_dark_16_bit_image_stays_dark():
    out = decode_image(encode(Image.fromarray(np.full((16, 16), 1000, np.uint16)), "PNG"))
    assert out.getpixel((2, 2))[0] < 20


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (24, 24), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB"
    r, _, b = out.getpixel((5, 5))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.jpg", "empty file"),
        ("truncated.jpg", "corrupt image"),
        ("text.jpg", "not an image"),
        ("tiny.png", "too small"),
        ("huge.png", "100000x100000 is over the 100,000,000-pixel limit"),
    ],
)
def test_bad_inputs_raise_a_short_decode_error(photo_dir, name, reason):
    data = (photo_dir / "bad" / name).read_bytes()
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message and len(message) < 160


def forged_png(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims ``width`` x ``height`` but holds 16 bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_huge_header_refused_without_decoding(monkeypatch):
    from PIL import ImageFile

    data = forged_png(100_000, 100_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only to prove the header is valid
    assert Image.open(io.BytesIO(data)).size == (100_000, 100_000)
    monkeypatch.undo()
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(ImageDecodeError, match="100000x100000 is over the 100,000,000-pixel"):
        decode_image(data)
    assert loads == []  # refused from the header alone: no 30 GB allocation


def test_max_pixels_honoured_both_ways():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="100x100 is over the 9,999-pixel limit"):
        decode_image(data, DecodeLimits(max_pixels=9_999))
    assert decode_image(data, DecodeLimits(max_pixels=10_000)).size == (100, 100)
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(forged_png(3000, 3000), DecodeLimits(max_pixels=1_000_000))


def test_max_pixels_replaces_pillows_own_bomb_guard(monkeypatch):
    # With Pillow's global limit far below the image, our limit (raised) still decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    assert decode_image(data, DecodeLimits(max_pixels=10**12)).getpixel((0, 0)) == (1, 2, 3)


def test_forged_header_within_limit_fails_as_corrupt_not_a_crash():
    with pytest.raises(ImageDecodeError, match="corrupt image"):
        decode_image(forged_png(64, 64))


def test_min_side_is_configurable():
    data = encode(Image.new("RGB", (4, 40)), "PNG")
    with pytest.raises(ImageDecodeError, match="too small"):
        decode_image(data)
    assert decode_image(data, DecodeLimits(min_side=2)).size == (4, 40)


def test_content_hash_is_sha256_of_bytes():
    assert content_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def _big_photo(size=(2000, 1500)) -> Image.Image:
    """A photo-like image: smooth gradients, waves and sensor noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    arr = np.stack(
        [x / size[0] * 255, y / size[1] * 255, (np.sin(x / 30) + np.cos(y / 45)) * 60 + 128], -1
    )
    arr = arr + rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8"))


def test_jpeg_draft_decodes_small_but_never_below_the_model_side():
    data = encode(_big_photo(), "JPEG", quality=90)
    assert decode_image(data).size == (2000, 1500)
    small = decode_image(data, draft=224)
    assert small.size == (500, 375)  # 1/4 scale: 1/8 would make the short side 188 < 224
    assert small.mode == "RGB"
    assert decode_image(data, draft=1500).size == (2000, 1500)  # 1/2 would go below 1500


def test_jpeg_draft_keeps_exif_rotation_and_both_sides():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(_big_photo(), "JPEG", quality=90, exif=exif.tobytes())
    out = decode_image(data, draft=224)
    assert out.size == (375, 500) and min(out.size) >= 224


def test_draft_ignored_for_formats_without_it():
    data = encode(_big_photo((600, 400)), "PNG")
    assert decode_image(data, draft=100).size == (600, 400)


def test_draft_limits_judge_the_stored_size():
    data = encode(_big_photo(), "JPEG", quality=80)
    with pytest.raises(ImageDecodeError, match="2000x1500 is over"):
        decode_image(data, DecodeLimits(max_pixels=1_000_000), draft=224)


def test_processor_sees_the_same_image_after_a_draft_decode():
    """The model's processor resizes either way: from the draft its input differs from the
    full decode's by less than one grey level on average."""
    pytest.importorskip("transformers")
    from transformers import CLIPImageProcessor, ViTImageProcessor

    data = encode(_big_photo(), "JPEG", quality=90)
    full, small = decode_image(data), decode_image(data, draft=224)
    for proc in (
        ViTImageProcessor(size={"height": 224, "width": 224}),
        CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
    ):
        a = proc(images=full, return_tensors="np")["pixel_values"][0]
        b = proc(images=small, return_tensors="np")["pixel_values"][0]
        assert a.shape == b.shape == (3, 224, 224)
        one_level = float(np.ptp(a)) / 255  # the processor's units per 8-bit grey level
        assert float(np.abs(a - b).mean()) < one_level
