"""Any Hugging Face causal LM (hub id or local directory) as a :class:`TextLLM`.

This is the one place captionkit generates text with transformers: ``hf:`` specs use it
directly and GGUF files reach it after conversion (:mod:`captionkit.llm.gguf`), so batching,
padding, sampling and stop handling exist once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from captionkit.devices import resolve_device, resolve_dtype
from captionkit.errors import ConfigError, ModelLoadError, require
from captionkit.llm.base import ChatMessage, RuntimeOptions, TextLLM, trim_at_stop
from captionkit.types import Decoding

# Instruct models whose generation_config names only the document end token still end
# their turn with one of these; stopping there saves generating a whole fake next turn.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

# Layout for tokenizers without a chat template (base models); "\nUser:" then becomes a stop.
_PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


@contextmanager
def quiet_progress(transformers: Any) -> Iterator[None]:
    """Hide transformers' per-load progress bars: captionkit shows its own progress.

    The GGUF de-quantiser calls ``tqdm`` directly, outside transformers' switch, so its
    module attribute is swapped for a pass-through while loading (restored afterwards).
    """
    import importlib

    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils: Any
    try:
        gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if was_enabled:
            hf_logging.enable_progress_bar()


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``NAME`` or ``ORG/NAME``; anything else with a separator is a path."""
    if model.startswith(("/", ".", "~", "\\")) or (len(model) > 1 and model[1] == ":"):
        return True
    return model.count("/") > 1 or "\\" in model


def _load_error(model: str, exc: BaseException) -> ModelLoadError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ModelLoadError(
        f"cannot load text model '{model}' ({reason}); download it once where the Hub is "
        "reachable (it is cached under HF_HOME) or pass a local directory: hf:/path/to/dir"
    )


