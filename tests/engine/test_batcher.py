"""The micro-batcher (the server's driver): batches by size or deadline, one request per call,
store hits skip the model, failures stay with their future, run-wide errors fail the pending."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from captionkit.engine.batcher import MicroBatcher
from captionkit.engine.stages import RunOptions
from captionkit.engine.store import ResultStore
from captionkit.errors import BackendError, ConfigError
from captionkit.types import CaptionRequest
from helpers.fakes import PALETTE, FakeCaptioner, caption_for

COLOURS = ["red", "green", "blue", "white", "black", "yellow"]


def img(colour: str) -> Image.Image:
    return Image.new("RGB", (16, 12), PALETTE[colour])


def batcher(fake: FakeCaptioner, **kw) -> MicroBatcher:
    kw.setdefault("options", RunOptions(workers=2))
    return MicroBatcher(fake, **kw)


def test_batches_form_by_size():
    fake = FakeCaptioner()
    seen: list[int] = []
    with batcher(fake, max_batch=3, max_wait_ms=5000, on_batch=seen.append) as mb:
        futures = [mb.submit(img(c)) for c in COLOURS]
        results = [f.result(timeout=5) for f in futures]
    # Six images, max 3 per call, a deadline far away: two full calls, no waiting for it.
    assert fake.batch_sizes == [3, 3] and seen == [3, 3]
    assert [r.text for r in results] == [caption_for(c) for c in COLOURS]


def test_a_lone_image_goes_after_the_deadline():
    fake = FakeCaptioner()
    with batcher(fake, max_batch=8, max_wait_ms=50) as mb:
        start = time.monotonic()
        result = mb.submit(img("red")).result(timeout=5)
        waited = time.monotonic() - start
        assert fake.batch_sizes == [1]  # not held until the batch fills up
    assert result.text == caption_for("red")
    assert 0.04 <= waited < 2.0


def test_images_arriving_within_the_deadline_share_a_call():
    fake = FakeCaptioner()
    with batcher(fake, max_batch=8, max_wait_ms=300) as mb:
        first = mb.submit(img("red"))
        time.sleep(0.05)
        second = mb.submit(img("blue"))
        assert first.result(timeout=5).text == caption_for("red")
        assert second.result(timeout=5).text == caption_for("blue")
    assert fake.batch_sizes == [2]


def test_two_requests_submitted_concurrently_are_never_mixed():
    fake = FakeCaptioner()
    # Each request gets its own colours, so a call's images tell which requests they came from.
    plan = {
        "short": (CaptionRequest(style="short"), ["red", "green", "blue"]),
        "detailed": (CaptionRequest(style="detailed"), ["white", "black", "yellow"]),
    }
    futures = []
    with batcher(fake, max_batch=4, max_wait_ms=20) as mb:

        def client(style: str) -> None:
            request, colours = plan[style]
            for i in range(12):
                futures.append((style, mb.submit(img(colours[i % 3]), request)))

        threads = [threading.Thread(target=client, args=(s,)) for s in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = [(style, f.result(timeout=10)) for style, f in futures]
    assert sum(fake.batch_sizes) == 24
    for call, request in zip(fake.calls, fake.requests, strict=True):
        assert set(call) <= set(plan[request.style][1]), (call, request.style)
    assert {r.style for r in fake.requests} == {"short", "detailed"}
    for style, result in results:
        assert result.style == style


def test_futures_resolve_in_any_order():
    fake = FakeCaptioner()
    fake.preprocess_delay = 0.0
    done_order: list[str] = []
    slow, fast = CaptionRequest(style="short"), CaptionRequest(style="detailed")
    with batcher(fake, max_batch=2, max_wait_ms=1000) as mb:
        waiting = mb.submit(img("red"), slow)  # waits for its deadline (alone in its queue)
        full = [mb.submit(img(c), fast) for c in ("green", "blue")]  # a full batch at once
        for f in [waiting, *full]:
            f.add_done_callback(lambda f: done_order.append(f.result().text))
        assert full[0].result(timeout=5).text == caption_for("green")
        assert not waiting.done()  # submitted first, resolved last
        assert waiting.result(timeout=5).text == caption_for("red")
    assert done_order[-1] == caption_for("red")


def test_store_hits_skip_the_model(tmp_path):
    fake = FakeCaptioner()
    store = ResultStore(tmp_path / "store.db")
    with batcher(fake, store=store, max_batch=2, max_wait_ms=10) as mb:
        first = [mb.submit(img(c)).result(timeout=5) for c in ("red", "blue")]
    calls = len(fake.calls)
    with batcher(fake, store=store, max_batch=2, max_wait_ms=10) as mb:
        again = [mb.submit(img(c)).result(timeout=5) for c in ("red", "blue")]
    assert len(fake.calls) == calls  # the model never saw them again
    assert [r.text for r in again] == [r.text for r in first]
    assert all(r.cached for r in again) and not any(r.cached for r in first)
    store.close()


def test_a_failing_image_fails_only_its_future():
    fake = FakeCaptioner()
    fake.raise_on = {"black"}
    with batcher(fake, max_batch=3, max_wait_ms=1000) as mb:
        futures = [mb.submit(img(c)) for c in ("red", "black", "blue")]
        results = [f.result(timeout=5) for f in futures]
    assert [r.ok for r in results] == [True, False, True]
    assert "choked" in results[1].error


def test_a_run_wide_error_fails_the_pending_futures_and_the_batcher_goes_on():
    fake = FakeCaptioner()
    fake.fatal_on = {"black"}
    with batcher(fake, max_batch=2, max_wait_ms=1000) as mb:
        futures = [mb.submit(img(c)) for c in ("black", "red")]
        for f in futures:
            with pytest.raises(BackendError, match="refused the key"):
                f.result(timeout=5)
        assert mb.submit(img("blue")).result(timeout=5).text == caption_for("blue")


def test_a_backend_bug_stops_after_three_batches_with_one_line():
    fake = FakeCaptioner()
    fake.always_raise = TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    with batcher(fake, max_batch=2, max_wait_ms=5) as mb:
        results = [mb.submit(img(c)).result(timeout=5) for c in ("red", "blue")]
        assert all(not r.ok for r in results)  # batches 1 and 2: per-image failures
        with pytest.raises(BackendError) as info:
            mb.submit(img("green")).result(timeout=5)
    line = str(info.value)
    assert "backend 'fake' raised TypeError" in line and "bug in the backend" in line
    assert "\n" not in line


def test_calls_are_serialised_unless_thread_safe():
    class SafeFake(FakeCaptioner):
        thread_safe = True

    for cls, expect_parallel in ((FakeCaptioner, False), (SafeFake, True)):
        fake = cls()
        fake.caption_delay = 0.3
        requests = [CaptionRequest(style=s) for s in ("short", "detailed", "tags")]
        with batcher(fake, max_batch=1, max_wait_ms=1, concurrency=4) as mb:
            futures = [mb.submit(img("red"), r) for r in requests]
            for f in futures:
                f.result(timeout=5)
        assert (fake.max_concurrent > 1) is expect_parallel, cls.__name__


def test_close_drains_what_was_submitted_and_refuses_more():
    fake = FakeCaptioner()
    mb = batcher(fake, max_batch=8, max_wait_ms=60_000)  # only close() can release them
    futures = [mb.submit(img(c)) for c in COLOURS[:3]]
    mb.close()
    assert [f.result(timeout=1).text for f in futures] == [caption_for(c) for c in COLOURS[:3]]
    assert mb.pending == 0
    with pytest.raises(RuntimeError, match="closed"):
        mb.submit(img("red"))
    mb.close()  # twice is harmless


def test_close_with_cancel_fails_the_waiting():
    from concurrent.futures import CancelledError

    fake = FakeCaptioner()
    mb = batcher(fake, max_batch=8, max_wait_ms=60_000)
    fake.preprocess_delay = 0.2
    queued = mb.submit(img("red"))
    time.sleep(0.5)
    preparing = mb.submit(img("blue"))  # still in preprocess when close() cancels it
    mb.close(cancel=True)
    for future in (queued, preparing):
        with pytest.raises(CancelledError):
            future.result(timeout=1)
    assert fake.calls == [] and fake.preprocessed == 2


def test_submit_refuses_a_request_the_backend_cannot_honour():
    class OneCaption(FakeCaptioner):
        multiple_candidates = False

    with (
        batcher(OneCaption(), max_batch=2) as mb,
        pytest.raises(ConfigError, match="one caption per image"),
    ):
        mb.submit(img("red"), CaptionRequest(num_captions=3))


def test_bytes_and_sources_are_accepted(tmp_path):
    import io

    from captionkit.inputs.sources import Source
    from helpers.fakes import write_image

    buf = io.BytesIO()
    img("green").save(buf, format="PNG")
    path = write_image(tmp_path / "b.png", "blue")
    with batcher(FakeCaptioner(), max_batch=2, max_wait_ms=10) as mb:
        a = mb.submit(buf.getvalue(), key="upload.png").result(timeout=5)
        b = mb.submit(Source(key="b.png", path=path)).result(timeout=5)
    assert (a.text, a.source) == (caption_for("green"), "upload.png")
    assert (b.text, b.path) == (caption_for("blue"), str(path))
