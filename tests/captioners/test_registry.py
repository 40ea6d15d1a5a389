"""The backend registry: model specs, option validation, in-process and plugin backends."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from captionkit.captioners import registry
from captionkit.captioners.base import Captioner
from captionkit.errors import (
    CaptionkitError,
    ConfigError,
    MissingDependencyError,
    UnknownBackendError,
)
from captionkit.plugins import PluginTable
from captionkit.types import CaptionOutput
from helpers.fakes import NAME, FakeCaptioner, FakeOptions, registered


@pytest.fixture
def fake():
    with registered() as cls:
        yield cls


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "hf:Salesforce/blip-image-captioning-base",
            ("hf", "Salesforce/blip-image-captioning-base"),
        ),
        ("hf:/abs/path/to/model", ("hf", "/abs/path/to/model")),
        ("grounded", ("grounded", "")),
        ("  grounded  ", ("grounded", "")),
        ("grounded:llm=smollm2", ("grounded", "llm=smollm2")),
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("openai-compatible:llama3:8b", ("openai-compatible", "llama3:8b")),
        ("/models/blip", ("hf", "/models/blip")),
        ("./checkpoints/best", ("hf", "./checkpoints/best")),
        ("Salesforce/blip-image-captioning-base", ("hf", "Salesforce/blip-image-captioning-base")),
    ],
)
def test_parse_spec(spec, expected):
    assert registry.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["blip", "nonsense:thing", "gpt4"])
def test_parse_spec_unknown_is_a_one_line_error(spec):
    with pytest.raises(UnknownBackendError) as info:
        registry.parse_spec(spec)
    message = str(info.value)
    if ":" in spec:
        assert f"unknown backend '{spec.split(':')[0]}'" in message
    else:
        assert f"cannot tell which backend '{spec}' means" in message and "hf:" in message
    assert "grounded" in message and "\n" not in message


def test_parse_spec_empty():
    with pytest.raises(ConfigError, match="--model is empty"):
        registry.parse_spec("   ")


def test_parse_spec_typo_in_backend_with_slash():
    with pytest.raises(UnknownBackendError):
        registry.parse_spec("hff:Salesforce/blip-image-captioning-base")


def test_register_unregister(fake):
    assert NAME in registry.backend_names()
    assert registry.parse_spec(NAME) == (NAME, "")
    assert registry.parse_spec(f"{NAME}:some-model") == (NAME, "some-model")
    assert registry.get_backend(NAME) is FakeCaptioner
    registry.unregister(NAME)
    assert NAME not in registry.backend_names()
    with pytest.raises(UnknownBackendError, match=f"unknown backend '{NAME}'; available: "):
        registry.get_backend(NAME)
    registry.unregister(NAME)  # unregistering twice is harmless


def test_register_as_decorator_under_another_name():
    @registry.register
    class Other(FakeCaptioner):
        name = "fake-other"

    try:
        assert registry.get_backend("fake-other") is Other
        registry.register(FakeCaptioner, "fake-alias")
        assert registry.get_backend("fake-alias") is FakeCaptioner
    finally:
        registry.unregister("fake-other")
        registry.unregister("fake-alias")
    assert "fake-other" not in registry.backend_names()


def test_create_validates_options(fake):
    captioner = registry.create(f"{NAME}:m1", variant="v9", tag="!", unused=None)
    assert isinstance(captioner, FakeCaptioner)
    assert captioner.model == "m1"
    assert captioner.options == FakeOptions(variant="v9", tag="!")
    assert captioner.fingerprint() == '{"variant":"v9","tag":"!"}'
    assert registry.create(NAME).options == FakeOptions()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"varaint": "x"}, "backend 'fake': varaint: Extra inputs are not permitted"),
        ({"variant": 3}, "backend 'fake': variant: Input should be a valid string"),
    ],
)
def test_bad_options_are_config_errors(fake, options, fragment):
    with pytest.raises(ConfigError) as info:
        registry.create(NAME, **options)
    assert str(info.value).startswith(fragment)
    assert "\n" not in str(info.value)


def test_options_fingerprint_differs_per_option_set():
    a = FakeCaptioner(options=FakeOptions(variant="a"))
    b = FakeCaptioner(options=FakeOptions(variant="b"))
    assert a.fingerprint() != b.fingerprint()
    assert FakeCaptioner().fingerprint() == FakeCaptioner().fingerprint()


class NeedsMissing(FakeCaptioner):
    name = "fake-needs"
    requires = ("captionkit_test_missing_module_xyz", "json")
    extra = "fakeextra"


def test_describe_backends_reports_missing_requirements(fake):
    registry.register(NeedsMissing)
    try:
        infos = {i.name: i for i in registry.describe_backends()}
    finally:
        registry.unregister(NeedsMissing.name)
    assert set(registry.BUILTIN) <= set(infos)
    mine = infos[NAME]
    assert mine.available and mine.problem is None
    assert mine.description == FakeCaptioner.description and mine.extra == "fake"
    assert mine.target == FakeCaptioner.__module__
    needs = infos["fake-needs"]
    assert not needs.available
    assert needs.problem == "missing: captionkit_test_missing_module_xyz"
    assert needs.extra == "fakeextra"
    assert needs.requires == ("captionkit_test_missing_module_xyz", "json")


def _plugins(*eps: EntryPoint):
    def fake_entry_points(group: str):
        assert group == registry.ENTRY_POINT_GROUP
        return list(eps)

    return fake_entry_points


def test_entry_point_plugin_is_found(monkeypatch):
    ep = EntryPoint(
        name="plugged", value="helpers.fakes:FakeCaptioner", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "entry_points", _plugins(ep))
    assert "plugged" in registry.backend_names()
    assert registry.parse_spec("plugged:x") == ("plugged", "x")
    assert registry.get_backend("plugged").__name__ == "FakeCaptioner"


def test_entry_point_cannot_shadow_a_builtin(monkeypatch):
    ep = EntryPoint(
        name="hf", value="helpers.fakes:FakeCaptioner", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "entry_points", _plugins(ep))
    assert registry._targets()["hf"] == registry.BUILTIN["hf"]


def test_broken_plugin_is_reported_not_fatal(monkeypatch):
    ep = EntryPoint(
        name="broken",
        value="no_such_plugin_pkg_xyz.backend:Captioner",
        group=registry.ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(registry, "entry_points", _plugins(ep))
    # A plugin's missing package is named; captionkit cannot know which extra brings it.
    with pytest.raises(UnknownBackendError, match="needs the package 'no_such_plugin_pkg_xyz'"):
        registry.get_backend("broken")
    infos = {i.name: i for i in registry.describe_backends()}
    assert not infos["broken"].available
    assert "no_such_plugin_pkg_xyz" in infos["broken"].problem
    assert len(infos) > 1  # the other backends are still listed


def test_missing_dependency_message_names_the_extra():
    err = MissingDependencyError("torch", "hf", "backend 'hf'")
    assert str(err) == (
        "'torch' is needed for backend 'hf' but is not installed: pip install \"captionkit[hf]\""
    )
    assert isinstance(err, CaptionkitError) and err.exit_code == 2


def test_base_captioner_contract():
    class Minimal(Captioner):
        name = "minimal"

        def caption_batch(self, inputs, request):
            return [CaptionOutput.failed("x") for _ in inputs]

    with Minimal("m") as cap:
        assert cap.model_label == "m"
        assert cap.preprocess("img", None) == "img"  # default: no preprocessing
        assert cap.fingerprint() == "{}"
    with pytest.raises(TypeError):
        Captioner()  # abstract


def test_plugin_package_named_captionkit_something(monkeypatch):
    ep = EntryPoint(
        name="foo", value="captionkit_foo_plugin.backend:Foo", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "entry_points", _plugins(ep))
    with pytest.raises(UnknownBackendError, match="'captionkit_foo_plugin'"):
        registry.get_backend("foo")


# -- the generic plugin table (captionkit.plugins) that detectors, writers and runtimes use ----


def _table(*eps: EntryPoint) -> PluginTable:
    return PluginTable(
        "captionkit.widgets",
        {"json": "json:dumps", "missing": "no_such_builtin_pkg_xyz.mod:Thing"},
        kind="widget",
        extras={"missing": "widgets"},
        find_entry_points=lambda group: [e for e in eps if e.group == group],
    )


def test_plugin_table_lists_and_loads_builtins_entry_points_and_registrations():
    import json

    ep = EntryPoint(name="loads", value="json:loads", group="captionkit.widgets")
    shadow = EntryPoint(name="json", value="json:loads", group="captionkit.widgets")
    table = _table(ep, shadow)
    assert table.names() == ["json", "loads", "missing"]
    assert table.load("json") is json.dumps  # an entry point never shadows a built-in
    assert table.load("loads") is json.loads
    table.register(len, "count")
    assert table.load("count") is len and "count" in table.names()
    table.unregister("count")
    assert "count" not in table.names()


def test_plugin_table_errors_are_one_line():
    bad = EntryPoint(name="third", value="no_such_plugin_xyz:W", group="captionkit.widgets")
    table = _table(bad)
    with pytest.raises(UnknownBackendError) as info:
        table.load("nope")
    assert str(info.value) == "unknown widget 'nope'; available: json, missing, third"
    with pytest.raises(MissingDependencyError, match=r"captionkit\[widgets\]"):
        table.load("missing")
    with pytest.raises(UnknownBackendError, match="widget 'third' needs the package"):
        table.load("third")
    infos = {i.name: i for i in table.describe()}
    assert infos["json"].available and not infos["third"].available
    assert "no_such_plugin_xyz" in infos["third"].problem


def test_backends_use_the_plugin_table():
    assert isinstance(registry.BACKENDS, PluginTable)
    assert registry.BACKENDS.group == registry.ENTRY_POINT_GROUP
