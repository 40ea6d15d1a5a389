"""The public Python API: caption() and load_captioner() on the fake backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import captionkit
from captionkit.api import caption, load_captioner, open_store
from captionkit.engine.store import ResultStore, default_store_path
from captionkit.errors import ConfigError
from captionkit.types import CaptionResult, Decoding
from helpers.fakes import NAME, FakeCaptioner, FakeOptions, registered, write_image


@pytest.fixture(autouse=True)
def fake():
    with registered() as cls:
        yield cls


def last_fake() -> FakeCaptioner:
    return FakeCaptioner.instances[-1]


def texts(results: list[CaptionResult]) -> list[str | None]:
    return [r.text for r in results]


def test_public_names_resolve_lazily():
    assert captionkit.caption is caption
    assert captionkit.load_captioner is load_captioner
    assert captionkit.CaptionResult is CaptionResult
    with pytest.raises(AttributeError):
        captionkit.nothing_here  # noqa: B018


def test_single_file_and_list_of_files(tmp_path):
    a = write_image(tmp_path / "a.png", "blue")
    b = write_image(tmp_path / "b.jpg", "green")
    (one,) = caption(a, NAME, store=False)
    assert one.ok and one.text == "a blue image" and one.source == str(a)
    assert (one.backend, one.model, one.style) == ("fake", "fake-model", "short")
    results = caption([str(b), a], NAME, store=False)
    assert texts(results) == ["a green image", "a blue image"]


def test_folder_recursively_in_order(photo_dir):
    results = caption(photo_dir, NAME, store=False)
    good = [(Path(r.source).name, r.text) for r in results if r.ok]
    assert good == [
        ("blue.png", "a blue image"),
        ("red.jpg", "a red image"),
        ("green.jpg", "a green image"),
    ]


def test_failures_are_results_not_exceptions(photo_dir):
    results = caption(photo_dir, NAME, store=False)
    failed = {Path(r.source).name: r.error for r in results if not r.ok}
    assert set(failed) == {"empty.jpg", "truncated.jpg", "text.jpg", "tiny.png", "huge.png"}
    assert failed["empty.jpg"] == "empty file"
    assert all(r.text is None for r in results if not r.ok)


def test_backend_failure_for_one_image_is_a_result(tmp_path):
    cap = FakeCaptioner()
    cap.raise_on = {"black"}
    paths = [write_image(tmp_path / f"{c}.png", c) for c in ["red", "black", "white"]]
    results = caption(paths, cap, store=False, batch_size=3)
    assert texts(results) == ["a red image", None, "a white image"]
    assert "RuntimeError" in results[1].error


def test_pil_images_in_order_mixed_with_paths(tmp_path):
    from PIL import Image

    path = write_image(tmp_path / "y.png", "yellow")
    images = [
        Image.new("RGB", (20, 20), (20, 20, 220)),
        path,
        Image.new("RGB", (20, 20), (220, 20, 20)),
        Image.new("RGB", (30, 20), (5, 5, 5)),
    ]
    results = caption(images, NAME, store=False, batch_size=2)
    assert texts(results) == ["a blue image", "a yellow image", "a red image", "a black image"]
    assert [r.source for r in results] == ["<image 0>", str(path), "<image 2>", "<image 3>"]
    (single,) = caption(images[0], NAME, store=False)
    assert single.text == "a blue image" and single.source == "<image 0>"


def test_store_reused_across_calls(tmp_path):
    store = tmp_path / "s.sqlite"
    paths = [write_image(tmp_path / f"{c}.png", c) for c in ["red", "green"]]
    first = caption(paths, NAME, store=store)
    assert not any(r.cached for r in first) and len(last_fake().calls) == 1
    second = caption(paths, NAME, store=str(store))
    assert last_fake().calls == []
    assert all(r.cached for r in second) and texts(second) == texts(first)
    forced = caption(paths, NAME, store=store, force=True)
    assert len(last_fake().captioned) == 2 and not any(r.cached for r in forced)
    other = caption(paths, NAME, store=store, style="detailed")
    assert len(last_fake().captioned) == 2 and all(r.style == "detailed" for r in other)
    opts = caption(paths, NAME, store=store, variant="v2")
    assert len(last_fake().captioned) == 2 and not any(r.cached for r in opts)
    s = ResultStore(store)
    try:
        assert s.count() == 6
    finally:
        s.close()


def test_default_store_is_the_user_cache(tmp_path):
    path = write_image(tmp_path / "a.png", "red")
    caption(path, NAME)
    assert str(default_store_path()).startswith(os.environ["XDG_CACHE_HOME"])
    assert default_store_path().is_file()
    caption(path, NAME)
    assert last_fake().calls == []


@pytest.mark.parametrize("off", [False, "none", "NONE"])
def test_no_store(tmp_path, off):
    path = write_image(tmp_path / "a.png", "red")
    caption(path, NAME, store=off)
    caption(path, NAME, store=off)
    assert len(last_fake().calls) == 1
    assert not default_store_path().exists()
    assert open_store(off) is None


def test_store_true_means_the_default_store(tmp_path):
    caption(write_image(tmp_path / "a.png", "red"), NAME, store=True)
    assert default_store_path().is_file()


def test_decoration_and_request_fields(tmp_path):
    path = write_image(tmp_path / "a.png", "green")
    (r,) = caption(
        path,
        NAME,
        store=False,
        prefix="<",
        suffix=">",
        trigger_word="ohwx",
        prompt="Say it",
        num_captions=2,
        decoding=Decoding(num_beams=2),
    )
    assert r.text == "<ohwx, a green image>"
    assert r.prompt == "Say it"
    assert [c.text for c in r.candidates] == ["a green image", "a green image again"]


def test_backend_options_passed_through(tmp_path):
    path = write_image(tmp_path / "a.png", "red")
    (r,) = caption(path, NAME, store=False, tag=" (v2)")
    assert r.text == "a red image (v2)"
    assert last_fake().options == FakeOptions(tag=" (v2)")


def test_bad_arguments_are_config_errors(tmp_path):
    path = write_image(tmp_path / "a.png", "red")
    with pytest.raises(ConfigError, match="unknown style 'poem'"):
        caption(path, NAME, style="poem")
    with pytest.raises(ConfigError, match="num_captions"):
        caption(path, NAME, num_captions=0)
    with pytest.raises(ConfigError, match="backend 'fake': colour: Extra inputs"):
        caption(path, NAME, colour="red")
    assert FakeCaptioner.instances == []  # refused before any backend was built


def test_captioner_instance_reused_and_left_open(tmp_path):
    cap = load_captioner(NAME, tag="!")
    assert isinstance(cap, FakeCaptioner) and cap.options.tag == "!"
    path = write_image(tmp_path / "a.png", "red")
    caption(path, cap, store=False)
    caption(path, cap, store=False)
    assert len(cap.calls) == 2 and cap.closed == 0
    caption(path, NAME, store=False)
    assert last_fake().closed == 1  # one the API built itself is closed


def test_missing_input_fails_alone(tmp_path):
    good = write_image(tmp_path / "red.png", "red")
    results = caption([tmp_path / "nope.jpg", good], NAME, store=False)
    assert results[0].error == "no such file" and results[0].text is None
    assert results[1].ok


# -- the config file and CAPTIONKIT_* reach the Python API too (issue #13) -------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "captionkit.toml"
    path.write_text(text)
    return path


def test_config_file_settings_and_backend_table_reach_caption(tmp_path, monkeypatch):
    config = write_config(
        tmp_path,
        f'model = "{NAME}"\nstyle = "detailed"\nprefix = "cfg "\n[backends.fake]\ntag = "!"\n',
    )
    monkeypatch.setenv("CAPTIONKIT_CONFIG", str(config))
    (r,) = caption(write_image(tmp_path / "a.png", "red"), store=False)
    assert r.text == "cfg a red image!" and r.style == "detailed" and r.backend == NAME
    assert last_fake().options == FakeOptions(tag="!")


def test_explicit_arguments_beat_the_config_file(tmp_path):
    config = write_config(
        tmp_path, 'style = "detailed"\nbatch_size = 1\n[backends.fake]\ntag = "!"\n'
    )
    paths = [write_image(tmp_path / f"{c}.png", c) for c in ("red", "blue")]
    results = caption(paths, NAME, store=False, config=config, style="short", tag="?", batch_size=2)
    assert [r.text for r in results] == ["a red image?", "a blue image?"]
    assert results[0].style == "short" and last_fake().batch_sizes == [2]


def test_env_settings_reach_caption(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_TRIGGER_WORD", "ohwx")
    monkeypatch.setenv("CAPTIONKIT_BACKENDS", '{"fake": {"tag": "."}}')
    (r,) = caption(write_image(tmp_path / "a.png", "red"), NAME, store=False)
    assert r.text == "ohwx, a red image."


def test_config_store_path_is_used(tmp_path):
    store = tmp_path / "cfg.sqlite"
    config = write_config(tmp_path, f'store = "{store}"\n')
    caption(write_image(tmp_path / "a.png", "red"), NAME, config=config)
    assert store.is_file() and not default_store_path().exists()


def test_load_captioner_honours_the_backend_table(tmp_path):
    config = write_config(tmp_path, '[backends.fake]\ntag = "!"\nvariant = "v9"\n')
    cap = load_captioner(NAME, config=config, tag="?")
    assert cap.options == FakeOptions(tag="?", variant="v9")


def test_a_loaded_captioner_with_options_is_refused(tmp_path):
    cap = FakeCaptioner()
    with pytest.raises(ConfigError, match="load_captioner"):
        caption(write_image(tmp_path / "a.png", "red"), cap, store=False, tag="!")
