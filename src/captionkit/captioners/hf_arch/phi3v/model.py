"""Phi-3(.5)-vision as transformers modules: native Phi-3 language model + CLIP image tower.

Only the image embedding is new code; the language model is transformers' ``Phi3ForCausalLM``
(same weight names as the checkpoint, LongRoPE included) and the tower is ``CLIPVisionModel``.
Image features replace the prompt's placeholder tokens in the input embeddings at prefill;
decode steps run on text alone (``generate`` drops ``pixel_values`` after prefill), so
``generate`` returns the prompt ids followed by the answer, as for any causal LM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM, Phi3Model
from transformers.models.phi3.modeling_phi3 import Phi3PreTrainedModel


def merge_2x2(features: torch.Tensor) -> torch.Tensor:
    """(n, P*P, C) patch features -> (n, P/2, P/2, 4C): each 2x2 block of neighbouring patches
    becomes one token, channels ordered top-left, top-right, bottom-left, bottom-right."""
    n, length, channels = features.shape
    side = round(length**0.5)
    half = side // 2
    return (
        features.reshape(n, half, 2, half, 2, channels)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n, half, half, 4 * channels)
    )


class Phi3VImageEmbedding(nn.Module):
    """CLIP features of every tile, arranged as the picture, with learnt separators, projected
    into the language model's embedding space.

    Parameter names follow the checkpoint: ``img_processor`` (CLIPVisionModel), ``glb_GN``
    (between tiles and global view), ``sub_GN`` (end of every token row), ``img_projection``.
    """

    def __init__(self, config: Phi3Config) -> None:
        super().__init__()
        spec = config.phi3v
        vision = CLIPVisionConfig(**spec["vision_config"])
        vision._attn_implementation = "sdpa"
        self.img_processor = CLIPVisionModel(vision)
        self.layer_idx = int(spec["layer_idx"])
        self.crop_size = int(vision.image_size)  # type: ignore[arg-type]  # an int in CLIP configs
        self.order = spec["hd_transform_order"]
        dim = 4 * int(vision.hidden_size)
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, dim))
        hidden = config.hidden_size
        if spec["projection_cls"] == "mlp":
            self.img_projection: nn.Module = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden)
            )
        else:  # "linear"
            self.img_projection = nn.Linear(dim, hidden)

    def _with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, cols, D) token grid -> (rows * (cols + 1), D), ``sub_GN`` ending each row."""
        rows = grid.shape[0]
        sep = self.sub_GN.reshape(1, 1, -1).expand(rows, 1, -1).to(grid.dtype)
        return torch.cat([grid, sep], dim=1).reshape(-1, grid.shape[-1])

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> list[torch.Tensor]:
        """One (tokens, hidden) tensor per image, tokens in placeholder order."""
        crop = self.crop_size
        grids = [(int(h) // crop, int(w) // crop) for h, w in image_sizes.tolist()]
        # Encode only the tiles each image uses, not the zero-padded slots.
        used = torch.cat(
            [pixel_values[i, : rows * cols + 1] for i, (rows, cols) in enumerate(grids)]
        )
        tower = self.img_processor
        hidden = tower(used.to(tower.dtype), output_hidden_states=True).hidden_states
        feats = merge_2x2(hidden[self.layer_idx][:, 1:])  # drop CLS; (tiles, g, g, 4C)
        g = feats.shape[1]
        out, start = [], 0
        for rows, cols in grids:
            glb = self._with_row_separators(feats[start])
            subs = feats[start + 1 : start + 1 + rows * cols]
            subs = (
                subs.reshape(rows, cols, g, g, -1)
                .permute(0, 2, 1, 3, 4)  # token rows of the whole picture, left to right
                .reshape(rows * g, cols * g, -1)
            )
            sub = self._with_row_separators(subs)
            between = self.glb_GN.reshape(1, -1).to(sub.dtype)
            parts = [sub, between, glb] if self.order == "sub_glb" else [glb, between, sub]
            out.append(self.img_projection(torch.cat(parts)))
            start += 1 + rows * cols
        return out


class Phi3VForCausalLM(Phi3ForCausalLM):
    """``Phi3ForCausalLM`` whose ``model`` also holds ``vision_embed_tokens``.

    ``config.image_token_id`` marks the placeholder positions the processor wrote.
    """

    def __init__(self, config: Phi3Config) -> None:
        Phi3PreTrainedModel.__init__(self, config)
        self.model = Phi3Model(config)
        self.model.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):  # the separators are plain parameters
            nn.init.zeros_(module.glb_GN)
            nn.init.zeros_(module.sub_GN)

    def embed_with_images(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_sizes: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings with every placeholder replaced by its image feature."""
        embeds = self.model.embed_tokens(input_ids)
        features = self.model.vision_embed_tokens(pixel_values, image_sizes)
        flat = torch.cat(features).to(embeds.dtype)
        mask = input_ids == self.config.image_token_id
        if int(mask.sum()) != flat.shape[0]:
            raise ValueError(
                f"the prompt has {int(mask.sum())} image placeholder tokens but its images give "
                f"{flat.shape[0]} features: build inputs with this model's processor"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1), flat)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if pixel_values is not None and inputs_embeds is None and input_ids is not None:
            if image_sizes is None:
                raise ValueError("pixel_values need image_sizes (the processor returns both)")
            inputs_embeds = self.embed_with_images(input_ids, pixel_values, image_sizes)
            input_ids = None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any):
        """The images go with every step that re-reads the whole prompt: prefill, and a
        recomputation from scratch (Phi-3 drops its cache when LongRoPE switches factors)."""
        pixel_values = kwargs.get("pixel_values")
        image_sizes = kwargs.get("image_sizes")
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        cache = inputs.get("cache")
        whole_prompt = inputs.get("input_ids") is not None and (
            cache is None or cache.get_seq_length() == 0
        )
        if pixel_values is not None and whole_prompt:
            inputs["pixel_values"] = pixel_values
            inputs["image_sizes"] = image_sizes
        return inputs
