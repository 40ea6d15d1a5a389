"""Loading real layouts: never random weights, and every failure says its real cause in one line."""

from __future__ import annotations

import json
import logging

import pytest

from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that does not match this torch
        return False
    return True


def _rewrite_weights(folder, change) -> None:
    from safetensors.torch import load_file, save_file

    path = str(folder / "model.safetensors")
    tensors = change(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


def _one_line_error(cli, *args):
    code, out, err = cli("caption", *args, "--store", "none", "--no-progress")
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# -- 1. never caption with random weights ------------------------------------------------
def test_a_missing_weight_is_refused(replica, tmp_path):
    from captionkit.captioners.registry import create
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("llava15"), tmp_path / "partial")
    gone = "language_model.model.layers.1.mlp.up_proj.weight"
    _rewrite_weights(folder, lambda t: {k: v for k, v in t.items() if k != gone})
    captioner = create(f"hf:{folder}", device="cpu")
    with pytest.raises(ModelLoadError) as err:
        captioner.loaded  # noqa: B018
    message = str(err.value)
    assert "\n" not in message and "LlavaForConditionalGeneration" in message
    assert "1 weights" in message and "layers.1.mlp.up_proj.weight" in message


def test_a_foreign_layout_is_refused_with_the_count(replica, tmp_path):
    """What the native class makes of Florence-2's remote-code layout: most checkpoint
    tensors match nothing, and the error counts them and names the class."""
    from captionkit.captioners.registry import create
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("florence2"), tmp_path / "foreign")
    _rewrite_weights(
        folder,
        lambda t: {
            (k.replace("model.language_model.", "language_model.model.", 1)): v
            for k, v in t.items()
        },
    )
    with pytest.raises(ModelLoadError) as err:
        create(f"hf:{folder}", device="cpu").loaded  # noqa: B018
    message = str(err.value)
    total = 127
    assert f"49 of {total} weights in the checkpoint do not match the model class " in message
    assert "Florence2ForConditionalGeneration" in message
    assert "trust_remote_code=true" in message and "\n" not in message


def test_a_weight_of_another_shape_is_refused(replica, tmp_path):
    import torch

    from captionkit.captioners.registry import create
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("git"), tmp_path / "reshaped")
    key = "git.encoder.layer.0.attention.self.query.weight"
    _rewrite_weights(folder, lambda t: {**t, key: torch.zeros(8, 8)})
    with pytest.raises(ModelLoadError, match=r"other shapes.*query\.weight"):
        create(f"hf:{folder}", device="cpu").loaded  # noqa: B018


def test_tied_weights_and_stale_buffers_do_not_trip_the_check(replica):
    """Qwen2-VL-2B stores no lm_head (tied); old GPT-2 checkpoints hold mask buffers the
    class no longer has. Both load cleanly."""
    import torch

    from captionkit.captioners.hf_loading import inspect_checkpoint, load_weights

    for name in ("qwen2_vl", "vit_gpt2"):
        load_weights(inspect_checkpoint(str(replica(name).path)), "cpu", torch.float32)


def test_loading_warnings_are_not_silenced_wholesale(replica):
    """transformers' verbosity stays where the user left it, and a real warning raised while
    loading reaches its handlers; only known-benign notices are dropped."""
    from transformers.utils import logging as hf_logging

    from captionkit.captioners.hf_loading import replay, transformers_log
    from captionkit.captioners.registry import create

    before = hf_logging.get_verbosity()
    create(f"hf:{replica('blip').path}", device="cpu").loaded  # noqa: B018
    assert hf_logging.get_verbosity() == before <= logging.WARNING

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = hf_logging.get_logger()
    keep = Keep(logging.WARNING)
    root.addHandler(keep)
    try:
        with transformers_log() as held:
            hf_logging.get_logger("transformers.x").warning("a real problem")
            hf_logging.get_logger("transformers.y").warning(
                "`X` requires torchvision (not installed); falling back to `XPil`"
            )
        assert seen == []  # held while loading
        replay(held)
    finally:
        root.removeHandler(keep)
    assert seen == ["a real problem"]


# -- 4. DeepSeek-VL's original layout ----------------------------------------------------
def test_deepseek_ai_layout_names_the_converted_repo(replica, cli, photos, monkeypatch):
    from captionkit.captioners import hf_arch
    from captionkit.captioners.registry import create

    rep = replica("deepseek_ai")
    line = _one_line_error(cli, photos, "--model", f"hf:{rep.path}")
    assert "multi_modality" in line and "deepseek-community/" in line
    assert "downloaded" not in line

    raw = json.loads((rep.path / "config.json").read_text())
    monkeypatch.setattr(hf_arch, "read_raw_config", lambda model_id, revision=None: raw)
    with pytest.raises(ModelLoadError) as err:
        create("hf:deepseek-ai/deepseek-vl-7b-chat")
    assert "--model hf:deepseek-community/deepseek-vl-7b-chat" in str(err.value)


# -- 5. Qwen2-VL ---------------------------------------------------------------------------
def test_qwen2_vl_without_torchvision_is_one_run_wide_line(replica, cli, photos):
    rep = replica("qwen2_vl")
    if _has_torchvision():
        code, _out, err = cli(
            "caption", photos, "--model", f"hf:{rep.path}", "--format", "jsonl",
            "--store", "none", "--no-progress", "--max-new-tokens", "4",
        )  # fmt: skip
        assert code == 0, err
        return
    line = _one_line_error(cli, photos, "--model", f"hf:{rep.path}", "--format", "jsonl")
    assert "torchvision" in line and "pip install torchvision" in line
    assert "NoneType" not in line


