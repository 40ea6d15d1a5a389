"""Tiny causal LMs and synthetic caption pairs for the writer-training tests (no download)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

LLM_CONFTEST = Path(__file__).resolve().parents[1] / "llm" / "conftest.py"

#: (facts, caption): a learnable mapping, so the loss visibly falls in a few steps.
FACTS = [
    ("dog, grass", "a dog runs on the grass"),
    ("cat, sofa", "a cat sleeps on a sofa"),
    ("man, bicycle, street", "a man rides a bicycle down the street"),
    ("children, park", "two children play football in a park"),
    ("woman, umbrella, rain", "a woman holds an umbrella in the rain"),
    ("boat, sea, sun", "the sun sets over the sea behind a boat"),
]


def _llm_conftest():
    spec = importlib.util.spec_from_file_location("llm_conftest_helpers", LLM_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_llama(out: Path, *, chat: bool = True) -> Path:
    """The tiny random Llama of tests/llm (byte-level BPE, ChatML template unless ``chat``
    is False: then the plain "User:/Assistant:" layout is exercised)."""
    helpers = _llm_conftest()
    tok = helpers.build_tokenizer()
    if not chat:
        tok.chat_template = None
    model = helpers.build_model(len(tok), tok.eos_token_id, tok.bos_token_id)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_pairs(path: Path, repeats: int = 4) -> Path:
    """Pairs JSONL in captionkit's layout: images 0-3 train, 4-5 eval."""
    rows = []
    for r in range(repeats):
        for i, (facts, caption) in enumerate(FACTS):
            msgs = [
                {"role": "system", "content": "Write a caption."},
                {"role": "user", "content": f"Facts: {facts}"},
                {"role": "assistant", "content": caption},
            ]
            rows.append(
                {
                    "id": f"img{i}#{r}",
                    "image": f"img{i}",
                    "split": "eval" if i >= 4 else "train",
                    "instruction": "Write a caption.",
                    "input": f"Facts: {facts}",
                    "output": caption,
                    "messages": msgs,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
