"""Tiny replicas of real Hugging Face repos, laid out as the published ones are.

Each builder writes what the real repo ships — ``config.json`` with its published keys (sizes
shrunk), the processor/preprocessor config, a tokenizer with the repo's special tokens and
chat template, ``generation_config.json`` and safetensors under the repo's own weight names
(``language_model.model.layers.0...`` for a LLaVA saved by transformers 4.x, ``model.layers`` and
``visual.blocks`` for Qwen2-VL...) — so the tests exercise what transformers 5 must convert on
load. Layouts and names are public facts (model cards, ``model.safetensors.index.json``); the
tokenizers are word-level stand-ins and the weights are random, steered off special tokens so
every caption is non-empty text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from helpers.replicas.captioners import (
    build_blip,
    build_florence2_community,
    build_git,
    build_vit_gpt2,
)
from helpers.replicas.chat import (
    build_deepseek_ai_original,
    build_deepseek_vl,
    build_qwen2_vl,
    build_smolvlm,
)
from helpers.replicas.llava import (
    JOYCAPTION_SYSTEM,
    LLAVA_TEMPLATE,
    build_joycaption,
    build_llava15,
)
from helpers.replicas.pieces import Replica

__all__ = ["BUILDERS", "JOYCAPTION_SYSTEM", "LLAVA_TEMPLATE", "Replica", "copy_replica"]


BUILDERS: dict[str, Callable[[Path], Replica]] = {
    "vit_gpt2": build_vit_gpt2,
    "blip": build_blip,
    "git": build_git,
    "florence2": build_florence2_community,
    "smolvlm": build_smolvlm,
    "llava15": build_llava15,
    "joycaption": build_joycaption,
    "deepseek_vl": build_deepseek_vl,
    "qwen2_vl": build_qwen2_vl,
    "deepseek_ai": build_deepseek_ai_original,
}


def copy_replica(replica: Replica, out: Path) -> Path:
    """A private copy to break (drop a tensor, add remote code), leaving the shared one intact."""
    shutil.copytree(replica.path, out)
    return out
