"""Run assembly (captionkit.session): one precedence order, the sink policy, option routing,
the pre-model checks, and the error boundary every face uses. Fake backend only: fast."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest

from captionkit import session
from captionkit.captioners.base import BackendOptions
from captionkit.engine.sinks import SidecarSink, StreamSink
from captionkit.errors import (
    BackendError,
    ConfigError,
    InputError,
    MissingDependencyError,
    OutputError,
)
from captionkit.session import build_run, error_report
from captionkit.types import Decoding
from helpers.fakes import NAME, FakeCaptioner, registered, write_image

TOML = """
batch_size = 3
style = "detailed"
prefix = "file "
device = "cuda:1"

[backends.fake]
variant = "file"
tag = "-file"
"""


class SharedOptions(BackendOptions):
    """A backend whose Options have the run-wide ``device`` and a flag-able field."""

    device: str = "auto"
    shade: Literal["light", "dark"] = "light"
    tag: str = ""


class SharedCaptioner(FakeCaptioner):
    name: ClassVar[str] = "shared"
    Options: ClassVar[type[BackendOptions]] = SharedOptions


@pytest.fixture(autouse=True)
def fake():
    with registered():
        yield


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "captionkit.toml"
    path.write_text(TOML)
    return path


# -- precedence: defaults < config file < CAPTIONKIT_* < explicit < -o -----------------------


def test_defaults_alone():
    run = build_run(model=NAME)
    assert run.control.batch_size is None and run.request.style == "short"
    assert run.options == {} and run.store is None and run.sinks.extension == ".txt"
    assert run.request.decoding == Decoding()


def test_file_over_defaults(config):
    run = build_run(model=NAME, config=config)
    assert run.control.batch_size == 3 and run.request.style == "detailed"
    assert run.decoration.prefix == "file "
    assert run.options == {"variant": "file", "tag": "-file"}  # the [backends.fake] table
    assert run.config_file == config


def test_env_over_file(config, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BATCH_SIZE", "5")
    monkeypatch.setenv("CAPTIONKIT_BACKENDS", '{"fake": {"tag": "-env"}}')
    run = build_run(model=NAME, config=config)
    assert run.control.batch_size == 5 and run.request.style == "detailed"
    assert run.options["tag"] == "-env"


def test_explicit_over_env_and_none_is_not_given(config, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BATCH_SIZE", "5")
    run = build_run(
        model=NAME, config=config, batch_size=7, style=None, backend_flags={"tag": "-flag"}
    )
    assert run.control.batch_size == 7 and run.request.style == "detailed"
    assert run.options == {"variant": "file", "tag": "-flag"}


def test_options_over_everything(config, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_BACKENDS", '{"fake": {"tag": "-env"}}')
    run = build_run(
        model=NAME, config=config, backend_flags={"tag": "-flag"}, options={"tag": "-o"}
    )
    assert run.options == {"variant": "file", "tag": "-o"}


def test_run_wide_device_reaches_backends_that_take_it(config):
    with registered(SharedCaptioner):
        run = build_run(model="shared", config=config)
        assert run.options["device"] == "cuda:1"  # top-level setting of the file
        assert build_run(model="shared", device="cpu").options["device"] == "cpu"
        assert "device" not in build_run(model="shared").options  # not set: backend default
        assert (
            build_run(model="shared", device="cpu", options={"device": "mps"}).options["device"]
            == "mps"
        )
    assert "device" not in build_run(model=NAME, config=config).options  # fake has no device


def test_backend_flags_are_routed_or_listed_as_ignored():
    with registered(SharedCaptioner):
        run = build_run(model="shared", backend_flags={"shade": "dark", "detector": "yolox"})
        assert run.options == {"shade": "dark"} and run.ignored == ("detector",)
        with pytest.raises(ConfigError, match="backend 'shared': shade"):
            build_run(model="shared", backend_flags={"shade": "purple"})


def test_bad_values_are_config_errors_before_any_backend_is_built():
    with pytest.raises(ConfigError, match="backend 'fake': colour: Extra inputs"):
        build_run(model=NAME, options={"colour": "red"})
    with pytest.raises(ConfigError, match="unknown style 'poem'"):
        build_run(model=NAME, style="poem")
    with pytest.raises(ConfigError, match="num_captions"):
        build_run(model=NAME, num_captions=0)
    with pytest.raises(ConfigError, match="--format must be one of txt, jsonl, csv"):
        build_run(model=NAME, format="xml")
    with pytest.raises(ConfigError, match="setting 'batch_size'"):
        build_run(model=NAME, batch_size=0)
    with pytest.raises(TypeError, match="bogus"):
        build_run(model=NAME, bogus=1)
    assert FakeCaptioner.instances == []


def test_decoding_from_loose_values_and_sampling_knobs_only_when_sampling(config):
    run = build_run(model=NAME, config=config, max_new_tokens=9, num_beams=2, top_p=0.5)
    assert run.request.decoding == Decoding(max_new_tokens=9, num_beams=2)  # top_p: no sample
    sampled = build_run(model=NAME, do_sample=True, temperature=0.7, top_p=0.5, seed=3)
    assert sampled.request.decoding == Decoding(do_sample=True, temperature=0.7, top_p=0.5, seed=3)
    whole = Decoding(num_beams=4)
    assert build_run(model=NAME, decoding=whole, max_new_tokens=9).request.decoding == whole


def test_a_loaded_captioner_takes_no_options():
    with pytest.raises(ConfigError, match="load_captioner"):
        build_run(captioner=FakeCaptioner, options={"tag": "x"})
    assert build_run(captioner=FakeCaptioner).backend_name == NAME


# -- the sink policy -------------------------------------------------------------------------


def kinds(run) -> list[tuple[str, str | None]]:
    out = []
    for sink in session.make_sinks(run):
        if isinstance(sink, SidecarSink):
            out.append(("sidecar", None))
        else:
            assert isinstance(sink, StreamSink)
            out.append((sink.fmt, None if sink.path is None else sink.path.name))
    return out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, [("sidecar", None)]),
        ({"format": "jsonl"}, [("jsonl", None)]),  # --format to stdout: no sidecars
        ({"format": "csv", "output": "o.csv"}, [("sidecar", None), ("csv", "o.csv")]),
        ({"format": "jsonl", "sidecar": True}, [("sidecar", None), ("jsonl", None)]),
        ({"sidecar": False}, [("txt", None)]),  # sidecars off: captions are printed
        ({"format": "csv", "output": "o.csv", "sidecar": False}, [("csv", "o.csv")]),
    ],
)
def test_sink_policy(values, expected, tmp_path):
    run = build_run([str(tmp_path)], model=NAME, **values)
    assert kinds(run) == expected


def test_urls_and_stdin_lists_also_print_their_captions(tmp_path):
    for items in (["https://example.com/a.jpg"], ["-"], [str(tmp_path), "-"]):
        assert kinds(build_run(items, model=NAME)) == [("sidecar", None), ("txt", None)]


def test_sidecar_settings_come_from_the_layers(config, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONKIT_EXISTING", "append")
    run = build_run([str(tmp_path)], model=NAME, config=config, extension=".caption")
    assert run.sinks.existing == "append" and run.sinks.extension == ".caption"
    (sidecar,) = session.make_sinks(run)
    assert sidecar.extension == ".caption"  # type: ignore[attr-defined]


# -- checks before the model loads, and the run itself ---------------------------------------


def test_check_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        session.check_inputs(build_run([str(tmp_path / "nope")], model=NAME))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no images found"):
        session.check_inputs(build_run([str(tmp_path)], model=NAME))
    write_image(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="--include"):
        session.check_inputs(build_run([str(tmp_path)], model=NAME, include=["*.png"]))
    session.check_inputs(build_run([str(tmp_path)], model=NAME))


def test_execute_runs_the_engine_and_reports_usage(tmp_path, config):
    write_image(tmp_path / "in" / "red.png", "red")
    store = tmp_path / "s.sqlite"
    run = build_run([str(tmp_path / "in")], model=NAME, config=config, store=str(store))
    outcome = session.execute(run, session.sources(run))
    assert outcome.summary.captioned == 1 and outcome.store_path == store
    text = (tmp_path / "in" / "red.txt").read_text().strip()
    assert text == "file a red image-file"  # prefix from the file, tag from its backend table
    assert FakeCaptioner.instances[-1].closed == 1 and outcome.usage == {}


def test_execute_checks_outputs_before_loading(tmp_path):
    write_image(tmp_path / "red.png", "red")
    (tmp_path / "x").write_text("a file where the sidecar folder should be")
    run = build_run([str(tmp_path)], model=NAME, store="none", output_dir=str(tmp_path / "x"))
    with pytest.raises(OutputError, match="x"):
        session.execute(run, session.sources(run))
    assert FakeCaptioner.instances == []


def test_dry_run_estimate_asks_the_backend(tmp_path):
    write_image(tmp_path / "a.png", size=(40, 30))
    (tmp_path / "b.png").write_bytes(b"not an image")
    run = build_run([str(tmp_path)], model=NAME)
    cap = FakeCaptioner()
    est = session.estimate(run, cap, session.sources(run))
    assert (est.images, est.uncounted, est.tokens) == (1, 1, None)  # local: no token cost
    cap.estimate = lambda sizes, request: {"sizes": sizes}  # type: ignore[method-assign]
    assert session.estimate(run, cap, session.sources(run)).tokens == {"sizes": [(40, 30)]}


# -- the error boundary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "line", "code", "status"),
    [
        (ConfigError("bad --format"), "captionkit: error: bad --format", 2, 400),
        (InputError("a\n  b"), "captionkit: error: a b", 2, 400),
        (MissingDependencyError("cv2", "grounded"), "captionkit[grounded]", 2, 501),
        (BackendError("key refused"), "captionkit: error: key refused", 2, 502),
        (KeyboardInterrupt(), "captionkit: interrupted", 130, 499),
    ],
)
def test_error_report(exc, line, code, status):
    report = error_report(exc)
    assert report is not None
    assert line in report.line() and "\n" not in report.line()
    assert (report.exit_code, report.http_status) == (code, status)
    assert report.json()["error"]["type"] == type(exc).__name__ or code == 130


def test_bugs_get_no_report():
    assert error_report(RuntimeError("a bug")) is None


# -- issue #20: prompt templates, tag rules, caption layouts in run assembly --------------------


def test_tag_rules_from_config_table_then_flags(tmp_path):
    from captionkit.tags import TagRules

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'trigger_word = "sks"\n[tags]\nexclude = "watermark, *_background"\nmax_tags = 5\n'
        'replace = {"1girl" = "woman"}\n',
        encoding="utf-8",
    )
    with registered():
        run = build_run(["x"], config=cfg, model=NAME)
        assert run.tags == TagRules(
            exclude=("watermark", "*_background"),
            max_tags=5,
            replace=(("1girl", "woman"),),
            trigger_word="sks",
        )
        run = build_run(
            ["x"], config=cfg, model=NAME, max_tags=2, exclude_tags=["a,b", "c"],
            replace_tags=["x=y"], tag_sort="alpha", keep_tokens=1, keep_underscores=True,
        )  # fmt: skip
        assert run.tags.max_tags == 2 and run.tags.exclude == ("a", "b", "c")
        assert run.tags.replace == (("x", "y"),) and run.tags.sort == "alpha"
        assert run.tags.keep_tokens == 1 and not run.tags.underscores_to_spaces
        assert build_run(["x"], model=NAME).tags is None  # nothing set: no rules


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"replace_tags": ["nothing"]}, "--replace-tags .nothing.: write OLD=NEW"),
        ({"tag_sort": "random"}, "tag rules: sort"),
        ({"max_tags": 0}, "tag rules: max_tags"),
    ],
)
def test_tag_rule_mistakes_are_one_line(given, message):
    with registered(), pytest.raises(ConfigError, match=message) as err:
        build_run(["x"], model=NAME, **given)
    assert "\n" not in str(err.value)


def test_unknown_key_in_the_tags_table_is_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tags]\nexclud = ['a']\n", encoding="utf-8")
    with registered(), pytest.raises(ConfigError, match="tag rules: exclud"):
        build_run(["x"], config=cfg, model=NAME)


def test_captions_layout_from_config_and_flag(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('captions_layout = "numbered"\n', encoding="utf-8")
    write_image(tmp_path / "a.png")
    with registered():
        run = build_run([str(tmp_path)], config=cfg, model=NAME, num_captions=3)
        (sink,) = session.make_sinks(run)
        assert isinstance(sink, SidecarSink) and (sink.layout, sink.count) == ("numbered", 3)
        assert session.run_options(run).finish_candidates
        run = build_run([str(tmp_path)], config=cfg, model=NAME, captions_layout="lines")
        assert run.sinks.layout == "lines"
        with pytest.raises(ConfigError, match=r"captions_layout.*--captions-layout"):
            build_run([str(tmp_path)], model=NAME, captions_layout="files")


def test_prompt_templates_in_the_run(tmp_path):
    with registered():
        static = build_run(["x"], model=NAME, prompt="Describe it {{briefly}}.")
        assert static.prompts is None and static.request.prompt == "Describe it {briefly}."
        dynamic = build_run(["x"], model=NAME, prompt="Describe {name}.")
        assert dynamic.prompts is not None and dynamic.request.prompt == "Describe {name}."
        assert session.run_options(dynamic).render is not None
        assert session.run_options(static).render is None
