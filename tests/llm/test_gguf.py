"""GGUF runtimes: llama.cpp preferred when importable, else a cached transformers conversion."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import time
import types

import pytest

from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError
from captionkit.llm import ChatMessage, load_llm
from captionkit.llm import gguf as gguf_runtime
from captionkit.llm.gguf import MARKER, LlamaCppLLM, checkpoint_dir, convert_gguf, file_sha256
from captionkit.llm.hf_causal import HFCausalLLM
from captionkit.types import Decoding

CONV = [[ChatMessage("user", "a dog runs on the beach")], [ChatMessage("user", "a cat")]]


class FakeLlama:
    instances: list[FakeLlama] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[tuple[str, dict]] = []
        FakeLlama.instances.append(self)

    def create_chat_completion(self, messages, **kw):
        self.calls.append(("chat", {"messages": messages, **kw}))
        return {"choices": [{"message": {"role": "assistant", "content": " A dog. END more"}}]}

    def create_completion(self, prompt, **kw):
        self.calls.append(("complete", {"prompt": prompt, **kw}))
        return {"choices": [{"text": prompt[::-1]}]}


@pytest.fixture
def fake_llama_cpp(monkeypatch):
    module = types.ModuleType("llama_cpp")
    module.__spec__ = importlib.machinery.ModuleSpec("llama_cpp", loader=None)
    module.Llama = FakeLlama
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    FakeLlama.instances.clear()
    return module


@pytest.fixture
def no_llama_cpp(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)


def test_llama_cpp_is_preferred_when_importable(fake_llama_cpp, tiny_gguf):
    llm = load_llm(f"gguf:{tiny_gguf}", n_ctx=512)
    assert isinstance(llm, LlamaCppLLM) and llm.label == "gguf:tiny-llama.F32"
    fake = FakeLlama.instances[-1]
    assert fake.kwargs["model_path"] == str(tiny_gguf) and fake.kwargs["n_ctx"] == 512
    config = Decoding(max_new_tokens=9, stop=("END",), seed=7)
    assert llm.chat(CONV, config) == ["A dog.", "A dog."]
    kind, sent = fake.calls[0]
    assert kind == "chat" and sent["messages"] == [{"role": "user", "content": CONV[0][0].content}]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["seed"]) == (
        9,
        0.0,
        ["END"],
        7,
    )
    assert llm.complete(["abc"], Decoding(max_new_tokens=80)) == ["cba"]


def test_llama_cpp_takes_the_common_local_options(fake_llama_cpp, tiny_gguf):
    load_llm(f"gguf:{tiny_gguf}", device="cpu", batch_size=8, dtype="auto")
    assert FakeLlama.instances[-1].kwargs["n_gpu_layers"] == 0
    with pytest.raises(ConfigError, match="dtype"):
        load_llm(f"gguf:{tiny_gguf}", dtype="float32")
    with pytest.raises(ConfigError, match="max_input_tokens"):
        load_llm(f"gguf:{tiny_gguf}", max_input_tokens=100)


def test_forcing_llama_cpp_without_it_names_the_extra(no_llama_cpp, tiny_gguf):
    assert not gguf_runtime.llama_cpp_available()
    with pytest.raises(MissingDependencyError, match=r"captionkit\[llama-cpp\]"):
        load_llm(f"gguf:{tiny_gguf}", runtime="llama-cpp")


def test_bad_runtime_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="runtime"):
        load_llm(f"gguf:{tmp_path}/x.gguf", runtime="vllm")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_llm(f"gguf:{tmp_path}/x.gguf")


def test_transformers_path_converts_once_then_reuses_the_cache(
    no_llama_cpp, tiny_gguf, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    llm = load_llm(f"gguf:{tiny_gguf}", cache_dir=cache)
    assert isinstance(llm, HFCausalLLM) and llm.label == "gguf:tiny-llama.F32"
    entries = sorted(p.name for p in cache.iterdir())
    assert entries == [file_sha256(tiny_gguf)[:32]]  # no temp dirs left behind
    saved = cache / entries[0]
    assert (saved / MARKER).is_file() and (saved / "config.json").is_file()
    assert any(saved.glob("*.safetensors"))
    assert "quantization_config" not in (saved / "config.json").read_text()
    first = llm.chat(CONV, Decoding(max_new_tokens=6))
    assert all(first)

    import transformers

    def no_gguf(*args, **kwargs):
        raise AssertionError("the cached checkpoint should have been used")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _guard(no_gguf))
    again = load_llm(f"gguf:{tiny_gguf}", cache_dir=cache, runtime="auto")
    assert again.chat(CONV, Decoding(max_new_tokens=6)) == first


def _guard(fail):
    """Wrap from_pretrained so only GGUF reads fail; checkpoint reads still work."""
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def wrapped(*args, **kwargs):
        if "gguf_file" in kwargs:
            fail()
        return original(*args, **kwargs)

    return wrapped


def test_interrupted_conversion_leaves_no_cache(no_llama_cpp, tiny_gguf, tmp_path, monkeypatch):
    import transformers

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(tiny_gguf, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_cache_dir_is_replaced_and_stale_temp_dirs_swept(tiny_gguf, tmp_path):
    target = checkpoint_dir(tiny_gguf, tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{half written")  # no marker: not trusted
    stale = tmp_path / ".tmp-killed"
    stale.mkdir()
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".tmp-running"
    fresh.mkdir()

    assert convert_gguf(tiny_gguf, tmp_path) == target
    assert (target / MARKER).is_file() and "half written" not in (
        target / "config.json"
    ).read_text()
    assert not stale.exists() and fresh.exists()  # another process may still own a fresh one


def test_default_cache_root_is_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert gguf_runtime.default_cache_root() == tmp_path / "captionkit" / "llm"
    else:
        assert gguf_runtime.default_cache_root().parts[-2:] == ("captionkit", "llm")


def test_llama_cpp_gets_every_decoding_setting(fake_llama_cpp, tiny_gguf):
    """The llama.cpp adapter: greedy is temperature 0 whatever --temperature says, sampling
    sends the asked temperature, top-k and repetition penalty (no silent llama.cpp defaults)."""
    llm = load_llm(f"gguf:{tiny_gguf}")
    llm.complete(["x"], Decoding(temperature=0.9))
    llm.complete(["x"], Decoding(do_sample=True, temperature=0.9, top_k=7, repetition_penalty=1.3))
    greedy, hot = (call for _, call in FakeLlama.instances[-1].calls)
    assert (greedy["temperature"], greedy["top_k"], greedy["repeat_penalty"]) == (0.0, 0, 1.0)
    assert (hot["temperature"], hot["top_k"], hot["repeat_penalty"]) == (0.9, 7, 1.3)
