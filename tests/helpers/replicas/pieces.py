"""The parts every replica is made of: JSON files, a tokenizer with the repo's special
tokens, generation_config.json, and safetensors under the repo's own weight names."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.tiny_models import WORDS

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
RESCALE = 0.00392156862745098


@dataclass
class Replica:
    """A built replica: its folder, the real repo it stands for, and how to check it loaded."""

    repo: str
    path: Path
    #: A tensor name as the real checkpoint spells it, and the model parameter it must reach.
    probe: tuple[str, str]
    #: ``-o`` options the real repo needs (README table).
    options: dict[str, Any] = field(default_factory=dict)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def tokenizer(
    out: Path,
    *,
    specials: dict[str, str],
    extra_special: tuple[str, ...] = (),
    chat_template: str | None = None,
    template: str | None = None,
    extra_tokens: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
):
    """A word-level fast tokenizer carrying the repo's special tokens, saved into ``out``.

    ``specials`` maps roles (bos_token, eos_token, pad_token, unk_token, cls_token, sep_token)
    to the repo's token strings; ``template`` is a post-processor template ("[CLS] $A [SEP]");
    ``chat_template`` is written into tokenizer_config.json as the repo has it there.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ordered = list(dict.fromkeys([*specials.values(), *extra_special]))
    vocab = {tok: i for i, tok in enumerate([*ordered, *WORDS, ".", ",", "?", ":", "!"])}
    unk = specials.get("unk_token", ordered[0])
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if template:
        used = [t for t in template.split() if t in vocab]
        tk.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, vocab[t]) for t in used]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        additional_special_tokens=[t for t in extra_special if t not in specials.values()] or None,
        **specials,
        **({"extra_special_tokens": extra_tokens} if extra_tokens else {}),
    )
    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(config or {})
    if chat_template:
        cfg["chat_template"] = chat_template
    write_json(cfg_path, cfg)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return tok


def generation(out: Path, tok: Any, **fields: Any) -> None:
    """generation_config.json with the repo's ids, plus the steering random weights need."""
    eos = fields.pop("eos_token_id", tok.eos_token_id)
    eos_ids = eos if isinstance(eos, list) else [eos]
    data = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": tok.pad_token_id,
        **fields,
        # Steering (not in the real file): random weights must not stop at once or babble
        # special tokens.
        "min_new_tokens": 3,
        "suppress_tokens": [i for i in tok.all_special_ids if i not in eos_ids],
    }
    write_json(out / "generation_config.json", {k: v for k, v in data.items() if v is not None})


def weights(
    out: Path,
    model: Any,
    renames: list[tuple[str, str]] = (),  # type: ignore[assignment]
    extra: dict[str, Any] | None = None,
) -> None:
    """Save the model's tensors under the real repo's names: transformers' own save (which
    drops tied copies) with each name's prefix rewritten as the repo spells it."""
    import tempfile

    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tensors = load_file(str(Path(tmp) / "model.safetensors"))
    renamed = {}
    for name, tensor in tensors.items():
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        renamed[name] = tensor.contiguous()
    renamed.update(extra or {})
    save_file(renamed, str(out / "model.safetensors"), metadata={"format": "pt"})


def model_from_config(out: Path, factory: Callable[[Any], Any] | None = None) -> Any:
    """The model transformers builds from the replica's config.json (random, seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(out)
    build = factory or AutoModelForImageTextToText.from_config
    return build(config)


def tiny_llama(tok: Any, **extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": len(tok),
        "model_type": "llama",
        **extra,
    }
