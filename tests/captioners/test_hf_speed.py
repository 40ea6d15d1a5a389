"""The hf: backend's GPU path, exercised on CPU: out-of-memory halving, remembered batch sizes,
fixed-length generation, size-grouped chat batches, pinned copies, placement refusals.

CUDA is simulated where a test needs it: ``torch.cuda.OutOfMemoryError`` raised from a
patched ``generate``, the device name patched on the captioner (the model stays on CPU).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from PIL import Image

from captionkit.captioners import hf_batching
from captionkit.captioners.registry import create
from captionkit.errors import ConfigError
from captionkit.types import CaptionRequest, Decoding

SHORT = CaptionRequest(decoding=Decoding(max_new_tokens=6))


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (40 + 7 * i, 30 + 5 * i), (30 * i % 255, 90, 200)) for i in range(n)]


def _texts(captioner, images, request=SHORT) -> list[str]:
    inputs = [captioner.preprocess(img, request) for img in images]
    return [o.candidates[0].text for o in captioner.caption_batch(inputs, request)]


class _OOMOver:
    """Wraps ``generate``: batches larger than ``fits`` raise CUDA out-of-memory."""

    def __init__(self, model, fits: int) -> None:
        self.real = model.generate
        self.fits = fits
        self.sizes: list[int] = []

    def __call__(self, **batch):
        n = next(v for v in batch.values() if hasattr(v, "shape")).shape[0]
        self.sizes.append(n)
        if n > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.real(**batch)


def _fake_cuda(monkeypatch, captioner, card: str = "FakeGPU:81920MiB") -> None:
    """Make the captioner file its batch sizes as if on a CUDA card (the model stays on CPU)."""
    monkeypatch.setattr(captioner, "device", "cuda")
    monkeypatch.setattr(captioner, "_card", lambda: card)


def test_cuda_oom_halves_the_batch_and_keeps_every_image(tiny_vit_gpt2, monkeypatch):
    captioner = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    images = _images(5)
    expected = _texts(captioner, images)  # no OOM: one call of 5
    spy = _OOMOver(captioner.loaded.model, fits=2)
    monkeypatch.setattr(captioner.loaded.model, "generate", spy)
    got = _texts(captioner, images)
    assert got == expected  # every image, in order, same greedy captions
    assert spy.sizes == [5, 2, 2, 1]
    assert captioner.batch_fit(SHORT).limit == 2
    spy.sizes.clear()
    _texts(captioner, images)  # the next batch starts at the size that fitted
    assert spy.sizes == [2, 2, 1]


def test_oom_on_a_single_image_is_raised_for_the_engine(tiny_vit_gpt2, monkeypatch):
    """One image that cannot fit alone: re-raised, so the engine fails that image only."""
    captioner = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    captioner.loaded  # noqa: B018
    monkeypatch.setattr(captioner.loaded.model, "generate", _OOMOver(captioner.loaded.model, 0))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _texts(captioner, _images(3))


def test_engine_loses_no_image_when_cuda_runs_out_of_memory(tiny_vit_gpt2, tmp_path, monkeypatch):
    from captionkit.engine.runner import Runner, RunOptions
    from captionkit.inputs.sources import iter_sources

    for i, img in enumerate(_images(7)):
        img.save(tmp_path / f"{i}.jpg")
    captioner = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    captioner.loaded  # noqa: B018
    spy = _OOMOver(captioner.loaded.model, fits=3)
    monkeypatch.setattr(captioner.loaded.model, "generate", spy)
    runner = Runner(captioner, SHORT, options=RunOptions(batch_size=7, workers=1, collect=True))
    summary = runner.run(iter_sources([str(tmp_path)]))
    assert summary.captioned == 7 and not summary.failures
    # Halved inside the backend, not the engine's one-by-one retry: the GPU stays busy.
    assert spy.sizes == [7, 3, 3, 1]


def test_size_that_fitted_is_remembered_per_model_card_and_image_size(
    tiny_vit_gpt2, tiny_git, monkeypatch
):
    captioner = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    _fake_cuda(monkeypatch, captioner)
    spy = _OOMOver(captioner.loaded.model, fits=2)
    monkeypatch.setattr(captioner.loaded.model, "generate", spy)
    _texts(captioner, _images(8))
    assert spy.sizes == [8, 4, 2, 2, 2, 2]
    saved = json.loads(hf_batching.cache_file().read_text())
    (key,) = saved
    assert saved[key] == {"fits": 2, "oom_at": 4}
    assert str(tiny_vit_gpt2.resolve()) in key and "FakeGPU" in key and "float32" in key
    assert "height=32,width=32" in key and "6x1" in key  # image size and generation length

    # A new run of the same model on the same card starts at the remembered size...
    again = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    _fake_cuda(monkeypatch, again)
    spy2 = _OOMOver(again.loaded.model, fits=2)
    monkeypatch.setattr(again.loaded.model, "generate", spy2)
    _texts(again, _images(8))
    assert spy2.sizes == [2, 2, 2, 2]
    # ...another card, or longer captions, find their own.
    other = create(f"hf:{tiny_vit_gpt2}", device="cpu")
    _fake_cuda(monkeypatch, other, card="SmallGPU:8192MiB")
    assert other.batch_fit(SHORT).limit is None
    longer = CaptionRequest(decoding=Decoding(max_new_tokens=12))
    assert again.batch_fit(longer).limit is None


def test_cuda_feed_size_comes_from_what_was_remembered(tiny_vit_gpt2, monkeypatch):
    import captionkit.devices as devices
    from captionkit.captioners.hf import HFCaptioner

    monkeypatch.setattr(devices, "resolve_device", lambda *a, **k: "cuda")
    monkeypatch.setattr(HFCaptioner, "_card", lambda self: "FakeGPU:81920MiB")
    assert create(f"hf:{tiny_vit_gpt2}").default_batch_size == hf_batching.CUDA_FEED
    label = str(tiny_vit_gpt2.resolve())
    hf_batching.remember(f"{label}|FakeGPU:81920MiB|float32|x", 48, 96)
    assert create(f"hf:{tiny_vit_gpt2}").default_batch_size == 48
    monkeypatch.undo()
    assert create(f"hf:{tiny_vit_gpt2}", device="cpu").default_batch_size == 16


def test_cpu_batch_is_wider_for_captioners_than_for_chat_vlms(tiny_vit_gpt2, tmp_path):
    from helpers.tiny_models import build_idefics3

    assert create(f"hf:{tiny_vit_gpt2}", device="cpu").default_batch_size == 16
    chat = build_idefics3(tmp_path / "idefics3")
    assert create(f"hf:{chat}", device="cpu").default_batch_size == 8


def test_damaged_cache_file_is_ignored(tmp_path):
    path = tmp_path / "batch_sizes.json"
    path.write_text("{not json")
    assert hf_batching.remembered("k", path) is None
    hf_batching.remember("k", 16, 32, path)
    assert hf_batching.remembered("k", path) == 16


def test_min_new_tokens_forces_fixed_length_generation(tiny_vit_gpt2, monkeypatch):
    captioner = create(f"hf:{tiny_vit_gpt2}", device="cpu", min_new_tokens=6, raw=True)
    model = captioner.loaded.model
    model.generation_config.min_new_tokens = None  # the tiny model's own floor, out of the way
    lengths = []
    real = model.generate

    def spy(**kwargs):
        out = real(**kwargs)
        lengths.append(out.shape[1])
        return out

    monkeypatch.setattr(model, "generate", spy)
    _texts(captioner, _images(3))
    assert lengths == [1 + 6]  # decoder start token + exactly max_new_tokens
    assert "min_new_tokens" in captioner.fingerprint()  # a different caption: its own key


def test_new_options_are_cli_flags_and_leave_store_keys_alone(tiny_vit_gpt2):
    from captionkit.captioners.hf import HFCaptioner
    from captionkit.cli.backend_flags import collect_flags

    flags = collect_flags([HFCaptioner])
    assert flags["min_new_tokens"].flag == "--min-new-tokens"
    assert flags["low_vram"].flag == "--low-vram"
    fp = create(f"hf:{tiny_vit_gpt2}", device="cpu").fingerprint()
    assert "low_vram" not in fp and "min_new_tokens" not in fp  # old results stay cached


def test_chat_batches_are_grouped_by_image_size_and_keep_order(tiny_idefics3, monkeypatch):
    captioner = create(f"hf:{tiny_idefics3}", device="cpu")
    sizes = [(300, 200), (20, 20), (200, 150), (24, 24), (500, 400)]
    images = [Image.new("RGB", s, (40 * i, 120, 60)) for i, s in enumerate(sizes)]
    one_by_one = [_texts(captioner, [img])[0] for img in images]
    seen: list[list[tuple[int, int]]] = []
    real = captioner._generate

    def spy(chunk, request):
        seen.append([img.size for img in chunk])
        return real(chunk, request)

    monkeypatch.setattr(captioner, "_generate", spy)
    captioner.batch_fit(SHORT).limit = 2
    assert _texts(captioner, images) == one_by_one
    assert seen == [[(20, 20), (24, 24)], [(200, 150), (300, 200)], [(500, 400)]]


def test_chat_prompts_are_left_padded(tiny_llava):
    captioner = create(f"hf:{tiny_llava}", device="cpu")
    assert captioner.loaded.tokenizer.padding_side == "left"


class _FakeTensor:
    def __init__(self, floating: bool, log: list) -> None:
        self.floating, self.log = floating, log

    def is_floating_point(self) -> bool:
        return self.floating

    def pin_memory(self):
        self.log.append("pin")
        return self

    def to(self, device, **kwargs):
        self.log.append(("to", device, tuple(sorted(kwargs.items()))))
        return self


def test_copies_to_cuda_are_pinned_and_non_blocking():
    from captionkit.captioners.hf import to_device

    log: list = []
    to_device({"pixel_values": _FakeTensor(True, log), "n": 3}, "cuda", "bf16")
    assert log == ["pin", ("to", "cuda", (("dtype", "bf16"), ("non_blocking", True)))]
    log.clear()
    out = to_device({"input_ids": _FakeTensor(False, log)}, "cpu", "fp32")
    assert log == [("to", "cpu", ())] and list(out) == ["input_ids"]


def test_quantize_without_a_gpu_is_refused_before_loading(tiny_vit_gpt2):
    with pytest.raises(ConfigError, match="--quantize 4bit needs a CUDA GPU"):
        create(f"hf:{tiny_vit_gpt2}", device="cpu", quantize="4bit")


def test_low_vram_without_a_gpu_is_refused(tiny_vit_gpt2):
    with pytest.raises(ConfigError, match="--low-vram splits a model between a CUDA GPU"):
        create(f"hf:{tiny_vit_gpt2}", device="cpu", low_vram=True)


def test_low_vram_loads_through_accelerates_device_map(tiny_vit_gpt2, monkeypatch):
    pytest.importorskip("accelerate")
    import transformers

    from captionkit.captioners import hf_loading

    ckpt = hf_loading.inspect_checkpoint(str(tiny_vit_gpt2))
    real = hf_loading._auto_class(transformers, ckpt, False)
    seen: dict = {}

    class Spy:
        @staticmethod
        def from_pretrained(path, **kwargs):
            seen.update(kwargs)
            return real.from_pretrained(path, **kwargs)

    monkeypatch.setattr(hf_loading, "_auto_class", lambda *a: Spy)
    model = hf_loading.load_weights(ckpt, "cpu", torch.float32, low_vram=True)
    assert seen["device_map"] == "auto"  # accelerate places the layers (GPU first, then CPU)
    assert model.training is False


def test_sdpa_attention_is_the_default_where_the_model_supports_it(tiny_vit_gpt2, tiny_blip):
    vit = create(f"hf:{tiny_vit_gpt2}", device="cpu").loaded.model
    assert vit.config.encoder._attn_implementation == "sdpa"
    assert vit.config.decoder._attn_implementation == "sdpa"
    blip = create(f"hf:{tiny_blip}", device="cpu").loaded.model
    assert blip.config._attn_implementation == "eager"  # BLIP has no SDPA path


def test_bfloat16_is_the_default_on_cuda(monkeypatch):
    from captionkit.devices import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", "cuda") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32


def test_decode_size_is_the_side_the_processor_resizes_to(tiny_vit_gpt2, tiny_git):
    from types import SimpleNamespace

    from captionkit.captioners.hf import processor_side

    assert create(f"hf:{tiny_vit_gpt2}", device="cpu").decode_size == 32  # height/width
    assert create(f"hf:{tiny_git}", device="cpu").decode_size == 32  # shortest_edge
    qwen_like = SimpleNamespace(size={"min_pixels": 3136, "max_pixels": 1_000_000})
    assert processor_side(qwen_like) is None  # pixel-count sizing: no draft
    no_resize = SimpleNamespace(size={"height": 224, "width": 224}, do_resize=False)
    assert processor_side(no_resize) is None
