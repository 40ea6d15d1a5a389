"""Decoding settings for validation and use: greedy, beam search, or nucleus sampling.

``captionkit train`` takes them as ``--decoding greedy|beam|nucleus`` with ``--num-beams``,
``--top-p`` and ``--temperature``; :func:`decoding_from_flags` turns those into the one
decoding-settings type, :class:`~captionkit.types.Decoding`, which the transformers adapter
(:mod:`captionkit.llm.hf_decoding`) gives to ``generate`` and writes into the saved model's
generation config, so whatever loads the checkpoint (``captionkit caption --model hf:DIR``)
decodes the way validation did unless told otherwise.
"""

from __future__ import annotations

from typing import Any

from captionkit.errors import ConfigError
from captionkit.types import Decoding

STRATEGIES = ("greedy", "beam", "nucleus")


def decoding_from_flags(
    strategy: str = "greedy",
    num_beams: int = 3,
    top_p: float = 0.9,
    temperature: float = 1.0,
    max_new_tokens: int = 40,
) -> Decoding:
    """The :class:`Decoding` that ``captionkit train``'s decoding flags describe.

    ``num_beams`` counts only for ``beam``, ``top_p`` and ``temperature`` only for
    ``nucleus`` (top-p alone: no top-k on top of it); bad values are one-line ConfigErrors.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown decoding '{strategy}'; use {', '.join(STRATEGIES)}")
    if strategy == "beam" and num_beams < 2:
        raise ConfigError("beam decoding needs --num-beams 2 or more")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError("--top-p must be in (0, 1]")
    if temperature <= 0:
        raise ConfigError("--temperature must be positive")
    if max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    if strategy == "beam":
        return Decoding(max_new_tokens=max_new_tokens, num_beams=num_beams)
    if strategy == "nucleus":
        return Decoding(
            max_new_tokens=max_new_tokens, do_sample=True, top_p=top_p, temperature=temperature
        )
    return Decoding(max_new_tokens=max_new_tokens)


def apply(decoding: Decoding, generation_config: Any) -> None:
    """Make ``decoding`` the model's defaults (saved with the checkpoint)."""
    from captionkit.llm.hf_decoding import save_as_defaults

    save_as_defaults(decoding, generation_config)


def decode_texts(tokenizer: Any, sequences: Any) -> list[str]:
    """Generated ids (possibly padded with -100 by the Trainer) -> stripped texts."""
    import numpy as np

    arr = np.asarray(sequences)
    arr = np.where(arr < 0, tokenizer.pad_token_id, arr)
    texts = tokenizer.batch_decode(arr.tolist(), skip_special_tokens=True)
    return [" ".join(t.split()) for t in texts]
