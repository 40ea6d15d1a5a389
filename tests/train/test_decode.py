"""Decoding settings: greedy, beam, nucleus with temperature, validated and saved."""

from __future__ import annotations

import pytest

from captionkit.errors import ConfigError
from captionkit.llm.hf_decoding import generate_kwargs
from captionkit.train.decode import apply, decode_texts, decoding_from_flags
from captionkit.types import Decoding


def test_generate_kwargs_per_strategy():
    assert generate_kwargs(decoding_from_flags("greedy")) == {
        "max_new_tokens": 40, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0,
    }  # fmt: skip
    beam = generate_kwargs(decoding_from_flags("beam", num_beams=4, max_new_tokens=20))
    assert beam["num_beams"] == 4 and beam["do_sample"] is False and beam["max_new_tokens"] == 20
    nucleus = generate_kwargs(decoding_from_flags("nucleus", top_p=0.8, temperature=0.7))
    assert nucleus["do_sample"] and nucleus["top_p"] == 0.8 and nucleus["temperature"] == 0.7
    assert nucleus["top_k"] == 0  # nucleus alone, not top-k on top of it


def test_flags_build_the_one_decoding_type():
    """The train CLI's flags become the same Decoding the caption side uses."""
    assert decoding_from_flags("beam", num_beams=4) == Decoding(max_new_tokens=40, num_beams=4)
    nucleus = decoding_from_flags("nucleus", top_p=0.8, temperature=0.7, max_new_tokens=12)
    assert nucleus == Decoding(max_new_tokens=12, do_sample=True, top_p=0.8, temperature=0.7)


@pytest.mark.parametrize(
    "kwargs",
    [{"strategy": "topk"}, {"strategy": "beam", "num_beams": 1}, {"top_p": 0.0},
     {"temperature": 0.0}, {"max_new_tokens": 0}],
)  # fmt: skip
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        decoding_from_flags(**kwargs)


def test_settings_become_the_saved_generation_defaults():
    from transformers import GenerationConfig

    config = GenerationConfig(top_p=0.5, temperature=0.3)
    apply(decoding_from_flags("beam", num_beams=3), config)
    assert config.num_beams == 3 and config.do_sample is False and config.top_p is None
    assert config.early_stopping is True
    config.validate()  # nothing left that would warn when the model loads


def test_decode_texts_handles_trainer_padding():
    class Tok:
        pad_token_id = 0

        def batch_decode(self, rows, skip_special_tokens=True):
            return [" ".join(f"w{i}" for i in row if i) + "  " for row in rows]

    assert decode_texts(Tok(), [[5, 6, -100], [7, -100, -100]]) == ["w5 w6", "w7"]
