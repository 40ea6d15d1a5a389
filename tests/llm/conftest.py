"""Tiny randomly initialised causal LMs built in the test session (no downloads).

``tiny_llm_dir`` is a Llama with a byte-level BPE tokenizer trained here on a few sentences
and a ChatML chat template; ``tiny_gguf`` is the same kind of model written as a GGUF file
with the ``gguf`` package, so the GGUF -> checkpoint conversion runs for real in seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SENTENCES = [
    "a dog runs on the beach",
    "two children play football in a park",
    "a man in a red shirt rides a bicycle down the street",
    "a black and white cat sleeps on a sofa",
    "people walk past a shop with a blue sign",
    "a woman holds an umbrella in the rain",
    "the sun sets over the sea behind a boat",
] * 4
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, eos_id: int, bos_id: int, seed: int = 0, never=()):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
        initializer_range=0.2,  # decisive logits: greedy choices far from ties
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Logit exactly 0 for the special tokens, while the best of ~300 random logits is
        # always above 0: the model never ends early, so every answer has text to check.
        for token_id in never:
            model.lm_head.weight[token_id].fill_(0.0)
    return model


def special_ids(tok) -> set[int]:
    """Tokens the tiny models never emit: specials (so they never stop early) and anything
    that is not lower-case letters or spaces (so outputs are readable and stop strings can be
    cut from them exactly)."""
    allowed = re.compile(r"^[ a-z]+$")
    return {
        i
        for i in range(len(tok))
        if not allowed.match(tok.decode([i])) or tok.convert_ids_to_tokens(i) in SPECIALS
    }


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llm")
    tok = build_tokenizer()
    model = build_model(len(tok), tok.eos_token_id, tok.bos_token_id, never=special_ids(tok))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_tiny_gguf(path: Path) -> Path:
    """A llama-architecture GGUF with gpt2-style BPE tokenizer metadata (all f32)."""
    import gguf

    tok = build_tokenizer()
    model = build_model(len(tok), tok.eos_token_id, tok.bos_token_id, 1, special_ids(tok))
    cfg = model.config
    state = json.loads(tok.backend_tokenizer.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    specials = special_ids(tok)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for _, i in vocab]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for name, tensor in model.state_dict().items():
        if name in names:
            writer.add_tensor(names[name], tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf")
