"""Decoding settings for validation and use: greedy, beam search, or nucleus sampling.

They are written into the saved model's generation config, so whatever loads the checkpoint
(``captionkit caption --model hf:DIR``) decodes the way validation did unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from captionkit.errors import ConfigError

STRATEGIES = ("greedy", "beam", "nucleus")


@dataclass(frozen=True)
class DecodeSettings:
    strategy: str = "greedy"
    num_beams: int = 3
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 40

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown decoding '{self.strategy}'; use {', '.join(STRATEGIES)}")
        if self.strategy == "beam" and self.num_beams < 2:
            raise ConfigError("beam decoding needs --num-beams 2 or more")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("--top-p must be in (0, 1]")
        if self.temperature <= 0:
            raise ConfigError("--temperature must be positive")
        if self.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens must be at least 1")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.strategy == "greedy":
            kwargs.update(do_sample=False, num_beams=1)
        elif self.strategy == "beam":
            kwargs.update(do_sample=False, num_beams=self.num_beams, early_stopping=True)
        else:
            kwargs.update(
                do_sample=True,
                num_beams=1,
                top_p=self.top_p,
                top_k=0,
                temperature=self.temperature,
            )
        return kwargs

    def apply(self, generation_config: Any) -> None:
        """Make these settings the model's defaults (saved with the checkpoint)."""
        for key, value in self.generate_kwargs().items():
            setattr(generation_config, key, value)
        if self.strategy != "nucleus":  # leave no sampling knobs that would warn at load
            generation_config.top_p = None
            generation_config.top_k = None
            generation_config.temperature = None
        if self.strategy != "beam":
            generation_config.early_stopping = None


def decode_texts(tokenizer: Any, sequences: Any) -> list[str]:
    """Generated ids (possibly padded with -100 by the Trainer) -> stripped texts."""
    import numpy as np

    arr = np.asarray(sequences)
    arr = np.where(arr < 0, tokenizer.pad_token_id, arr)
    texts = tokenizer.batch_decode(arr.tolist(), skip_special_tokens=True)
    return [" ".join(t.split()) for t in texts]
