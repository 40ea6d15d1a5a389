"""HFCausalLLM on a tiny random Llama: batching, padding, stop strings, sampling, templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from captionkit.llm import ChatMessage, load_llm
from captionkit.types import Decoding

torch = pytest.importorskip("torch")

PROMPTS = [
    "a dog",
    "two children play football in a park while a man in a red shirt rides past them",
    "the sun sets",
    "a black and white cat sleeps on a sofa near the window",
    "people walk",
]


def convs(prompts):
    return [[ChatMessage("system", "Be brief."), ChatMessage("user", p)] for p in prompts]


@pytest.fixture(scope="module")
def llm(tiny_llm_dir):
    model = load_llm("hf:" + str(tiny_llm_dir), batch_size=8)
    yield model
    model.close()


@pytest.fixture
def new_token_counts(llm, monkeypatch):
    """Record how many tokens each generate() call appended per row."""
    counts: list[int] = []
    original = llm.model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        counts.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(llm.model, "generate", spy)
    return counts


def test_loads_local_dir_with_left_padding_and_pad_fallback(llm, tiny_llm_dir):
    assert llm.label == f"hf:{tiny_llm_dir}"
    assert llm.device == "cpu"
    assert llm.tokenizer.padding_side == "left"
    # The tokenizer was saved without a pad token: eos stands in for it.
    assert llm.tokenizer.pad_token == "<|im_end|>"
    assert llm.tokenizer.eos_token_id in llm._eos_ids


def test_chat_uses_the_models_template(llm):
    prompt = llm.render_chat([ChatMessage("system", "S"), ChatMessage("user", "hi")])
    expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert prompt == expected + "<|im_start|>assistant\n"


def test_batched_answers_equal_single_answers_in_input_order(llm, new_token_counts):
    config = Decoding(max_new_tokens=8)
    batched = llm.chat(convs(PROMPTS), config)
    singles = [llm.chat(convs([p]), config)[0] for p in PROMPTS]
    assert batched == singles  # left padding changes nothing, order is the caller's
    assert all(a and a.replace(" ", "").isalpha() for a in batched)
    assert len(set(batched)) > 1  # different prompts, different answers
    assert new_token_counts and max(new_token_counts) <= 8


def test_small_batch_size_gives_same_answers(tiny_llm_dir, llm):
    config = Decoding(max_new_tokens=6)
    small = load_llm("hf:" + str(tiny_llm_dir), batch_size=2)
    assert small.chat(convs(PROMPTS), config) == llm.chat(convs(PROMPTS), config)


def test_greedy_is_deterministic_and_only_new_tokens_are_decoded(llm, new_token_counts):
    config = Decoding(max_new_tokens=10)
    first = llm.complete(PROMPTS[:2], config)
    assert first == llm.complete(PROMPTS[:2], config)
    assert new_token_counts == [10, 10]  # specials never win in the tiny model: full length
    for prompt, answer in zip(PROMPTS[:2], first, strict=True):
        assert not answer.startswith(prompt)


def test_stop_strings_trim_the_answer_and_stop_generation(llm, new_token_counts):
    conv = convs(["a woman holds an umbrella"])
    full = llm.chat(conv, Decoding(max_new_tokens=30))[0]
    assert len(full) > 12
    stop = full[8:11]
    cut = llm.chat(conv, Decoding(max_new_tokens=30, stop=(stop, "never-there")))[0]
    assert cut == full[: full.index(stop)].strip()
    assert stop not in cut
    assert new_token_counts[-1] < 30  # generation stopped early, not just trimmed


def test_sampling_is_reproducible_with_a_seed_and_leaves_global_rng_alone(llm):
    state = torch.get_rng_state()
    hot = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, seed=3)
    a = llm.chat(convs(PROMPTS[:3]), hot)
    b = llm.chat(convs(PROMPTS[:3]), hot)
    other = llm.chat(
        convs(PROMPTS[:3]), Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, seed=4)
    )
    assert a == b
    assert a != other
    assert torch.equal(state, torch.get_rng_state())


def test_empty_input_gives_empty_output(llm):
    assert llm.chat([], Decoding(max_new_tokens=80)) == []
    assert llm.complete([], Decoding(max_new_tokens=80)) == []


def test_model_without_chat_template_uses_a_plain_layout(tiny_llm_dir, tmp_path):
    plain = Path(shutil.copytree(tiny_llm_dir, tmp_path / "plain"))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    llm = load_llm(f"hf:{plain}")
    assert not llm.has_chat_template
    conv = [ChatMessage("system", "S"), ChatMessage("user", "a dog")]
    assert llm.render_chat(conv) == "System: S\nUser: a dog\nAssistant:"
    answers = llm.chat([conv], Decoding(max_new_tokens=5))
    assert len(answers) == 1 and answers[0]


def test_template_without_system_role_gets_it_folded_into_the_user_turn(
    llm, tiny_llm_dir, tmp_path
):
    strict = Path(shutil.copytree(tiny_llm_dir, tmp_path / "strict"))
    refuse = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
    )
    (strict / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = strict / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = refuse + llm.tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg))
    strict_llm = load_llm(f"hf:{strict}")
    conv = [ChatMessage("system", "Be brief."), ChatMessage("user", "a dog")]
    prompt = strict_llm.render_chat(conv)
    assert prompt == "<|im_start|>user\nBe brief.\n\na dog<|im_end|>\n<|im_start|>assistant\n"


def test_an_adapter_on_the_wrong_base_is_one_line(tiny_llm_dir, tmp_path):
    """An adapter folder whose base does not fit it fails as a ModelLoadError, not a traceback."""
    pytest.importorskip("peft")
    import peft
    import transformers

    from captionkit.errors import ModelLoadError

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        tmp_path
    )
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    shutil.copytree(tiny_llm_dir, tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["hidden_size"], cfg["intermediate_size"] = 32, 64  # a different base shape
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in cfg.items() if k in ("vocab_size", "hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    })).save_pretrained(tmp_path / "other")  # fmt: skip
    config["base_model_name_or_path"] = str(tmp_path / "other")
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    transformers.AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot apply the adapter"):
        load_llm(f"hf:{tmp_path}")
