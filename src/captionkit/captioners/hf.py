"""The ``hf:`` backend: any Hugging Face vision-language model, by hub id or local folder.

Two families behave differently and the backend finds out which one it has from the
checkpoint itself rather than from a list of model names:

* **captioners** (VisionEncoderDecoder such as ViT-GPT2, BLIP, GIT, Florence-2): pixels in,
  caption out. Their images are preprocessed in the engine's worker threads; a text prompt,
  where the model takes one, is a conditioning prefix (BLIP) or a task token (Florence-2).
* **chat VLMs** (SmolVLM/Idefics3, Qwen2-VL, LLaVA, Phi-3.5-vision...): the processor carries a
  chat template, so the style's instruction becomes a user turn next to the image.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.styles import finish as finish_text
from captionkit.styles import get_style
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from captionkit.captioners.hf_loading import LoadedModel


class HFOptions(BackendOptions):
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantize: Literal["4bit", "8bit"] | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str | None = None
    #: Keep the model's own wording (no style finishing such as the alt-text length cut).
    raw: bool = False


class HFCaptioner(Captioner):
    name = "hf"
    extra = "hf"
    requires = ("torch", "transformers")
    description = (
        "Hugging Face image-to-text and chat VLMs (BLIP, GIT, ViT-GPT2, Florence-2, SmolVLM...)"
    )
    Options = HFOptions
    default_batch_size = 8

    def __init__(self, model: str = "", options: HFOptions | None = None) -> None:
        from captionkit.errors import ConfigError

        super().__init__(model, options)
        if not model:
            raise ConfigError("hf needs a model: --model hf:ORG/NAME or hf:/path/to/dir")
        from captionkit.captioners.hf_loading import load_config, resolve_device

        opts: HFOptions = self.options  # type: ignore[assignment]
        # Fail fast on a wrong id or missing folder, but load the weights on first use: a
        # resumed run whose images are all in the results store then starts at once.
        resolve_device(opts.device)  # "--device cuda" without a GPU: say so before any work
        config = load_config(
            model, trust_remote_code=opts.trust_remote_code, revision=opts.revision
        )
        self.model_type = getattr(config, "model_type", "")
        # Florence-2 reads task tokens ("<CAPTION>") rather than free text.
        self.uses_task_tokens = self.model_type == "florence2"
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> LoadedModel:
        """Model and processor, loaded once (thread-safe: worker threads preprocess)."""
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> LoadedModel:
        from captionkit.captioners.hf_loading import load_model

        opts: HFOptions = self.options  # type: ignore[assignment]
        loaded = load_model(
            self.model,
            device=opts.device,
            dtype=opts.dtype,
            quantize=opts.quantize,
            trust_remote_code=opts.trust_remote_code,
            revision=opts.revision,
            attn_implementation=opts.attn_implementation,
        )
        if _has_chat_template(loaded) and loaded.tokenizer is not None:
            loaded.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        return loaded

    @property
    def is_chat(self) -> bool:
        """Chat VLMs carry a chat template; plain captioners do not."""
        return _has_chat_template(self.loaded)

    @property
    def model_label(self) -> str:
        """Hub ids as given; local folders by absolute path, so two ``./model`` folders differ."""
        from pathlib import Path

        local = Path(self.model).expanduser()
        return str(local.resolve()) if local.exists() else self.model

    # -- CPU stage ---------------------------------------------------------------------
    def _text_prompt(self, request: CaptionRequest) -> str | None:
        """The text a captioner is given: the user's prompt (a BLIP/GIT prefix), or the
        Florence-2 task token that matches the style."""
        text = request.prompt
        if self.uses_task_tokens and not (text or "").startswith("<"):
            text = get_style(request.style).florence_task
        return text

    def _joint_processing(self, request: CaptionRequest) -> bool:
        """Image and text must go through the model's processor together: chat VLMs, and
        captioners given a text prompt (the processor inserts image tokens, expands task
        tokens such as Florence-2's, adds BLIP's special tokens)."""
        if self.is_chat:
            return True
        return bool(self._text_prompt(request)) and self.loaded.processor is not None

    def preprocess(self, image: Any, request: CaptionRequest) -> Any:
        if self._joint_processing(request):
            return image
        pixels = self.loaded.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels[0], "size": image.size}

    # -- device stage ------------------------------------------------------------------
    def _generation_kwargs(self, request: CaptionRequest) -> dict[str, Any]:
        d = request.decoding
        n = request.num_captions
        kwargs: dict[str, Any] = {
            "max_new_tokens": d.max_new_tokens,
            "num_beams": max(d.num_beams, n if not d.do_sample else 1),
            "do_sample": d.do_sample,
            "num_return_sequences": n,
            "repetition_penalty": d.repetition_penalty,
        }
        if d.do_sample:
            kwargs.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k or None)
        if n > 1:
            kwargs.update(return_dict_in_generate=True, output_scores=True)
        tok = self.loaded.tokenizer
        if (
            tok is not None
            and getattr(self.loaded.model.generation_config, "pad_token_id", None) is None
        ):
            kwargs["pad_token_id"] = (
                tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            )
        return kwargs

    def _captioner_inputs(self, inputs: list[Any], request: CaptionRequest) -> dict[str, Any]:
        import torch

        text = self._text_prompt(request)
        if self._joint_processing(request):
            return self.loaded.processor(
                images=inputs, text=[text] * len(inputs), return_tensors="pt", padding=True
            )
        batch: dict[str, Any] = {"pixel_values": torch.stack([x["pixel_values"] for x in inputs])}
        if text and self.loaded.tokenizer is not None:  # a prompt and no processor to apply it
            ids = self.loaded.tokenizer([text] * len(inputs), return_tensors="pt", padding=True)
            batch.update(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        return batch

    @property
    def structured_chat(self) -> bool:
        """Processors that declare an ``image_token`` (LLaVA, Idefics3/SmolVLM, Qwen2-VL...)
        template ``{"type": "image"}`` content parts and take batches of prompts. Remote-code
        ones such as Phi-3.5-vision instead expect ``<|image_1|>`` written into a string turn
        and one prompt per call."""
        return getattr(self.loaded.processor, "image_token", None) is not None

    def _chat_inputs(self, images: list[Any], request: CaptionRequest) -> dict[str, Any]:
        instruction = request.prompt or get_style(request.style).instruction
        processor = self.loaded.processor
        if self.structured_chat:
            content: Any = [{"type": "image"}, {"type": "text", "text": instruction}]
            templater = processor
        else:
            content = f"<|image_1|>\n{instruction}"
            templater = self.loaded.tokenizer
        messages = [{"role": "user", "content": content}]
        prompt = templater.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if not self.structured_chat:
            return processor(prompt, images, return_tensors="pt")  # one image per call
        return processor(
            text=[prompt] * len(images),
            images=[[img] for img in images],
            return_tensors="pt",
            padding=True,
        )

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        if self.is_chat and not self.structured_chat and len(inputs) > 1:
            return [out for x in inputs for out in self.caption_batch([x], request)]
        import torch

        lm = self.loaded
        batch = (
            self._chat_inputs(inputs, request)
            if self.is_chat
            else self._captioner_inputs(inputs, request)
        )
        batch = {
            k: (v.to(lm.device, dtype=lm.dtype) if v.is_floating_point() else v.to(lm.device))
            for k, v in dict(batch).items()
            if hasattr(v, "to")
        }
        gen = self._generation_kwargs(request)
        if request.decoding.seed is not None:
            torch.manual_seed(request.decoding.seed)
        with torch.inference_mode():
            out = lm.model.generate(**batch, **gen)
        sequences = out.sequences if hasattr(out, "sequences") else out
        scores = self._sequence_scores(out, gen) if request.num_captions > 1 else None
        prompt_len = batch["input_ids"].shape[1] if "input_ids" in batch else 0
        # Chat models echo the whole templated prompt: keep only the answer. A captioner's
        # text prompt is a prefix that belongs to the caption ("a picture of a dog").
        if self.is_chat and prompt_len:
            sequences = sequences[:, prompt_len:]
        texts = lm.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        n = request.num_captions
        outputs = []
        for i in range(len(inputs)):
            cands = []
            for j in range(n):
                raw = texts[i * n + j]
                text = raw.strip() if self.options.raw else finish_text(raw, request.style)  # type: ignore[attr-defined]
                score = float(scores[i * n + j]) if scores is not None else None
                cands.append(Candidate(text=text, score=score))
            if scores is not None:
                cands.sort(
                    key=lambda c: c.score if c.score is not None else float("-inf"), reverse=True
                )
            cands = [c for c in cands if c.text] or cands
            if not any(c.text for c in cands):
                outputs.append(CaptionOutput.failed("the model generated an empty caption"))
            else:
                outputs.append(CaptionOutput(candidates=cands))
        return outputs

    def _sequence_scores(self, out: Any, gen: dict[str, Any]) -> Any:
        """Mean log-probability per returned sequence, for ranking the N candidates."""
        if getattr(out, "sequences_scores", None) is not None:
            return out.sequences_scores.float().cpu().tolist()
        model = self.loaded.model
        trans = model.compute_transition_scores(
            out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=True
        )
        finite = trans.isfinite()
        totals = trans.masked_fill(~finite, 0).sum(dim=1)
        return (totals / finite.sum(dim=1).clamp(min=1)).float().cpu().tolist()

    def close(self) -> None:
        self._loaded = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _has_chat_template(lm: LoadedModel) -> bool:
    return any(
        part is not None and getattr(part, "chat_template", None)
        for part in (lm.processor, lm.tokenizer)
    )
