"""The batch-in/batch-out driver a Ray Data actor calls: records round-trip with captions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from captionkit.engine.batch import caption_records
from captionkit.engine.stages import RepeatGuard, RunOptions
from captionkit.engine.store import ResultStore
from captionkit.errors import BackendError, InputError
from captionkit.types import CaptionRequest
from helpers.fakes import PALETTE, FakeCaptioner, caption_for, write_image


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), PALETTE[colour]).save(buf, format="PNG")
    return buf.getvalue()


def test_list_of_dicts_round_trips_with_caption_and_error(tmp_path):
    path = write_image(tmp_path / "w.png", "white")
    records = [
        {"id": 1, "image": png("red")},
        {"id": 2, "image": Image.new("RGB", (8, 8), PALETTE["blue"])},
        {"id": 3, "image": np.full((8, 8, 3), PALETTE["green"], dtype=np.uint8)},
        {"id": 4, "image": {"bytes": None, "path": str(path)}},
        {"id": 5, "image": b"not an image"},
    ]
    out = caption_records(FakeCaptioner(), records, options=RunOptions(batch_size=2))
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5]  # order and other columns kept
    assert [r["caption"] for r in out[:4]] == [
        caption_for(c) for c in ("red", "blue", "green", "white")
    ]
    assert [r["error"] for r in out[:4]] == [None] * 4
    assert out[4]["caption"] is None and out[4]["error"]
    assert records[0].keys() == {"id", "image"}  # the input is not modified


def test_dict_of_numpy_columns_comes_back_as_numpy_columns():
    images = np.stack([np.full((8, 8, 3), PALETTE[c], dtype=np.uint8) for c in ("red", "blue")])
    batch = {"image": images, "key": np.array(["a", "b"])}
    fake = FakeCaptioner()
    out = caption_records(fake, batch, CaptionRequest(style="detailed"), key_column="key")
    assert set(out) == {"image", "key", "caption", "error"}
    assert isinstance(out["caption"], np.ndarray) and len(out["caption"]) == 2
    assert list(out["caption"]) == [caption_for("red"), caption_for("blue")]
    assert list(out["error"]) == [None, None]
    assert fake.requests[0].style == "detailed"


def test_dict_of_lists_and_a_store_hit_skip_the_model(tmp_path):
    store = ResultStore(tmp_path / "s.db")
    fake = FakeCaptioner()
    batch = {"image": [png("red"), png("yellow")]}
    first = caption_records(fake, batch, store=store)
    calls = len(fake.calls)
    again = caption_records(fake, batch, store=store)
    assert again == first and isinstance(again["caption"], list)
    assert len(fake.calls) == calls
    store.close()


def test_a_missing_image_column_is_one_line():
    with pytest.raises(InputError, match="no 'image' column"):
        caption_records(FakeCaptioner(), [{"img": png("red")}])


def test_a_backend_bug_fails_the_call_once_the_actor_guard_trips():
    fake = FakeCaptioner()
    fake.always_raise = TypeError("bad operand")
    guard = RepeatGuard(fake.name)  # kept on the actor across calls
    rows = [{"image": png("red")}]
    for _ in range(2):
        assert caption_records(fake, rows, guard=guard)[0]["error"] == "TypeError: bad operand"
    with pytest.raises(BackendError, match="bug in the backend"):
        caption_records(fake, rows, guard=guard)
