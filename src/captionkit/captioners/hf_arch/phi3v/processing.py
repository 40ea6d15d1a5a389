"""Phi-3(.5)-vision inputs: HD crops of the image, and prompts with image placeholders.

Written from the published description (Phi-3 technical report, the model card, the repo's
``preprocessor_config.json``), not from the repo's remote code. The image is resized, keeping its
aspect ratio, onto a grid of ``crop x crop`` tiles (at most ``num_crops`` of them), padded with
white to whole tiles, normalised with CLIP's mean/std, and cut into tiles; a ``crop x crop``
global view of the whole picture goes first. Each tile becomes ``g x g`` image tokens (CLIP's
patch grid merged 2x2), each row of tokens ends with a separator, and a separator sits between
the tiles and the global view, so the number of placeholder tokens a prompt needs follows from
the tile grid alone (:meth:`Phi3VImageProcessor.num_image_tokens`).
"""

from __future__ import annotations

import math
import re
from typing import Any

#: CLIP's normalisation, which Phi-3-vision's image processor uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The published chat template of Phi-3(.5)-vision, used when the tokenizer files lack one.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
    "+ '<|end|>\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != "
    "'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}"
)
#: ``<|image_1|>``, ``<|image_2|>``...: where the images go in a prompt (numbered from 1).
IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")


