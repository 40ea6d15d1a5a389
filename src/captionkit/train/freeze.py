"""Which parts of an encoder-decoder captioner train and which stay frozen.

Specs (combinable, e.g. ``encoder`` + ``decoder-except-last-2``):

- ``none``: everything trains.
- ``encoder``: the whole vision encoder is frozen.
- ``decoder``: the whole decoder is frozen, its cross-attention included.
- ``decoder-except-last-N``: the decoder is frozen except its last N blocks and the final norm.
- ``cross-attention-only``: only the cross-attention layers (and the encoder-to-decoder
  projection, when the hidden sizes differ) train.

The encoder-to-decoder projection belongs to neither half and stays trainable unless
``cross-attention-only`` is the only thing asked for (where it is part of what trains).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from captionkit.errors import ConfigError

_CROSS = re.compile(r"cross_?att|encoder_attn|ln_cross|enc_to_dec_proj", re.IGNORECASE)
_EXCEPT_LAST = re.compile(r"^decoder-except-last-(\d+)$")
_FINAL_NORM = re.compile(r"(^|\.)(ln_f|norm|final_layer_norm|layer_norm|layernorm)\.")


@dataclass(frozen=True)
class FreezeReport:
    trainable: int
    total: int
    specs: tuple[str, ...]

    def line(self) -> str:
        pct = 100.0 * self.trainable / max(1, self.total)
        what = ", ".join(self.specs) or "none"
        return (
            f"trainable parameters: {self.trainable:,} of {self.total:,} ({pct:.1f}%), "
            f"frozen: {what}"
        )


def parse_specs(specs: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validate freeze specs; accepts comma-separated values too."""
    out: list[str] = []
    for raw in specs or ():
        for spec in (s.strip().lower() for s in raw.split(",")):
            if not spec or spec == "none":
                continue
            if spec in {"encoder", "decoder", "cross-attention-only"} or _EXCEPT_LAST.match(spec):
                out.append(spec)
            else:
                raise ConfigError(
                    f"unknown --freeze '{spec}'; use encoder, decoder, decoder-except-last-N "
                    "or cross-attention-only"
                )
    return tuple(dict.fromkeys(out))


def decoder_blocks(decoder: Any) -> list[tuple[str, Any]]:
    """The decoder's transformer blocks, found as its longest ``ModuleList`` of layers.

    Each architecture names them differently (``transformer.h``, ``model.layers``,
    ``bert.encoder.layer``); the block list is the ModuleList whose length is the layer count.
    """
    import torch

    n_layers = getattr(decoder.config, "num_hidden_layers", None) or getattr(
        decoder.config, "n_layer", None
    )
    best: tuple[str, Any] | None = None
    for name, module in decoder.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) > 0
            and (n_layers is None or len(module) == n_layers)
            and (best is None or len(module) > len(best[1]))
        ):
            best = (name, module)
    if best is None:
        raise ConfigError("cannot find the decoder's blocks to freeze; use --freeze decoder")
    name, blocks = best
    return [(f"{name}.{i}", block) for i, block in enumerate(blocks)]


def apply_freeze(model: Any, specs: tuple[str, ...]) -> FreezeReport:
    """Set ``requires_grad`` according to ``specs`` and count what still trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    if "cross-attention-only" in specs:
        for name, p in model.named_parameters():
            p.requires_grad_(bool(_CROSS.search(name)))
    if "encoder" in specs:
        model.encoder.requires_grad_(False)
    if "decoder" in specs:
        model.decoder.requires_grad_(False)
    for spec in specs:
        match = _EXCEPT_LAST.match(spec)
        if not match:
            continue
        keep = int(match.group(1))
        blocks = decoder_blocks(model.decoder)
        if keep > len(blocks):
            raise ConfigError(f"--freeze {spec}: the decoder has only {len(blocks)} blocks")
        kept = {name for name, _ in blocks[len(blocks) - keep :]} if keep else set()
        for name, p in model.decoder.named_parameters():
            in_kept_block = any(name.startswith(k + ".") for k in kept)
            final_norm = bool(_FINAL_NORM.search(name)) and not any(
                name.startswith(b + ".") for b, _ in blocks
            )
            p.requires_grad_(in_kept_block or (keep > 0 and final_norm))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise ConfigError("--freeze leaves no trainable parameters; freeze less")
    return FreezeReport(trainable, total, specs)
