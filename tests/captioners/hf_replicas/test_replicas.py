"""Every row of the README's model table, as a tiny replica of the real repo, through the CLI.

For each: captions come out of ``captionkit caption``, a batch equals the same images one by
one, and the checkpoint's tensors (under the repo's own names) reached the model.
"""

from __future__ import annotations

import json

import pytest

#: Replicas that caption on this install (transformers 5, no torchvision needed).
CAPTIONING = [
    "vit_gpt2",
    "blip",
    "git",
    "florence2",
    "smolvlm",
    "llava15",
    "joycaption",
    "deepseek_vl",
]


def _options(options: dict) -> list[str]:
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _caption(cli, photos, replica, *extra: str) -> dict[str, str]:
    code, out, err = cli(
        "caption",
        photos,
        "--model",
        f"hf:{replica.path}",
        "--device",
        "cpu",
        "--format",
        "jsonl",
        "--store",
        "none",
        "--max-new-tokens",
        "5",
        "--no-progress",
        *_options(replica.options),
        *extra,
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert all(r["error"] is None for r in records), records
    return {r["source"].rsplit("/", 1)[-1]: r["text"] for r in records}


@pytest.mark.parametrize("name", CAPTIONING)
def test_cli_captions_and_batched_equals_one_by_one(name, replica, photos, cli):
    rep = replica(name)
    batched = _caption(cli, photos, rep, "--batch-size", "3")
    assert set(batched) == {"a.png", "b.png", "c.png"}
    assert all(text.strip() for text in batched.values()), batched
    single = _caption(cli, photos, rep, "--batch-size", "1")
    assert single == batched


@pytest.mark.parametrize("name", [*CAPTIONING, "qwen2_vl"])
def test_checkpoint_tensors_reach_the_model(name, replica):
    """The tensor stored under the real repo's name is the model's parameter, bit for bit
    (a renamed or dropped tensor would leave a random one)."""
    import torch
    from safetensors import safe_open

    from captionkit.captioners.hf_loading import inspect_checkpoint, load_weights

    rep = replica(name)
    stored_name, param_name = rep.probe
    with safe_open(str(rep.path / "model.safetensors"), "pt") as handle:
        stored = handle.get_tensor(stored_name)
    model = load_weights(inspect_checkpoint(str(rep.path)), "cpu", torch.float32)
    assert torch.equal(model.get_parameter(param_name).detach(), stored.float())


def test_joycaption_string_template_and_system_prompt(replica):
    """JoyCaption's template calls .replace on the content (a list made every image fail
    with "'list object' has no attribute 'replace'"): a string turn is sent, with the
    model card's system prompt, and the template's own image tokens appear once."""
    from captionkit.captioners.registry import create
    from helpers.replicas import JOYCAPTION_SYSTEM

    rep = replica("joycaption")
    captioner = create(f"hf:{rep.path}", device="cpu", system_prompt=JOYCAPTION_SYSTEM)
    form = captioner.chat_form
    assert not form.structured and form.image_tag == ""
    text = form.render("Write a short caption.", JOYCAPTION_SYSTEM)
    assert text.count("<|reserved_special_token_69|>") == 1
    assert JOYCAPTION_SYSTEM in text and "Write a short caption." in text
    assert text.index(JOYCAPTION_SYSTEM) < text.index("<|reserved_special_token_69|>")


def test_structured_templates_keep_structured_content(replica):
    from captionkit.captioners.registry import create

    for name in ("llava15", "smolvlm", "deepseek_vl"):
        captioner = create(f"hf:{replica(name).path}", device="cpu")
        assert captioner.chat_form.structured, name


def test_system_prompt_reaches_structured_templates(replica):
    from captionkit.captioners.registry import create

    captioner = create(f"hf:{replica('deepseek_vl').path}", device="cpu", system_prompt="Be brief.")
    text = captioner.chat_form.render("Describe.", "Be brief.")
    assert text.startswith("Be brief.") and "language and vision assistant" not in text


def test_template_without_system_turn_refuses_system_prompt(replica, tmp_path):
    from captionkit.captioners.registry import create
    from captionkit.errors import ConfigError
    from helpers.replicas import LLAVA_TEMPLATE, copy_replica

    folder = copy_replica(replica("llava15"), tmp_path / "nosystem")
    refusing = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + LLAVA_TEMPLATE
    )
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": refusing}))
    captioner = create(f"hf:{folder}", device="cpu", system_prompt="Be brief.")
    with pytest.raises(ConfigError, match="system"):
        captioner.chat_form  # noqa: B018


def test_llama3_prompt_has_one_bos(replica):
    """A template that writes <|begin_of_text|> itself, tokenized by a tokenizer that adds it
    too, would start the prompt with two BOS tokens."""
    from PIL import Image

    from captionkit.captioners.registry import create
    from captionkit.types import CaptionRequest
    from helpers.replicas import JOYCAPTION_SYSTEM

    rep = replica("joycaption")
    captioner = create(f"hf:{rep.path}", device="cpu", system_prompt=JOYCAPTION_SYSTEM)
    batch = captioner._chat_inputs([Image.new("RGB", (40, 40))], CaptionRequest())
    bos = captioner.loaded.tokenizer.bos_token_id
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == bos and ids.count(bos) == 1


TEXT_ONLY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def test_template_that_drops_image_parts_gets_the_image_token_written(
    replica, tmp_path, cli, photos
):
    """Fine-tunes often ship a text-only chat template: structured image parts would vanish
    (and the processor would find no image token), so the token goes into a string turn."""
    from captionkit.captioners.registry import create
    from helpers.replicas import copy_replica

    folder = copy_replica(replica("llava15"), tmp_path / "textonly")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": TEXT_ONLY_TEMPLATE}))
    form = create(f"hf:{folder}", device="cpu").chat_form
    assert not form.structured and form.image_tag == "<image>"
    assert form.render("Describe.").startswith("user: <image>\nDescribe.")
    rep = replica("llava15")
    captions = _caption(cli, photos, type(rep)(rep.repo, folder, rep.probe))
    assert all(text.strip() for text in captions.values())
