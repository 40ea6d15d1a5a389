"""The ``hf:`` backend: any Hugging Face vision-language model, by hub id or local folder.

Two families behave differently and the backend finds out which one it has from the
checkpoint itself rather than from a list of model names:

* **captioners** (VisionEncoderDecoder such as ViT-GPT2, BLIP, GIT, Florence-2): pixels in,
  caption out. Their images are preprocessed in the engine's worker threads; a text prompt,
  where the model takes one, is a conditioning prefix (BLIP) or a task token (Florence-2).
* **chat VLMs** (SmolVLM/Idefics3, Qwen2-VL, LLaVA, Phi-3.5-vision...): the processor carries a
  chat template, so the style's instruction becomes a user turn next to the image. Templates
  differ in what a turn may be (content parts, or a plain string as JoyCaption's): the form is
  found once by rendering the template (:func:`probe_chat_form`), not from the model's name.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from captionkit.captioners.base import BackendOptions, Captioner
from captionkit.captioners.hf_batching import processor_side, size_text, to_device
from captionkit.styles import finish as finish_text
from captionkit.styles import get_style
from captionkit.types import Candidate, CaptionOutput, CaptionRequest

if TYPE_CHECKING:
    from captionkit.captioners.hf_batching import BatchFit
    from captionkit.captioners.hf_loading import LoadedModel


class HFOptions(BackendOptions):
    device: str = Field(
        "auto", description="auto, cpu, cuda, cuda:1, mps.", json_schema_extra={"cli": True}
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto, float32, bfloat16, float16.", json_schema_extra={"cli": True}
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None,
        description="Load in 4bit or 8bit (needs bitsandbytes and a GPU).",
        json_schema_extra={"cli": True},
    )
    low_vram: bool = Field(
        False,
        description="Fit a model larger than the GPU: place layers on GPU and CPU "
        "(device_map='auto' with CPU offload; needs accelerate and a CUDA GPU; slower).",
        json_schema_extra={"cli": True},
    )
    min_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Generate at least this many tokens (= --max-new-tokens for "
        "fixed-length benchmarks).",
        json_schema_extra={"cli": True},
    )
    trust_remote_code: bool = False
    revision: str | None = None
    attn_implementation: str | None = None
    #: Keep the model's own wording (no style finishing such as the alt-text length cut).
    raw: bool = False
    #: A system turn for chat VLMs whose model card uses one (JoyCaption: "You are a helpful
    #: image captioner.").
    system_prompt: str | None = None
    #: Image-processor settings, passed where the processor takes them (a processor that does
    #: not is an error). Qwen2-VL sizes images by pixel count: without max_pixels captionkit caps
    #: images at 1024 image tokens (about 1 MP) instead of the published 16384.
    min_pixels: int | None = Field(default=None, gt=0)
    max_pixels: int | None = Field(default=None, gt=0)
    #: Phi-3.5-vision's crop count (4 for several images, 16 for one; its processor's default).
    num_crops: int | None = Field(default=None, gt=0)

    def processor_options(self) -> dict[str, Any]:
        return {
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "num_crops": self.num_crops,
        }


#: Image-to-text captioners (ViT-GPT2, BLIP, GIT) on a CPU: 16 images per ``generate`` ran
#: ViT-GPT2 at 1.5x the rate of 8 (4.24 vs 2.84 img/s on 2 cores, benchmarks/hf_throughput.py).
#: Chat VLMs keep 8: hundreds of image tokens per prompt make their KV cache grow with the batch.
CPU_CAPTIONER_BATCH = 16
CPU_WIDE_BATCH_TYPES = frozenset({"vision-encoder-decoder", "blip", "git"})


class HFCaptioner(Captioner[HFOptions]):
    name = "hf"
    extra = "hf"
    requires = ("torch", "transformers")
    description = (
        "Hugging Face image-to-text and chat VLMs (BLIP, GIT, ViT-GPT2, Florence-2, SmolVLM...)"
    )
    Options = HFOptions
    default_batch_size = 8
    #: 2: GIT continues a --prompt, Florence-2 honours a free --prompt, Qwen2-VL images capped.
    version = "2"
    #: One model on one device: concurrent generate calls would only queue on the device, and
    #: a fast tokenizer shared by two threads can fail ("Already borrowed"). Per-request
    #: settings (seed included) travel with each call, so requests may still interleave.
    thread_safe = False

    def __init__(self, model: str = "", options: HFOptions | None = None) -> None:
        from captionkit.errors import ConfigError

        super().__init__(model, options)
        if not model:
            raise ConfigError("hf needs a model: --model hf:ORG/NAME or hf:/path/to/dir")
        from captionkit.captioners.hf_loading import inspect_checkpoint
        from captionkit.devices import resolve_device

        opts = self.options
        # Fail fast on a wrong id or missing folder, but load the weights on first use: a
        # resumed run whose images are all in the results store then starts at once.
        # "--device cuda" without a GPU: say so before any work
        self.device = resolve_device(opts.device)
        from captionkit.captioners.hf_loading import check_placement

        check_placement(self.device, opts.quantize, opts.low_vram)  # before weights
        self._fit: BatchFit | None = None
        if self.device.startswith("cuda"):
            # A ceiling the engine feeds one call; caption_batch halves it on out-of-memory.
            from captionkit.captioners.hf_batching import CUDA_FEED, largest_remembered

            known = largest_remembered(f"{self.model_label}|{self._card()}|")
            self.default_batch_size = known or CUDA_FEED  # type: ignore[misc]
        self.checkpoint = inspect_checkpoint(
            model, trust_remote_code=opts.trust_remote_code, revision=opts.revision
        )
        self.model_type = self.checkpoint.model_type
        if not self.device.startswith("cuda") and self.model_type in CPU_WIDE_BATCH_TYPES:
            self.default_batch_size = CPU_CAPTIONER_BATCH  # type: ignore[misc]
        # Florence-2 reads task tokens ("<CAPTION>") rather than free text.
        self.uses_task_tokens = self.model_type == "florence2"
        # GIT's processor closes a prompt with [SEP]; the model must continue the prompt.
        self.continues_prompt = self.model_type == "git"
        self._loaded: LoadedModel | None = None
        self._chat_form: ChatForm | None = None
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

        opts = self.options
        loaded = load_model(
            self.model,
            device=opts.device,
            dtype=opts.dtype,
            quantize=opts.quantize,
            trust_remote_code=opts.trust_remote_code,
            revision=opts.revision,
            attn_implementation=opts.attn_implementation,
            processor_options=opts.processor_options(),
            checkpoint=self.checkpoint,
            low_vram=opts.low_vram,
        )
        if _has_chat_template(loaded) and loaded.tokenizer is not None:
            loaded.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        return loaded

    def _card(self) -> str:
        """The device as the remembered batch sizes know it (GPU model and memory)."""
        if not self.device.startswith("cuda"):
            return self.device
        import torch

        props = torch.cuda.get_device_properties(torch.device(self.device))
        return f"{props.name}:{props.total_memory // 2**20}MiB"

    def fingerprint(self) -> str:
        """Options that change captions; where the layers sit (--low-vram) does not."""
        return self.options.model_dump_json(exclude_none=True, exclude={"low_vram"})

    def batch_fit(self, request: CaptionRequest) -> BatchFit:
        """The chunking that halves a batch on CUDA out-of-memory, keyed by model, card,
        dtype, image size and generation length; one per loaded model (sizes remembered on
        CUDA only)."""
        from captionkit.captioners.hf_batching import BatchFit, fit_key

        lm = self.loaded
        d = request.decoding
        key = None
        if self.device.startswith("cuda"):
            size = getattr(lm.image_processor, "size", None)
            key = fit_key(
                (
                    self.model_label,
                    self._card(),
                    str(lm.dtype).replace("torch.", ""),
                    self.options.quantize or "",
                    size_text(size),
                    sorted(lm.processor_options.items()),
                    f"{d.max_new_tokens}x{max(d.num_beams, request.num_captions)}",
                )
            )
        if self._fit is None or self._fit.key != key:
            self._fit = BatchFit(key)
        return self._fit

    @property
    def decode_size(self) -> int | None:
        """The side the image processor resizes every image to (at least), for a JPEG draft
        decode (:func:`captionkit.inputs.decode.decode_image`); None when images keep a
        pixel-count-dependent size (Qwen2-VL) or are not resized."""
        return processor_side(self.loaded.image_processor)

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
        """The text a captioner is given: the user's prompt (a BLIP/GIT prefix; for Florence-2
        a task token or free text, passed as written), else the Florence-2 task token that
        matches the style."""
        text = request.prompt
        if self.uses_task_tokens and not text:
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
        from captionkit.llm.hf_decoding import generate_kwargs

        d = request.decoding
        n = request.num_captions
        kwargs = generate_kwargs(d)
        # N greedy candidates come from a beam search at least N wide.
        kwargs.update(num_beams=max(d.num_beams, n if not d.do_sample else 1))
        kwargs["num_return_sequences"] = n
        if self.options.min_new_tokens:  # fixed-length output: benchmarks, length floors
            kwargs["min_new_tokens"] = min(self.options.min_new_tokens, d.max_new_tokens)
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
            joint = self.loaded.processor(
                images=inputs, text=[text] * len(inputs), return_tensors="pt", padding=True
            )
            return self._open_prompt(dict(joint)) if self.continues_prompt else joint
        batch: dict[str, Any] = {"pixel_values": torch.stack([x["pixel_values"] for x in inputs])}
        if text and self.loaded.tokenizer is not None:  # a prompt and no processor to apply it
            ids = self.loaded.tokenizer([text] * len(inputs), return_tensors="pt", padding=True)
            batch.update(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        return batch

    def _open_prompt(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Drop the [SEP] the tokenizer closes a prompt with, so generation continues the
        prompt ("a photo of" -> "a photo of a dog") instead of starting a new sentence."""
        tok = self.loaded.tokenizer
        ends = {t for t in (tok.sep_token_id, tok.eos_token_id) if t is not None}
        ids = batch.get("input_ids")
        if (
            ids is not None
            and ids.shape[1] > 1
            and int(ids[0, -1]) in ends
            and bool((ids[:, -1] == ids[0, -1]).all())
        ):
            batch["input_ids"] = ids[:, :-1]
            if "attention_mask" in batch:
                batch["attention_mask"] = batch["attention_mask"][:, :-1]
        return batch

    @property
    def structured_chat(self) -> bool:
        """Processors that declare an ``image_token`` (LLaVA, Idefics3/SmolVLM, Qwen2-VL...)
        template ``{"type": "image"}`` content parts and take batches of prompts. Remote-code
        ones such as Phi-3.5-vision instead expect ``<|image_1|>`` written into a string turn
        and one prompt per call."""
        return getattr(self.loaded.processor, "image_token", None) is not None

    @property
    def chat_form(self) -> ChatForm:
        """How this model's chat template wants a turn written, found once by rendering it."""
        if self._chat_form is None:
            self._chat_form = probe_chat_form(self.loaded, self.options.system_prompt)
        return self._chat_form

    def _chat_inputs(self, images: list[Any], request: CaptionRequest) -> dict[str, Any]:
        instruction = request.prompt or get_style(request.style).instruction
        processor = self.loaded.processor
        form = self.chat_form
        prompt = _one_bos(
            form.render(instruction, self.options.system_prompt), self.loaded.tokenizer
        )
        if not self.structured_chat:
            return processor(prompt, images, return_tensors="pt")  # one image per call
        return processor(
            text=[prompt] * len(images),
            images=[[img] for img in images],
            return_tensors="pt",
            padding=True,
        )

    def caption_batch(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        """Caption in chunks that fit the device: a CUDA out-of-memory halves the chunk and
        retries it, so every image gets its output (see :mod:`hf_batching`). Chat VLM images
        are grouped by size so a chunk's prompts need little padding; outputs keep input
        order."""
        if self.is_chat and not self.structured_chat and len(inputs) > 1:
            return [out for x in inputs for out in self.caption_batch([x], request)]
        fit = self.batch_fit(request)
        if not self.is_chat or len(inputs) < 2:
            return fit.run(inputs, lambda chunk: self._generate(chunk, request))
        from captionkit.captioners.hf_batching import by_size_order

        order = by_size_order([getattr(x, "size", (0, 0)) for x in inputs])
        done = fit.run([inputs[i] for i in order], lambda c: self._generate(c, request))
        outputs: list[CaptionOutput] = [None] * len(inputs)  # type: ignore[list-item]
        for position, i in enumerate(order):
            outputs[i] = done[position]
        return outputs

    def _generate(self, inputs: list[Any], request: CaptionRequest) -> list[CaptionOutput]:
        """One ``generate`` call over ``inputs``."""
        import torch

        lm = self.loaded
        batch = (
            self._chat_inputs(inputs, request)
            if self.is_chat
            else self._captioner_inputs(inputs, request)
        )
        batch = to_device(batch, lm.device, lm.dtype)
        from captionkit.captioners.hf_loading import transformers_log
        from captionkit.llm.hf_decoding import global_seed, seeded_generation

        # A seed travels with this call (its own generator), never through torch's global
        # one: another request may be generating on another thread at the same moment.
        n = request.num_captions
        gen, sampler = seeded_generation(
            request.decoding, self._generation_kwargs(request), keep_scores=n > 1
        )
        # transformers' generation advice (attention masks, pad ids) is about calls captionkit
        # makes, not something a user can act on: held and dropped, as before.
        with torch.inference_mode(), transformers_log(), global_seed(request.decoding, lm.device):
            out = lm.model.generate(**batch, **gen)
        sequences = out.sequences if hasattr(out, "sequences") else out
        scores = None
        if n > 1:
            steps = sampler.scores if sampler is not None else None
            scores = self._sequence_scores(out, steps)
        prompt_len = batch["input_ids"].shape[1] if "input_ids" in batch else 0
        # Chat models echo the whole templated prompt: keep only the answer. A captioner's
        # text prompt is a prefix that belongs to the caption ("a picture of a dog").
        if self.is_chat and prompt_len:
            sequences = sequences[:, prompt_len:]
        texts = lm.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        outputs = []
        for i in range(len(inputs)):
            cands = []
            for j in range(n):
                raw = texts[i * n + j]
                text = raw.strip() if self.options.raw else finish_text(raw, request.style)
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

    def _sequence_scores(self, out: Any, steps: list[Any] | None = None) -> Any:
        """Mean log-probability per returned sequence, for ranking the N candidates.

        ``steps``: the per-step scores a seeded sampler kept (``out.scores`` then holds only
        its one-hot draws)."""
        if getattr(out, "sequences_scores", None) is not None:
            return out.sequences_scores.float().cpu().tolist()
        model = self.loaded.model
        trans = model.compute_transition_scores(
            out.sequences,
            tuple(steps) if steps is not None else out.scores,
            getattr(out, "beam_indices", None),
            normalize_logits=True,
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


PROBE = "captionkit-probe"


@dataclass
class ChatForm:
    """One way of writing a chat turn that a model's template accepts.

    ``structured``: content parts (``[{"type": "image"}, {"type": "text", ...}]``), the form of
    LLaVA, Idefics3 and Qwen2-VL templates. Otherwise a string: JoyCaption's template calls
    ``.replace`` on it and inserts the image tokens itself; others need ``image_tag`` written
    into the string (``<image>``, Phi-3.5-vision's ``<|image_1|>``).
    """

    templater: Any
    template: Any
    structured: bool
    image_tag: str = ""

    def messages(self, instruction: str, system: str | None) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = []
        if self.structured:
            if system:
                turns.append({"role": "system", "content": [{"type": "text", "text": system}]})
            content: Any = [{"type": "image"}, {"type": "text", "text": instruction}]
        else:
            if system:
                turns.append({"role": "system", "content": system})
            content = f"{self.image_tag}\n{instruction}" if self.image_tag else instruction
        turns.append({"role": "user", "content": content})
        return turns

    def render(self, instruction: str, system: str | None = None) -> str:
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if self.template is not None:
            kwargs["chat_template"] = self.template
        return self.templater.apply_chat_template(self.messages(instruction, system), **kwargs)


def _renders(form: ChatForm, system: str | None = None) -> str | None:
    """The rendered probe turn, or None when the template rejects that form."""
    try:
        text = form.render(PROBE, system)
    except Exception:  # jinja errors: 'list object' has no attribute 'replace', raise_exception
        return None
    if not isinstance(text, str) or PROBE not in text or "'type':" in text:
        return None  # a string-only template printed the content list as Python text
    return text


def probe_chat_form(lm: LoadedModel, system: str | None) -> ChatForm:
    """Find the form of turn the template renders correctly, and check a system prompt fits.

    Rendering is the robust probe: reading the template source for ``message['content']``
    misses templates that branch on ``is string`` or pass content through macros.
    """
    from captionkit.errors import ConfigError, ModelLoadError

    processor, tokenizer = lm.processor, lm.tokenizer
    image_token = getattr(processor, "image_token", None)
    template = getattr(processor, "chat_template", None) or getattr(
        tokenizer, "chat_template", None
    )
    if image_token is None:  # remote-code processors: "<|image_1|>" in a string turn
        candidates = [ChatForm(tokenizer, None, False, "<|image_1|>")]
    else:
        # A template kept only in tokenizer_config.json is handed to the processor explicitly.
        own = getattr(processor, "chat_template", None)
        structured = ChatForm(processor, None if own else template, True)
        candidates = [structured, ChatForm(tokenizer, template, False, "")]
    for form in candidates:
        text = _renders(form)
        if text is None:
            continue
        if form.structured and (image_token is None or image_token not in text):
            continue  # the template drops image parts: write the image token into a string
        if not form.structured and image_token is not None and image_token not in text:
            form.image_tag = image_token  # the template does not insert it: write it ourselves
        if system and _renders(form, system) is None:
            raise ConfigError(
                "this model's chat template does not take a system turn: drop -o system_prompt"
            )
        return form
    raise ModelLoadError(
        "the model's chat template renders neither structured nor string content "
        "(a user turn with an image and text)"
    )


def _one_bos(prompt: str, tokenizer: Any) -> str:
    """Drop a template's leading BOS when the tokenizer adds its own: two BOS tokens make
    Llama-3 models (JoyCaption) caption worse, and the processor tokenizes with specials."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not prompt.startswith(bos):
        return prompt
    try:
        adds = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    except Exception:  # a tokenizer that cannot say: leave the prompt as the template made it
        return prompt
    return prompt[len(bos) :] if adds else prompt


def _has_chat_template(lm: LoadedModel) -> bool:
    return any(
        part is not None and getattr(part, "chat_template", None)
        for part in (lm.processor, lm.tokenizer)
    )
