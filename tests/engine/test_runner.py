"""The batch engine with the fake captioner: batching, order, isolation, caching, skipping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captionkit.engine.runner import Runner, RunOptions, RunSummary
from captionkit.engine.sinks import SidecarSink, StreamSink
from captionkit.engine.store import ResultStore
from captionkit.errors import BackendError, InputError
from captionkit.inputs.sources import Source, iter_sources
from captionkit.types import CaptionRequest
from helpers.fakes import FakeCaptioner, FakeOptions, caption_for, write_image

COLOURS = ["red", "green", "blue", "white", "black", "yellow", "red", "blue", "green", "white"]


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    for i, colour in enumerate(COLOURS):
        # Distinct sizes so equal colours still have distinct content hashes.
        write_image(root / f"{i:02d}_{colour}.png", colour, size=(16 + i, 16))
    return root


@pytest.fixture
def store(tmp_path):
    s = ResultStore(tmp_path / "store.sqlite")
    yield s
    s.close()


def run(captioner, inputs, *, store=None, sinks=None, request=None, **opts) -> RunSummary:
    opts.setdefault("workers", 2)
    runner = Runner(
        captioner,
        request or CaptionRequest(),
        store=store,
        sinks=sinks,
        options=RunOptions(collect=True, **opts),
    )
    srcs = inputs if not isinstance(inputs, (str, Path)) else iter_sources([str(inputs)])
    return runner.run(srcs)


def colours_of(summary: RunSummary) -> list[str | None]:
    return [r.text.split()[1] if r.text else None for r in summary.results]


def test_batches_of_the_requested_size_in_order(folder):
    fake = FakeCaptioner()
    summary = run(fake, folder, batch_size=3)
    assert fake.batch_sizes == [3, 3, 3, 1]
    assert fake.captioned == COLOURS
    assert colours_of(summary) == COLOURS
    assert [Path(r.source).name for r in summary.results] == sorted(
        p.name for p in folder.iterdir()
    )
    r = summary.results[0]
    assert (r.backend, r.model, r.style, r.cached) == ("fake", "fake-model", "short", False)
    assert r.path == r.source and r.sha256 and len(r.candidates) == 2
    assert r.extra == {"colour": "red"}
    assert summary.captioned == 10 and summary.failed == 0 and summary.exit_code == 0


def test_default_batch_size_comes_from_the_backend(folder):
    fake = FakeCaptioner()
    run(fake, folder)
    assert fake.batch_sizes == [4, 4, 2]


def test_order_preserved_when_preprocessing_finishes_out_of_order(folder):
    fake = FakeCaptioner()
    real = fake.preprocess
    import time

    def jittery(image, request):
        colour = real(image, request)
        time.sleep(0.03 if colour in ("red", "white") else 0)
        return colour

    fake.preprocess = jittery
    summary = run(fake, folder, batch_size=4, workers=4)
    assert colours_of(summary) == COLOURS
    assert fake.captioned == COLOURS


def test_failing_batch_isolated_per_image(folder):
    fake = FakeCaptioner()
    fake.raise_on = {"black"}
    summary = run(fake, folder, batch_size=4)
    # Batch 2 (white, black, yellow, red) raised, then was retried one image at a time.
    assert fake.batch_sizes == [4, 4, 1, 1, 1, 1, 2]
    assert colours_of(summary) == [None if c == "black" else c for c in COLOURS]
    (bad,) = [r for r in summary.results if not r.ok]
    assert "04_black" in bad.source
    assert bad.error == "RuntimeError: fake backend choked on a batch of 1"
    assert summary.captioned == 9 and summary.failed == 1
    assert summary.failures == [(bad.source, bad.error)]
    assert summary.exit_code == 1


def test_transient_batch_failure_recovers_all_images(folder):
    fake = FakeCaptioner()
    fake.raise_on_calls = {1}  # e.g. out of memory on the first full batch
    summary = run(fake, folder, batch_size=5)
    assert fake.batch_sizes == [5, 1, 1, 1, 1, 1, 5]
    assert colours_of(summary) == COLOURS and summary.exit_code == 0


def test_per_image_failed_output_and_bad_files(photo_dir):
    fake = FakeCaptioner()
    fake.fail_output_on = {"blue"}
    summary = run(fake, photo_dir, batch_size=8)
    by_name = {Path(r.source).name: r for r in summary.results}
    assert by_name["blue.png"].error == "no caption for blue"
    assert by_name["red.jpg"].text == "a red image"
    assert by_name["green.jpg"].text == "a green image"
    for name in ["empty.jpg", "truncated.jpg", "text.jpg", "tiny.png", "huge.png"]:
        assert by_name[name].error and by_name[name].text is None, name
    assert by_name["empty.jpg"].error == "empty file"
    assert "too small" in by_name["tiny.png"].error
    assert "pixel limit" in by_name["huge.png"].error
    # Undecodable files never reach the model.
    assert sorted(fake.captioned) == ["blue", "green", "red"]
    assert summary.captioned == 2 and summary.failed == 6 and summary.exit_code == 1


def test_backend_error_aborts_the_run(folder, tmp_path):
    fake = FakeCaptioner()
    fake.fatal_on = {"yellow"}
    out = tmp_path / "out.jsonl"
    with pytest.raises(BackendError, match="refused the key"):
        run(fake, folder, batch_size=2, sinks=[StreamSink("jsonl", out)])
    assert fake.batch_sizes == [2, 2, 2]  # stopped at the batch holding yellow
    # The sink was closed and holds the batches finished before the error.
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == [caption_for(c) for c in COLOURS[:4]]


def test_missing_input_aborts_with_input_error(folder, tmp_path):
    fake = FakeCaptioner()
    sources = iter_sources([str(folder / "00_red.png"), str(tmp_path / "typo")])
    with pytest.raises(InputError, match="typo"):
        run(fake, sources)


def test_cached_results_reused_and_force_recomputes(folder, store):
    first = FakeCaptioner()
    s1 = run(first, folder, store=store, batch_size=4)
    assert s1.captioned == 10 and store.count() == 10
    again = FakeCaptioner()
    s2 = run(again, folder, store=store, batch_size=4)
    assert again.calls == [] and again.preprocessed == 0  # not even decoded
    assert s2.cached == 10 and s2.captioned == 0 and s2.exit_code == 0
    assert all(r.cached for r in s2.results)
    assert colours_of(s2) == COLOURS
    assert [r.source for r in s2.results] == [r.source for r in s1.results]
    forced = FakeCaptioner()
    s3 = run(forced, folder, store=store, batch_size=4, force=True)
    assert forced.batch_sizes == [4, 4, 2] and s3.captioned == 10 and s3.cached == 0
    assert store.count() == 10


def test_cache_follows_content_not_name(folder, store, tmp_path):
    run(FakeCaptioner(), folder, store=store)
    copy = tmp_path / "renamed.png"
    copy.write_bytes((folder / "02_blue.png").read_bytes())
    fake = FakeCaptioner()
    summary = run(fake, [Source(key=str(copy), path=copy, rel=Path(copy.name))], store=store)
    assert fake.calls == []
    (result,) = summary.results
    assert result.cached and result.text == "a blue image"
    assert result.source == str(copy) and result.path == str(copy)


def test_changed_request_or_options_recompute(folder, store):
    run(FakeCaptioner(), folder, store=store)
    other_style = FakeCaptioner()
    run(other_style, folder, store=store, request=CaptionRequest(style="detailed"))
    assert len(other_style.captioned) == 10
    other_opts = FakeCaptioner(options=FakeOptions(variant="v2"))
    run(other_opts, folder, store=store)
    assert len(other_opts.captioned) == 10
    assert store.count() == 30


def test_failures_are_retried_on_the_next_run(folder, store):
    fake = FakeCaptioner()
    fake.raise_on = {"black"}
    run(fake, folder, store=store)
    assert store.count() == 9
    retry = FakeCaptioner()
    summary = run(retry, folder, store=store)
    assert retry.captioned == ["black"]
    assert summary.cached == 9 and summary.captioned == 1 and summary.exit_code == 0


def test_mixed_cached_and_new_images_keep_input_order(folder, store):
    run(
        FakeCaptioner(),
        [Source(key=str(p), path=p) for p in sorted(folder.iterdir())[::2]],
        store=store,
    )
    fake = FakeCaptioner()
    summary = run(fake, folder, store=store, batch_size=2)
    assert fake.captioned == COLOURS[1::2]
    assert colours_of(summary) == COLOURS
    assert [r.cached for r in summary.results] == [i % 2 == 0 for i in range(10)]


def test_skip_when_sidecar_exists(folder):
    (folder / "00_red.txt").write_text("hand-written\n")
    (folder / "03_white.txt").write_text("hand-written\n")
    fake = FakeCaptioner()
    summary = run(fake, folder, sinks=[SidecarSink()])
    assert summary.skipped == 2 and summary.captioned == 8
    assert fake.preprocessed == 8
    assert "red" not in fake.captioned[:1]
    assert (folder / "00_red.txt").read_text() == "hand-written\n"
    assert (folder / "01_green.txt").read_text() == "a green image\n"
    assert summary.total == 10
    # A second run skips everything without reading a byte.
    again = FakeCaptioner()
    s2 = run(again, folder, sinks=[SidecarSink()])
    assert s2.skipped == 10 and again.preprocessed == 0 and s2.results == []


def test_no_skip_when_a_stream_sink_also_needs_the_image(folder, tmp_path):
    (folder / "00_red.txt").write_text("old\n")
    fake = FakeCaptioner()
    summary = run(fake, folder, sinks=[SidecarSink(), StreamSink("jsonl", tmp_path / "o.jsonl")])
    assert summary.skipped == 0 and len(fake.captioned) == 10
    assert (folder / "00_red.txt").read_text() == "old\n"  # the sidecar policy still holds


def test_decoration_in_outputs_but_store_keeps_raw(folder, store, tmp_path):
    out = tmp_path / "o.jsonl"
    deco = {"prefix": "[", "suffix": "]", "trigger_word": "ohwx"}
    summary = run(
        FakeCaptioner(),
        folder,
        store=store,
        sinks=[SidecarSink(), StreamSink("jsonl", out)],
        **deco,
    )
    assert summary.results[0].text == "[ohwx, a red image]"
    assert (folder / "00_red.txt").read_text() == "[ohwx, a red image]\n"
    assert json.loads(out.read_text().splitlines()[0])["text"] == "[ohwx, a red image]"
    raw = {r.text for r in store.iter_results()}
    assert raw == {caption_for(c) for c in COLOURS}
    # Cached results are decorated on the way out too, once.
    s2 = run(FakeCaptioner(), folder, store=store, **deco)
    assert s2.cached == 10 and s2.results[0].text == "[ohwx, a red image]"
    s3 = run(FakeCaptioner(), folder, store=store)
    assert s3.results[0].text == "a red image"


def test_pil_images_without_files(store):
    from PIL import Image

    images = [Image.new("RGBA", (20, 20), (20, 20, 220, 255)), Image.new("L", (20, 20), 250)]
    sources = [Source(key=f"<image {i}>", image=im) for i, im in enumerate(images)]
    fake = FakeCaptioner()
    summary = run(fake, sources, store=store)
    assert colours_of(summary) == ["blue", "white"]
    assert [r.source for r in summary.results] == ["<image 0>", "<image 1>"]
    assert all(r.path is None and r.sha256 for r in summary.results)
    again = FakeCaptioner()
    assert run(again, sources, store=store).cached == 2 and again.calls == []


def test_summary_counts_rate_and_exit_codes():
    s = RunSummary(captioned=3, cached=2, skipped=1, failures=[("x", "bad")], seconds=2.0)
    assert (s.total, s.failed, s.rate, s.exit_code) == (7, 1, 1.5, 1)
    assert RunSummary().exit_code == 0 and RunSummary().rate == 0.0
    assert RunSummary(interrupted=True, failures=[("x", "y")]).exit_code == 130


def test_keyboard_interrupt_is_reported_not_raised(folder):
    fake = FakeCaptioner()
    fake.caption_batch = lambda inputs, request: (_ for _ in ()).throw(KeyboardInterrupt)
    summary = run(fake, folder)
    assert summary.interrupted and summary.exit_code == 130


def test_summary_times(folder):
    summary = run(FakeCaptioner(), folder)
    assert summary.seconds > 0 and 0 < summary.model_seconds <= summary.seconds
    assert all(r.seconds >= 0 for r in summary.results)


def test_prefetch_window_is_bounded(tmp_path):
    import time

    root = tmp_path / "many"
    for i in range(40):
        write_image(root / f"{i:02d}.png", "red", size=(8 + i, 8))
    fake = FakeCaptioner()
    real = fake.caption_batch

    def slow(inputs, request):  # a slow device: the workers race ahead until the window is full
        time.sleep(0.01)
        return real(inputs, request)

    fake.caption_batch = slow
    summary = run(fake, root, batch_size=2, prefetch=4, workers=4)
    assert summary.captioned == 40 and fake.preprocessed == 40
    # Decoded images waiting for the model: the window (4) plus the batch being assembled
    # (at most batch_size - 1). The module docstring promises "no more than prefetch".
    assert 4 <= fake.max_in_flight <= 4 + 2 - 1


def test_prefetch_default_is_three_batches():
    runner = Runner(FakeCaptioner(), CaptionRequest(), options=RunOptions(batch_size=5))
    assert runner.batch_size == 5 and runner.prefetch == 15
    small = Runner(FakeCaptioner(), CaptionRequest(), options=RunOptions(batch_size=5, prefetch=2))
    assert small.prefetch == 5  # never below one batch


def test_wrong_number_of_outputs_is_isolated(folder):
    fake = FakeCaptioner()
    real = fake.caption_batch

    def short(inputs, request):
        out = real(inputs, request)
        return out[:-1] if len(inputs) > 1 else out

    fake.caption_batch = short
    summary = run(fake, folder, batch_size=5)
    assert colours_of(summary) == COLOURS and summary.exit_code == 0


def test_pil_rgba_image_composited_like_a_file():
    from PIL import Image

    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    fake = FakeCaptioner()
    summary = run(fake, [Source(key="<image 0>", image=clear)])
    assert colours_of(summary) == ["white"]


def test_backend_version_is_part_of_the_store_key(tmp_path):
    """A backend whose code changed its output bumps ``version``: old captions are not reused."""
    image = write_image(tmp_path / "red.png", "red")
    store = ResultStore(tmp_path / "store.sqlite")

    class Bumped(FakeCaptioner):
        version = "2"

    def run(cls):
        runner = Runner(cls(), CaptionRequest(), store=store, options=RunOptions(collect=True))
        return runner.run(iter_sources([str(image)]))

    assert run(FakeCaptioner).captioned == 1
    assert run(FakeCaptioner).cached == 1
    assert run(Bumped).captioned == 1
    assert run(Bumped).cached == 1


def test_missing_optional_package_is_one_line_naming_the_extra(tmp_path):
    """Checked when the backend is built, and again if an import fails mid-run."""
    from captionkit.errors import MissingDependencyError

    class NeedsPackage(FakeCaptioner):
        requires = ("no_such_module_xyz",)

    with pytest.raises(MissingDependencyError, match=r'pip install "captionkit\[fake\]"'):
        NeedsPackage()

    class ImportsLate(FakeCaptioner):
        def caption_batch(self, inputs, request):
            import no_such_module_xyz  # noqa: F401

    image = write_image(tmp_path / "red.png", "red")
    runner = Runner(ImportsLate(), CaptionRequest())
    with pytest.raises(MissingDependencyError, match="'no_such_module_xyz' is needed"):
        runner.run(iter_sources([str(image)]))