class HFCausalOptions(RuntimeOptions):
    """What :class:`HFCausalLLM` takes (``load_llm("hf:ORG/NAME", **options)``)."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, ge=1, description="prompts per generate call")
    max_input_tokens: int | None = Field(None, ge=1, description="longer prompts lose their start")
    revision: str | None = None
    local_files_only: bool | None = None
    trust_remote_code: bool = False
    label: str | None = None


class HFCausalLLM(TextLLM):
    """Batched generation with a transformers ``AutoModelForCausalLM``.

    Prompts are left-padded so every row's new tokens start at the same column, and only
    those new tokens are decoded; batches are sorted by prompt length to waste less compute
    on padding, and results come back in input order.
    """

    Options = HFCausalOptions

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_input_tokens: int | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        label: str | None = None,
    ) -> None:
        torch = require("torch", "llm", "local text LLMs")
        transformers = require("transformers", "llm", "local text LLMs")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        name = str(model)
        local = Path(name).expanduser()
        if local.is_dir():
            name = str(local)
        elif _looks_like_path(name):
            raise ModelLoadError(
                f"text model directory '{name}' does not exist; pass a directory holding "
                "config.json and the weights (hf:/path/to/dir) or a Hub id (hf:ORG/NAME)"
            )
        self.label = label or f"hf:{model}"
        self.device = resolve_device(device, extra="llm", feature="local text LLMs")
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        # A LoRA adapter folder (``captionkit train writer``) loads on its base, merged.
        adapter = local.is_dir() and (local / "adapter_config.json").is_file()
        base = name
        if adapter:
            from captionkit.llm.loader import adapter_base

            base = adapter_base(local)
        try:
            with quiet_progress(transformers):
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(name, **kwargs)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    base, dtype=resolve_dtype(dtype, self.device, extra="llm"), **kwargs
                )
        except (OSError, ValueError, KeyError) as exc:  # missing files, no network, bad config
            raise _load_error(base, exc) from None
        #: ``captionkit-adapter.json`` of an adapter folder: its base and the prompt layout
        #: it was trained on (``prompt.few_shot``), for writers that adapt to it.
        self.adapter_manifest: dict[str, Any] | None = None
        if adapter:
            self.model = load_adapter(self.model, local)
            from captionkit.llm.loader import ADAPTER_MANIFEST

            manifest = local / ADAPTER_MANIFEST
            if manifest.is_file():
                import json

                self.adapter_manifest = json.loads(manifest.read_text(encoding="utf-8"))
        self.model.to(self.device).eval()
        self._torch = torch
        self._prepare_tokenizer()

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, device: str, label: str) -> HFCausalLLM:
        """Wrap a model already in memory (a training run's evaluation generates through the
        very code ``--writer``/``--rewrite`` use). The tokenizer's padding side is changed."""
        import torch

        self = cls.__new__(cls)
        self.label, self.device, self.batch_size, self.max_input_tokens = label, device, 8, None
        self.tokenizer, self.model, self._torch = tokenizer, model, torch
        self.adapter_manifest = None
        self._prepare_tokenizer()
        return self

    def _prepare_tokenizer(self) -> None:
        tok = self.tokenizer
        tok.padding_side = "left"
        tok.truncation_side = "left"  # keep the end of an over-long prompt: the question
        if tok.pad_token is None:
            fallback = tok.eos_token or tok.unk_token
            if fallback is None:
                raise ModelLoadError(
                    f"{self.label}: the tokenizer has no pad, eos or unk token to pad batches with"
                )
            tok.pad_token = fallback
        eos: set[int] = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            eos.add(configured)
        elif configured:
            eos.update(configured)
        if tok.eos_token_id is not None:
            eos.add(tok.eos_token_id)
        vocab = tok.get_vocab()
        eos.update(vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab)
        self._eos_ids = sorted(eos)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, conversation: Sequence[ChatMessage]) -> str:
        """The exact prompt text one conversation becomes (the model's own chat template)."""
        if self.has_chat_template:
            from jinja2.exceptions import TemplateError  # chat templates are jinja2

            messages = [{"role": m.role, "content": m.content} for m in conversation]
            try:
                return self._apply_template(messages)
            except TemplateError:  # raised by the template itself (raise_exception)
                if messages[0]["role"] != "system":
                    raise
                # Some templates (Gemma's) refuse a system turn: fold it into the first user turn.
                return self._apply_template(_fold_system(messages))
        lines = [f"{_PLAIN_ROLES.get(m.role, m.role.title())}: {m.content}" for m in conversation]
        return "\n".join([*lines, "Assistant:"])

    def _apply_template(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def chat(self, conversations: list[list[ChatMessage]], config: Decoding) -> list[str]:
        prompts = [self.render_chat(c) for c in conversations]
        if self.has_chat_template:
            # The template already writes BOS and role markers; adding them again hurts.
            return self._generate(prompts, config, add_special_tokens=False)
        stop = (*config.stop, "\nUser:")
        return self._generate(prompts, config.replace(stop=stop), add_special_tokens=True)

    def complete(self, prompts: list[str], config: Decoding) -> list[str]:
        return self._generate(list(prompts), config, add_special_tokens=True)

    def _generation_config(self, config: Decoding) -> tuple[Any, dict[str, Any]]:
        """A transformers ``GenerationConfig`` for ``config``, and the extra ``generate``
        arguments (the seeded sampler, when the run is seeded)."""
        from transformers import GenerationConfig as HFGenerationConfig

        from captionkit.llm.hf_decoding import generate_kwargs, seeded_generation

        # A fresh config rather than the model's: checkpoints ship sampling defaults
        # (temperature 0.6, top_p 0.9 ...) that would silently override "greedy".
        settings: dict[str, Any] = {
            **generate_kwargs(config),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._eos_ids or None,
            "bos_token_id": self.tokenizer.bos_token_id,
        }
        if config.stop:
            settings["stop_strings"] = list(config.stop)
        settings, _ = seeded_generation(config, settings)
        extra = (
            {"logits_processor": settings.pop("logits_processor")}
            if ("logits_processor" in settings)
            else {}
        )
        return HFGenerationConfig(**settings), extra

    def _generate(
        self, prompts: list[str], config: Decoding, *, add_special_tokens: bool
    ) -> list[str]:
        if not prompts:
            return []
        from captionkit.llm.hf_decoding import global_seed

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[str] = [""] * len(prompts)
        # One seeded sampler for the whole call: its generator runs on from batch to batch,
        # so copies of one prompt in different batches still get different samples.
        gen_config, extra = self._generation_config(config)
        with global_seed(config, self.device):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                texts = self._generate_batch(
                    [prompts[i] for i in rows], gen_config, extra, config, add_special_tokens
                )
                for i, text in zip(rows, texts, strict=True):
                    results[i] = text
        return results

    def _generate_batch(
        self,
        prompts: list[str],
        gen_config: Any,
        extra: dict[str, Any],
        config: Decoding,
        add_special_tokens: bool,
    ) -> list[str]:
        torch = self._torch
        enc = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special_tokens,
            truncation=self.max_input_tokens is not None,
            max_length=self.max_input_tokens,
        ).to(self.device)
        if config.stop:
            extra = {**extra, "tokenizer": self.tokenizer}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                generation_config=gen_config,
                **extra,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [trim_at_stop(t, config.stop).strip() for t in texts]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def load_adapter(model: Any, folder: Path) -> Any:
    """``model`` with the LoRA adapter in ``folder`` applied and merged (plain inference speed)."""
    peft = require("peft", "train", "LoRA adapter folders")
    try:
        return peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # wrong base, broken files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(
            f"cannot apply the adapter in '{folder}' to its base ({reason})"
        ) from None


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[str, bool]:
    """The prompt text ``messages`` become and whether the tokenizer should add its special
    tokens, exactly as :meth:`HFCausalLLM.chat` renders them (training uses this, so a
    trained writer sees at training time the prompt it will see at caption time)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return text, False
    lines = [f"{_PLAIN_ROLES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"]), True


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]
