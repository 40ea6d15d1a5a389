"""The one device/dtype resolver (captionkit.devices) that hf, the text LLMs, training and the
Ultralytics detector share: the same answers and the same one-line errors everywhere."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from captionkit import devices  # noqa: E402
from captionkit.errors import ConfigError  # noqa: E402


def test_auto_picks_what_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") in ("cpu", "mps")
    assert devices.resolve_dtype("auto", "cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.resolve_dtype("auto", "cuda:0") is torch.float16


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu0", "unknown device 'gpu0'"), ("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")],
)
def test_wrong_devices_are_one_line(monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=message) as err:
        devices.resolve_device(device)
    assert "\n" not in str(err.value)


def test_bad_dtype_lists_the_choices():
    with pytest.raises(ConfigError, match="auto, float32, bfloat16, float16"):
        devices.resolve_dtype("fp8", "cpu")
    assert devices.resolve_dtype("bfloat16", "cpu") is torch.bfloat16


def test_every_runtime_uses_the_shared_resolver():
    from captionkit.captioners import hf_loading
    from captionkit.llm import hf_causal

    assert hf_causal.resolve_device is devices.resolve_device
    assert hf_loading.resolve_device("cpu") == devices.resolve_device("cpu")


def test_text_llm_on_a_missing_gpu_fails_before_loading(monkeypatch, tiny_llm_dir):
    """It used to load the weights and then fail in torch with a CUDA traceback."""
    from captionkit.llm import load_llm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--device cuda .*no CUDA GPU"):
        load_llm(f"hf:{tiny_llm_dir}", device="cuda")