def test_qwen2_vl_images_are_capped_at_1024_tokens(replica):
    """The published max_pixels (16384 tokens) would turn a 12 MP photo into ~15k tokens."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from captionkit.captioners.hf_loading import processor_kwargs

    path = replica("qwen2_vl").path
    published = AutoImageProcessor.from_pretrained(path)
    kwargs = processor_kwargs("qwen", published, {})
    assert kwargs == {"max_pixels": 1024 * 28 * 28}
    capped = AutoImageProcessor.from_pretrained(path, **kwargs)
    grid = capped(images=[Image.new("RGB", (4000, 3000))], return_tensors="pt")["image_grid_thw"]
    tokens = int(grid.prod()) // (capped.merge_size**2)
    assert 900 < tokens <= 1024

    assert processor_kwargs("qwen", published, {"max_pixels": 200704}) == {"max_pixels": 200704}
    assert processor_kwargs("qwen", published, {"min_pixels": 3136}) == {
        "min_pixels": 3136,
        "max_pixels": 1024 * 28 * 28,
    }
    with pytest.raises(ConfigError, match="num_crops"):
        processor_kwargs("qwen", published, {"num_crops": 4})


def test_processor_options_are_validated_against_the_processor(replica):
    from captionkit.captioners.registry import create

    captioner = create(f"hf:{replica('llava15').path}", device="cpu", max_pixels=100000)
    with pytest.raises(ConfigError, match="max_pixels"):
        captioner.loaded  # noqa: B018


def test_missing_package_error_names_the_package():
    from captionkit.captioners.hf_errors import missing_package

    exc = ImportError(
        "\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your "
        "environment."
    )
    error = missing_package("Qwen/Qwen2-VL-2B-Instruct", exc)
    assert isinstance(error, MissingDependencyError)
    assert "pip install torchvision" in str(error) and "\n" not in str(error)


# -- 7 / #11-18. the real cause, never "could not be downloaded" ---------------------------
@pytest.mark.parametrize("spec", ["/no/such/dir", "./no-such-dir", "../no-such-dir", "~/no-such"])
def test_a_local_path_that_does_not_exist(spec, cli, photos):
    line = _one_line_error(cli, photos, "--model", f"hf:{spec}")
    assert "does not exist" in line
    assert "downloaded" not in line and "network" not in line


def test_unknown_model_type_without_code(tmp_path, cli, photos):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "brand_new_vlm"}))
    line = _one_line_error(cli, photos, "--model", f"hf:{tmp_path}")
    assert "brand_new_vlm" in line and "does not know" in line
    assert "downloaded" not in line


def test_unknown_model_type_with_code_needs_trust(tmp_path, cli, photos):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "brand_new_vlm", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}
        )
    )
    line = _one_line_error(cli, photos, "--model", f"hf:{tmp_path}")
    assert "-o trust_remote_code=true" in line and "downloaded" not in line


REMOTE_CONFIG_BROKEN = """
from transformers.onnx import OnnxConfig  # removed in transformers 5
from transformers import PretrainedConfig


class BrokenConfig(PretrainedConfig):
    model_type = "brand_new_vlm"
"""


def test_remote_code_that_breaks_says_why(tmp_path, cli, photos, modules_cache):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "brand_new_vlm",
                "auto_map": {"AutoConfig": "configuration_broken.BrokenConfig"},
            }
        )
    )
    (tmp_path / "configuration_broken.py").write_text(REMOTE_CONFIG_BROKEN)
    line = _one_line_error(cli, photos, "--model", f"hf:{tmp_path}", "-o", "trust_remote_code=true")
    assert "its own code" in line and "transformers.onnx" in line
    assert "downloaded" not in line


REMOTE_CONFIG = """
from transformers import LlavaConfig


class RemoteLlavaConfig(LlavaConfig):
    model_type = "llava"
"""
REMOTE_MODEL = """
from transformers import LlavaForConditionalGeneration

from .configuration_remote import RemoteLlavaConfig


class RemoteLlava(LlavaForConditionalGeneration):
    config_class = RemoteLlavaConfig
"""


def test_trust_remote_code_loads_the_class_auto_map_names(replica, tmp_path, modules_cache):
    """With -o trust_remote_code=true the repo's own class is used, not the native one its
    model_type would pick (Florence-2's original layout is the case that matters)."""
    from captionkit.captioners.registry import create
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("llava15"), tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_remote.RemoteLlavaConfig",
        "AutoModelForCausalLM": "modeling_remote.RemoteLlava",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_remote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_remote.py").write_text(REMOTE_MODEL)
    # transformers renames the legacy LLaVA prefixes for this model_type, but lm_head's only
    # for its own class: a remote-code repo ships the name its class uses.
    _rewrite_weights(
        folder,
        lambda t: {
            ("lm_head.weight" if k == "language_model.lm_head.weight" else k): v
            for k, v in t.items()
        },
    )

    native = create(f"hf:{folder}", device="cpu").loaded.model
    assert type(native).__name__ == "LlavaForConditionalGeneration"
    remote = create(f"hf:{folder}", device="cpu", trust_remote_code=True).loaded.model
    assert type(remote).__name__ == "RemoteLlava"


def test_a_processor_that_fails_to_load_is_one_line(replica, tmp_path, cli, photos):
    """A chat VLM whose processor cannot load used to fall back to no processor and fail every
    image with "'NoneType' object is not callable"."""
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("llava15"), tmp_path / "noproc")
    config = json.loads((folder / "processor_config.json").read_text())
    config["processor_class"] = "NoSuchProcessor"
    (folder / "processor_config.json").write_text(json.dumps(config))
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["processor_class"] = "NoSuchProcessor"
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    line = _one_line_error(cli, photos, "--model", f"hf:{folder}")
    assert "processor (NoSuchProcessor) cannot be loaded" in line and "NoneType" not in line