class Phi3VImageProcessor:
    """Images -> ``pixel_values`` (n, num_crops + 1, 3, crop, crop) and ``image_sizes`` (n, 2).

    ``image_sizes`` holds each padded HD image's height and width in pixels: the model reads
    the tile grid from it. Unused tile slots are zeros; the model never encodes them.
    """

    def __init__(
        self,
        *,
        num_crops: int,
        crop_size: int,
        tokens_per_side: int,
        image_mean: tuple[float, ...] = CLIP_MEAN,
        image_std: tuple[float, ...] = CLIP_STD,
    ) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {num_crops}")
        self.num_crops = int(num_crops)
        self.crop_size = int(crop_size)
        self.tokens_per_side = int(tokens_per_side)  # 12 for 336 px tiles of 14 px patches
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)

    # -- geometry ----------------------------------------------------------------------
    def hd_size(self, width: int, height: int, num_crops: int | None = None) -> tuple[int, int]:
        """(width, height) the image is resized to before white padding to whole tiles.

        The longer side gets ``scale`` tiles: the largest ``scale`` whose tile grid
        (``scale`` along the long side, ``ceil(scale / ratio)`` along the short one) still fits
        in ``num_crops`` tiles.
        """
        budget = self.num_crops if num_crops is None else int(num_crops)
        portrait = width < height
        long_side, short_side = (height, width) if portrait else (width, height)
        ratio = long_side / max(short_side, 1)
        scale = 1
        while (scale + 1) * math.ceil((scale + 1) / ratio) <= budget:
            scale += 1
        new_long = scale * self.crop_size
        new_short = max(1, int(new_long / ratio))
        return (new_short, new_long) if portrait else (new_long, new_short)

    def grid(self, width: int, height: int, num_crops: int | None = None) -> tuple[int, int]:
        """(rows, columns) of tiles an image of this size is cut into."""
        w, h = self.hd_size(width, height, num_crops)
        crop = self.crop_size
        return math.ceil(h / crop), math.ceil(w / crop)

    def num_image_tokens(self, rows: int, cols: int) -> int:
        """Placeholder tokens for a rows x cols tile grid: tiles and global view, one separator
        per token row of each, and one between them."""
        g = self.tokens_per_side
        return rows * g * (cols * g + 1) + 1 + g * (g + 1)

    # -- pixels ------------------------------------------------------------------------
    def _hd_image(self, image: Any, num_crops: int | None) -> Any:
        """The resized image on a white canvas of whole tiles (padding split above/below, or
        left/right for portrait images), as a PIL image."""
        from PIL import Image

        image = image.convert("RGB")
        w, h = self.hd_size(image.width, image.height, num_crops)
        resized = image.resize((w, h), Image.Resampling.BILINEAR)
        crop = self.crop_size
        canvas_w, canvas_h = math.ceil(w / crop) * crop, math.ceil(h / crop) * crop
        if (canvas_w, canvas_h) == (w, h):
            return resized
        canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
        canvas.paste(resized, ((canvas_w - w) // 2, (canvas_h - h) // 2))
        return canvas

    def preprocess_one(
        self, image: Any, num_crops: int | None = None
    ) -> tuple[Any, tuple[int, int]]:
        """One image -> (tiles (k + 1, 3, crop, crop) with the global view first, (H, W))."""
        import numpy as np
        import torch

        hd = self._hd_image(image, num_crops)
        arr = np.asarray(hd, dtype=np.float32) / 255.0
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        pixels = torch.from_numpy(((arr - mean) / std).transpose(2, 0, 1).copy())  # 3, H, W
        _, height, width = pixels.shape
        crop = self.crop_size
        rows, cols = height // crop, width // crop
        global_view = torch.nn.functional.interpolate(
            pixels[None], size=(crop, crop), mode="bicubic", align_corners=False
        )
        tiles = (
            pixels.reshape(3, rows, crop, cols, crop)
            .permute(1, 3, 0, 2, 4)  # row-major tiles
            .reshape(rows * cols, 3, crop, crop)
        )
        return torch.cat([global_view, tiles]), (height, width)

    def __call__(
        self, images: Any, return_tensors: str | None = "pt", num_crops: int | None = None
    ) -> Any:
        import torch
        from transformers import BatchFeature

        if not isinstance(images, (list, tuple)):
            images = [images]
        budget = self.num_crops if num_crops is None else int(num_crops)
        slots = budget + 1
        pixel_values, sizes = [], []
        for image in images:
            tiles, size = self.preprocess_one(image, budget)
            padded = tiles.new_zeros((slots, *tiles.shape[1:]))
            padded[: len(tiles)] = tiles
            pixel_values.append(padded)
            sizes.append(size)
        data = {
            "pixel_values": torch.stack(pixel_values),
            "image_sizes": torch.tensor(sizes, dtype=torch.long),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


class Phi3VProcessor:
    """Text with ``<|image_N|>`` tags plus images -> the model's inputs.

    Each tag becomes as many placeholder ids (:attr:`image_token_id`) as the image has
    features; the text around the tags is tokenised piece by piece with the tokenizer's own
    special tokens (so each piece starts with BOS), as the published processor does and the
    model was trained on. There is deliberately no ``image_token``
    attribute: captionkit's ``hf`` backend then writes ``<|image_1|>`` into a string turn.
    """

    def __init__(self, image_processor: Phi3VImageProcessor, tokenizer: Any, image_token_id: int):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def _encode(
        self, prompt: str, images: list[Any], num_crops: int | None
    ) -> tuple[list[int], list[Any]]:
        """Token ids of one prompt, and its images in the order their tags appear."""
        pieces = IMAGE_TAG.split(prompt)  # text, number, text, number, ..., text
        texts, numbers = pieces[0::2], [int(n) for n in pieces[1::2]]
        if sorted(numbers) != list(range(1, len(images) + 1)):
            raise ValueError(
                f"the prompt has image tags {[f'<|image_{n}|>' for n in numbers]} for "
                f"{len(images)} image(s): write <|image_1|> ... <|image_{len(images)}|>, each once"
            )
        ordered = [images[n - 1] for n in numbers]
        ids: list[int] = []
        for i, text in enumerate(texts):
            piece = self.tokenizer(text).input_ids  # each piece with its own BOS, as published
            if self.image_token_id in piece:
                raise ValueError(
                    f"the prompt text contains the image placeholder token "
                    f"{self.tokenizer.convert_ids_to_tokens(self.image_token_id)!r}"
                )
            ids.extend(piece)
            if i < len(numbers):
                image = ordered[i]
                rows, cols = self.image_processor.grid(image.width, image.height, num_crops)
                count = self.image_processor.num_image_tokens(rows, cols)
                ids.extend([self.image_token_id] * count)
        return ids, ordered

    def __call__(
        self,
        text: str | list[str],
        images: Any = None,
        return_tensors: str | None = "pt",
        padding: bool = True,
        num_crops: int | None = None,
        **_: Any,
    ) -> Any:
        """One prompt with its images, or a list of prompts with one image (or list) each.

        Several prompts are padded on the tokenizer's ``padding_side`` (left for generation).
        """
        from transformers import BatchFeature

        if isinstance(text, str):
            prompts = [text]
            per_prompt = [self._as_list(images)]
        else:
            prompts = list(text)
            per_prompt = [self._as_list(x) for x in (images or [None] * len(prompts))]
            if len(per_prompt) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(per_prompt)} image entries")
        rows, all_images = [], []
        for prompt, imgs in zip(prompts, per_prompt, strict=True):
            ids, ordered = self._encode(prompt, imgs, num_crops)
            rows.append(ids)
            all_images.extend(ordered)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids, attention = [], []
        for r in rows:
            fill = width - len(r)
            input_ids.append([pad] * fill + r if left else r + [pad] * fill)
            attention.append([0] * fill + [1] * len(r) if left else [1] * len(r) + [0] * fill)
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        if all_images:
            pixels = self.image_processor(all_images, return_tensors=None, num_crops=num_crops)
            data.update(pixel_values=pixels["pixel_values"], image_sizes=pixels["image_sizes"])
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if images is None:
            return []
        return list(images) if isinstance(images, (list, tuple)) else [images]

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)
