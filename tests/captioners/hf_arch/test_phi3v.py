"""microsoft/Phi-3.5-vision-instruct in process on transformers 5 (issue #12 item 3).

The repo's remote code no longer imports on transformers 5; captionkit runs the checkpoint with
transformers' Phi-3 and CLIP plus its own HD image embedding. The replica (``phi3v_replica.py``)
is laid out like the real repo with tiny sizes and the published weight names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))  # the replica helper beside this file

import phi3v_replica
import torch
from PIL import Image

from captionkit.captioners import hf_arch
from captionkit.captioners.hf_arch import phi3v
from captionkit.captioners.hf_arch.phi3v.processing import Phi3VImageProcessor
from captionkit.captioners.registry import create
from captionkit.cli.main import run
from captionkit.errors import ConfigError, ModelLoadError
from captionkit.types import CaptionRequest, Decoding
from helpers.images import write_image

SHORT = CaptionRequest(decoding=Decoding(max_new_tokens=8))
PROMPT = "<|user|>\n<|image_1|>\ndescribe this image<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="session")
def replica(tmp_path_factory) -> Path:
    return phi3v_replica.build(tmp_path_factory.mktemp("phi35-vision"))


@pytest.fixture(scope="session")
def loaded(replica):
    raw = hf_arch.read_raw_config(str(replica))
    return phi3v.load(str(replica), raw, device="cpu", dtype=torch.float32)


def _images() -> list[Image.Image]:
    return [
        Image.new("RGB", (64, 48), (200, 30, 30)),
        Image.new("RGB", (30, 90), (10, 180, 10)),
        Image.new("RGB", (200, 60), (0, 0, 200)),
    ]


def _greedy(model, batch, n=8) -> list[list[int]]:
    """Generated ids per row, up to and including the first end token."""
    out = model.generate(**batch, max_new_tokens=n, do_sample=False)
    ends = set(model.generation_config.eos_token_id)
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        stop = next((i for i, t in enumerate(row) if t in ends), len(row) - 1)
        rows.append(row[: stop + 1])
    return rows


# -- recognising the layout ---------------------------------------------------------------
def test_matches_the_published_layout_only(replica):
    raw = json.loads((replica / "config.json").read_text())
    assert phi3v.matches(raw)
    assert hf_arch.find(raw) is phi3v
    assert not phi3v.matches({"model_type": "phi3", "hidden_size": 3072})  # Phi-3.5-mini
    assert not phi3v.matches({"model_type": "phi3_v"})  # no image section: not this layout
    assert not phi3v.matches({"model_type": "llava", "img_processor": {}})


# -- weights ------------------------------------------------------------------------------
def test_every_checkpoint_tensor_reaches_the_model(replica, loaded):
    from safetensors.torch import load_file

    model, _ = loaded
    state = model.state_dict()
    index = json.loads((replica / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert names == set(phi3v_replica.tensor_shapes(model.config.vocab_size))
    found = {}
    for shard in sorted(set(index["weight_map"].values())):
        for name, tensor in load_file(str(replica / shard)).items():
            # transformers 5 keeps CLIPVisionModel's weights without the vision_model. level
            key = (
                name
                if name in state
                else name.replace("img_processor.vision_model.", "img_processor.")
            )
            assert key in state, name
            assert torch.equal(state[key], tensor), name
            found[key] = name
    assert set(found) == set(state), "model parameters the checkpoint did not fill"
    assert len(found) == len(names)


def test_missing_tensor_is_one_line_error(tmp_path_factory, tmp_path, capsys):
    broken = phi3v_replica.build(
        tmp_path_factory.mktemp("phi35-broken"), drop=("model.vision_embed_tokens.sub_GN",)
    )
    from captionkit.captioners.hf_loading import load_model

    with pytest.raises(ModelLoadError) as err:
        load_model(str(broken), device="cpu")
    message = str(err.value)
    assert "\n" not in message and "sub_GN" in message and "random weights" in message

    write_image(tmp_path / "imgs" / "a.png")
    with pytest.raises(SystemExit) as exited:
        run(["caption", str(tmp_path / "imgs"), "--model", f"hf:{broken}", "--store", "none"])
    err_text = capsys.readouterr().err
    assert exited.value.code == 2
    lines = [line for line in err_text.splitlines() if line.strip()]
    assert any("sub_GN" in line for line in lines) and "Traceback" not in err_text


def test_wrong_shape_is_one_line_error(tmp_path_factory):
    from safetensors.torch import load_file, save_file

    broken = phi3v_replica.build(tmp_path_factory.mktemp("phi35-shape"))
    shard = broken / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    tensors["model.vision_embed_tokens.glb_GN"] = torch.zeros(1, 1, 8)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"glb_GN: \(1, 1, 8\) in the checkpoint"):
        phi3v.load(str(broken), hf_arch.read_raw_config(str(broken)), device="cpu")


def test_image_section_that_contradicts_the_tower_is_refused(replica):
    raw = json.loads((replica / "config.json").read_text())
    raw["img_processor"]["num_img_tokens"] = 144  # the real value, but this tower makes 4
    with pytest.raises(ModelLoadError, match="num_img_tokens 144"):
        phi3v.load(str(replica), raw, device="cpu")


def test_truncated_shard_is_one_line_error(tmp_path_factory):
    broken = phi3v_replica.build(tmp_path_factory.mktemp("phi35-truncated"))
    shard = broken / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # an interrupted download
    with pytest.raises(ModelLoadError) as err:
        phi3v.load(str(broken), hf_arch.read_raw_config(str(broken)), device="cpu")
    assert "\n" not in str(err.value) and "Phi-3-vision checkpoint" in str(err.value)


def test_su_rope_becomes_native_longrope(loaded, replica):
    model, _ = loaded
    raw = json.loads((replica / "config.json").read_text())
    rope = model.config.rope_parameters
    assert raw["rope_scaling"]["type"] == "su"  # the published name, which Phi3Config rejects
    assert rope["rope_type"] == "longrope"
    assert rope["long_factor"] == raw["rope_scaling"]["long_factor"]
    assert rope["short_factor"] == raw["rope_scaling"]["short_factor"]
    assert rope["original_max_position_embeddings"] == 4096


def _published_config() -> dict:
    """config.json of microsoft/Phi-3.5-vision-instruct (rope factor values abridged)."""
    return {
        "_name_or_path": "Phi-3.5-vision-instruct",
        "architectures": ["Phi3VForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_phi3_v.Phi3VConfig"},
        "bos_token_id": 1,
        "embd_layer": {
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 3072,
        "img_processor": {
            "image_dim_out": 1024,
            "model_name": "openai/clip-vit-large-patch14-336",
            "name": "clip_vision_model",
            "num_img_tokens": 144,
        },
        "intermediate_size": 8192,
        "max_position_embeddings": 131072,
        "model_type": "phi3_v",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": [1.08] * 48, "short_factor": [1.08] * 48, "type": "su"},
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": 32064,
        "_attn_implementation": "flash_attention_2",
    }


def test_published_config_builds_the_published_weights():
    """At full size (on the meta device: no memory), the model has exactly the published
    tensor names and shapes: 4.15B parameters, a CLIP ViT-L/14-336 tower, 4096 -> 3072 MLP."""
    from captionkit.captioners.hf_arch.phi3v.model import Phi3VForCausalLM

    raw = _published_config()
    spec = phi3v.vision_spec("microsoft/Phi-3.5-vision-instruct", raw)
    assert spec["tokens_per_side"] == 12 and spec["layer_idx"] == -2
    cfg = phi3v.text_config("microsoft/Phi-3.5-vision-instruct", raw, spec)
    cfg.image_token_id = 32063
    with torch.device("meta"):
        model = Phi3VForCausalLM(cfg)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    lm = dict(hidden=3072, layers=32, heads=32, intermediate=8192)
    vision = {**phi3v.CLIP_L14_336, "image_size": 336, "patch_size": 14}
    published = phi3v_replica.tensor_shapes(32064, lm, vision)
    renamed = {
        k.replace("img_processor.vision_model.", "img_processor."): v for k, v in published.items()
    }
    assert state == renamed
    assert 4.1e9 < sum(p.numel() for p in model.parameters()) < 4.2e9
    assert model.config.rope_parameters["rope_type"] == "longrope"


def test_loading_is_quiet(replica, capfd):
    """No transformers chatter about LongRoPE field styles or weight reports on a good load."""
    raw = hf_arch.read_raw_config(str(replica))
    capfd.readouterr()
    phi3v.load(str(replica), raw, device="cpu")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_loading_never_asks_to_run_the_repos_code(replica, monkeypatch):
    """config.json's auto_map made AutoTokenizer ask "run the custom code? [y/N]" on the
    terminal (a hang in a batch job); the tokenizer is loaded without reading it."""
    asked = []
    monkeypatch.setattr("builtins.input", lambda *a, **k: asked.append(a) or "n")
    raw = hf_arch.read_raw_config(str(replica))
    phi3v.load_processor(str(replica), raw)
    assert asked == []


def test_placeholder_id_is_one_no_text_produces():
    tok = phi3v_replica.build_tokenizer()
    spare = len(tok) + 5
    assert phi3v.placeholder_id(tok, spare) == spare - 1  # an embedding row no token uses
    assert phi3v.placeholder_id(tok, len(tok)) == tok.unk_token_id  # no spare row: <unk>
    tok.add_special_tokens({"additional_special_tokens": ["<|image|>"]})
    image = tok.convert_tokens_to_ids("<|image|>")
    assert phi3v.placeholder_id(tok, spare) == image


def test_unknown_words_in_the_prompt_are_not_image_slots(loaded):
    """A word the tokenizer does not know becomes <unk>: it must not count as an image token
    (with <unk> as the placeholder, the hf backend's style instruction broke the prompt)."""
    model, processor = loaded
    prompt = PROMPT.replace("describe this image", "describe zyzzyva image")
    batch = processor(prompt, [_images()[0]])
    assert processor.tokenizer.unk_token_id in batch["input_ids"][0].tolist()
    assert len(_greedy(model, batch)[0]) >= 3


# -- the HD transform ----------------------------------------------------------------------
def _published_count(rows: int, cols: int) -> int:
    """The token count as the model card's numbers give it: 144 per tile and for the global
    view, one separator per token row (12 per tile row, 12 for the global view), one between."""
    return (rows * cols + 1) * 144 + 1 + (rows + 1) * 12


@pytest.mark.parametrize(
    ("size", "num_crops", "grid"),
    [
        ((336, 336), 16, (4, 4)),  # square: 4x4 tiles fill the budget
        ((1920, 1080), 16, (3, 5)),  # 5 tiles wide (5 * ceil(5/1.78) = 15 <= 16), 945 px high
        ((1080, 1920), 16, (5, 3)),  # portrait: the same grid, transposed
        ((640, 480), 4, (2, 2)),
        ((1000, 100), 4, (1, 4)),  # a banner: 4 tiles in one row
        ((100, 1000), 1, (1, 1)),  # one tile and the global view
    ],
)
def test_hd_grid_and_token_count_match_the_published_geometry(size, num_crops, grid):
    proc = Phi3VImageProcessor(num_crops=num_crops, crop_size=336, tokens_per_side=12)
    assert proc.grid(*size) == grid
    assert proc.num_image_tokens(*grid) == _published_count(*grid)
    tiles, (height, width) = proc.preprocess_one(Image.new("RGB", size, (90, 90, 90)))
    assert (height, width) == (grid[0] * 336, grid[1] * 336)
    assert tiles.shape == (grid[0] * grid[1] + 1, 3, 336, 336)


def test_hd_padding_is_white_and_centred():
    proc = Phi3VImageProcessor(num_crops=2, crop_size=56, tokens_per_side=2)
    # 112 x 42 fits 2 tiles wide as it is, then is padded to 56 high: 7 white rows each side
    tiles, size = proc.preprocess_one(Image.new("RGB", (112, 42), (0, 0, 0)))
    assert size == (56, 112)
    mean, std = torch.tensor(proc.image_mean)[:, None], torch.tensor(proc.image_std)[:, None]
    white, black = ((1.0 - mean) / std).squeeze(1), ((0.0 - mean) / std).squeeze(1)
    for tile in tiles[1:]:
        assert torch.allclose(tile[:, :7].mean(dim=(1, 2)), white, atol=1e-4)
        assert torch.allclose(tile[:, 7:49].mean(dim=(1, 2)), black, atol=1e-4)
        assert torch.allclose(tile[:, 49:].mean(dim=(1, 2)), white, atol=1e-4)


def test_processor_expands_the_image_tag(loaded):
    _, processor = loaded
    image = Image.new("RGB", (200, 60), (0, 0, 200))  # ratio 3.3 -> 1 x 3 tiles of 56 px
    batch = processor(PROMPT, [image], return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    g = 2  # 56 px tiles of 14 px patches: 4 x 4 patches merged 2 x 2
    expected = 1 * g * (3 * g + 1) + 1 + g * (g + 1)
    assert ids.count(processor.image_token_id) == expected == 21
    tok = processor.tokenizer
    # the published processor's sequence: each text piece tokenised on its own, BOS included
    text_ids = [tok.bos_token_id, tok.convert_tokens_to_ids("<|user|>")]
    text_ids += [tok.bos_token_id, *tok.convert_tokens_to_ids(["describe", "this", "image"])]
    text_ids += tok.convert_tokens_to_ids(["<|end|>", "<|assistant|>"])
    assert ids == text_ids[:2] + [processor.image_token_id] * expected + text_ids[2:]
    assert batch["pixel_values"].shape == (1, 4 + 1, 3, 56, 56)  # num_crops 4 from the repo
    assert batch["image_sizes"].tolist() == [[56, 168]]
    with pytest.raises(ValueError, match="image_2"):
        processor(PROMPT.replace("image_1", "image_2"), [image])


def test_image_features_are_laid_out_as_the_picture(loaded):
    """Tiles left to right, top to bottom, each token row ended by sub_GN; then glb_GN; then the
    global view with its own row separators (hd_transform_order "sub_glb")."""
    from captionkit.captioners.hf_arch.phi3v.model import Phi3VImageEmbedding

    model, _ = loaded
    emb: Phi3VImageEmbedding = model.model.vision_embed_tokens
    side = 4  # patches per tile side
    rows, cols, tiles = 2, 3, 7

    class Tower(torch.nn.Module):
        dtype = torch.float32

        def forward(self, pixels, output_hidden_states=True):
            # channel 0: tile, 1: patch row, 2: patch col; 3: CLS marker
            n = pixels.shape[0]
            feats = torch.zeros(n, 1 + side * side, 16)
            for t in range(n):
                for r in range(side):
                    for c in range(side):
                        feats[t, 1 + r * side + c, :3] = torch.tensor([t, r, c])
            feats[:, 0, 3] = 99
            hidden = (feats + 1000, feats, feats + 1000)
            return type("Out", (), {"hidden_states": hidden})()

    real_tower, real_proj = emb.img_processor, emb.img_projection
    emb.img_processor, emb.img_projection = Tower(), torch.nn.Identity()
    try:
        out = emb(torch.zeros(1, tiles, 3, 56, 56), torch.tensor([[rows * 56, cols * 56]]))[0]
    finally:
        emb.img_processor, emb.img_projection = real_tower, real_proj
    g, width = 2, cols * 2 + 1
    sub = out[: rows * g * width].reshape(rows * g, width, 64)
    sub_gn = emb.sub_GN.reshape(-1)
    assert all(torch.equal(sub[r, -1], sub_gn) for r in range(rows * g))
    for y in range(rows * g):
        for x in range(cols * g):
            token = sub[y, x].reshape(4, 16)  # 2x2 patches: TL, TR, BL, BR
            tile = 1 + (y // g) * cols + (x // g)
            for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                patch_row, patch_col = 2 * (y % g) + dy, 2 * (x % g) + dx
                assert token[k, :3].tolist() == [tile, patch_row, patch_col]
                assert token[k, 3] == 0  # CLS dropped, layer -2 used
    rest = out[rows * g * width :]
    assert torch.equal(rest[0], emb.glb_GN.reshape(-1))
    glb = rest[1:].reshape(g, g + 1, 64)
    assert all(torch.equal(glb[r, -1], sub_gn) for r in range(g))
    assert glb[1, 1].reshape(4, 16)[3, :3].tolist() == [0, 3, 3]  # global view is tile 0
    assert len(out) == rows * g * width + 1 + g * (g + 1)


# -- captioning ----------------------------------------------------------------------------
def test_batched_equals_one_by_one(loaded, replica):
    model, processor = loaded
    processor.tokenizer.padding_side = "left"
    images = _images()
    singles = [_greedy(model, processor(PROMPT, [img]))[0] for img in images]
    batch = processor([PROMPT] * 3, images)  # three different token counts: left padding
    assert len(set(batch["attention_mask"].sum(dim=1).tolist())) == 3
    assert _greedy(model, batch) == singles

    captioner = create(f"hf:{replica}", device="cpu")
    inputs = [captioner.preprocess(img, SHORT) for img in images]
    together = [o.candidates[0].text for o in captioner.caption_batch(inputs, SHORT)]
    alone = [captioner.caption_batch([x], SHORT)[0].candidates[0].text for x in inputs]
    assert together == alone and all(together)


def test_beams_penalties_and_ranked_candidates(replica):
    """Placeholders are a real token id, so repetition penalties (which index the vocabulary
    with every prompt id) work, as do beams and N ranked candidates."""
    captioner = create(f"hf:{replica}", device="cpu")
    request = CaptionRequest(
        decoding=Decoding(max_new_tokens=6, num_beams=2, repetition_penalty=1.3), num_captions=2
    )
    image = _images()[0]
    out = captioner.caption_batch([captioner.preprocess(image, request)], request)[0]
    assert out.error is None and len(out.candidates) == 2
    assert all(c.text and c.score is not None for c in out.candidates)


def test_num_crops_from_the_repo_and_overridden(replica):
    raw = hf_arch.read_raw_config(str(replica))
    assert phi3v.load_processor(str(replica), raw).image_processor.num_crops == 4
    model, processor = phi3v.load(
        str(replica), raw, device="cpu", processor_options={"num_crops": 1}
    )
    batch = processor(PROMPT, [Image.new("RGB", (200, 60))])
    assert batch["pixel_values"].shape[1] == 2  # one tile and the global view
    assert batch["input_ids"][0].tolist().count(processor.image_token_id) == 2 * 3 + 1 + 2 * 3
    assert len(_greedy(model, batch)[0]) >= 3
    captioner = create(f"hf:{replica}", device="cpu", num_crops=2)
    assert captioner.loaded.image_processor.num_crops == 2
    with pytest.raises(ConfigError, match="max_pixels"):
        phi3v.load(str(replica), raw, device="cpu", processor_options={"max_pixels": 10_000})


def test_bfloat16(replica):
    captioner = create(f"hf:{replica}", device="cpu", dtype="bfloat16")
    image = _images()[2]
    out = captioner.caption_batch([captioner.preprocess(image, SHORT)], SHORT)[0]
    assert captioner.loaded.model.dtype == torch.bfloat16
    assert out.error is None and out.candidates[0].text


def test_caption_folder_through_the_cli(replica, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_image(folder / "red.jpg", size=(64, 48), color=(220, 20, 20))
    write_image(folder / "wide.png", size=(200, 60), color=(20, 20, 220))
    write_image(folder / "sub" / "tall.jpg", size=(30, 90), color=(20, 200, 20))
    args = ["caption", str(folder), "--model", f"hf:{replica}", "--store", "none"]
    with pytest.raises(SystemExit) as exited:
        run([*args, "--format", "jsonl", "--max-new-tokens", "6"])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None and row["text"].strip()
        assert "<|" not in row["text"] and "<unk>" not in row["text"]
        assert row["model"] == str(replica.resolve())
