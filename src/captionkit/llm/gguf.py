"""GGUF model files as :class:`TextLLM`: llama.cpp when installed, else transformers.

llama-cpp-python runs GGUF natively and fast but compiles for minutes on install, so it is
the optional ``llama-cpp`` extra. Without it, transformers can read a GGUF file by
de-quantising it, which is slow (tens of seconds); the first load therefore saves the result
as an ordinary checkpoint in the user cache, keyed by the file's SHA-256, and later loads
read that in seconds. Generation then goes through :class:`~captionkit.llm.hf_causal.HFCausalLLM`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from captionkit.errors import ConfigError, MissingDependencyError, ModelLoadError, require
from captionkit.llm.base import ChatMessage, RuntimeOptions, TextLLM, trim_at_stop
from captionkit.llm.hf_causal import quiet_progress
from captionkit.types import Decoding

RUNTIMES = ("auto", "llama-cpp", "transformers")
#: Written last into a converted checkpoint; a directory without it is not trusted.
MARKER = "captionkit-gguf.json"
#: Quantised files above this size are ~1.5B+ parameters: save bf16 to halve the cache.
_BF16_ABOVE_BYTES = 1 << 30
_STALE_TMP_SECONDS = 24 * 3600


def default_cache_root() -> Path:
    """``<user cache dir>/captionkit/llm``: where converted GGUF checkpoints live."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "llm"


def llama_cpp_available() -> bool:
    """True when llama-cpp-python can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(path: Path, cache_root: Path | None = None) -> Path:
    """Where the converted checkpoint of the GGUF file ``path`` is (or will be) cached."""
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / file_sha256(path)[:32]


def _is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def sweep_stale_tmp(root: Path) -> None:
    """Remove temp dirs (``.tmp-*``) left by a conversion killed a day or more ago; shared by
    every converted-checkpoint cache (SmolLM2 here, Florence-2 in ``hf_arch``)."""
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def convert_gguf(path: str | Path, cache_root: Path | None = None) -> Path:
    """Return a normal HF checkpoint directory for the GGUF file ``path``, converting once.

    The conversion is written into a temporary sibling directory and renamed into place,
    so a process killed mid-write leaves no half-written checkpoint that a later load
    would trust; two processes converting at once both succeed and one result is kept.
    """
    gguf_path = Path(path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file '{path}' does not exist; pass gguf:/path/to/model.gguf")
    target = checkpoint_dir(gguf_path, cache_root)
    if _is_complete(target):
        return target
    require("gguf", "llm", "reading GGUF files with transformers")
    transformers = require("transformers", "llm", "reading GGUF files")
    torch = require("torch", "llm", "reading GGUF files")
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        parent, name = str(gguf_path.parent), gguf_path.name
        try:
            with quiet_progress(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(parent, gguf_file=name)
                model = transformers.AutoModelForCausalLM.from_pretrained(parent, gguf_file=name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(
                f"transformers cannot read GGUF file '{gguf_path}' ({reason}); "
                'install llama.cpp instead: pip install "captionkit[llama-cpp]"'
            ) from None
        # The de-quantised weights are plain tensors now; drop the GGUF quantizer so the
        # model saves (and later loads) as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if gguf_path.stat().st_size > _BF16_ABOVE_BYTES:
            model = model.to(torch.bfloat16)
        with quiet_progress(transformers):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        info = {"source": str(gguf_path), "size": gguf_path.stat().st_size, "created": time.time()}
        (tmp / MARKER).write_text(json.dumps(info))
        try:
            if target.exists():
                _replace_incomplete(tmp, target)
            else:
                os.replace(tmp, target)
        except OSError:
            if not _is_complete(target):  # not a lost race with another process: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace_incomplete(tmp: Path, target: Path) -> None:
    """``target`` exists: keep it when another process completed it, else swap ours in."""
    if _is_complete(target):
        return
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


class LlamaCppOptions(RuntimeOptions):
    """What :class:`LlamaCppLLM` takes (``load_llm("gguf:PATH", **options)``)."""

    n_ctx: int = Field(4096, ge=16, description="context window in tokens")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    n_gpu_layers: int | None = Field(None, description="layers on the GPU; -1: all")
    #: Accepted so every local runtime takes the same options: ``cpu`` keeps all layers on
    #: the CPU; the precision is the file's quantisation (``dtype`` must stay ``auto``).
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = Field(1, ge=1)
    label: str | None = None


def llama_cpp_args(decoding: Decoding) -> dict[str, Any]:
    """The llama.cpp adapter of :class:`~captionkit.types.Decoding`: ``create_*completion`` args.

    llama.cpp reads temperature 0 as greedy and has no beams (``num_beams`` is ignored);
    ``top_k`` 0 is the whole vocabulary there too.
    """
    return {
        "max_tokens": decoding.max_new_tokens,
        "temperature": decoding.temperature if decoding.do_sample else 0.0,
        "top_p": decoding.top_p,
        "top_k": decoding.top_k,
        "repeat_penalty": decoding.repetition_penalty,
        "stop": list(decoding.stop) or None,
        "seed": decoding.seed,
    }


class LlamaCppLLM(TextLLM):
    """A GGUF file run by llama-cpp-python (one conversation at a time: llama.cpp's API)."""

    Options = LlamaCppOptions

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 1,
        label: str | None = None,
    ) -> None:
        """``device``, ``dtype`` and ``batch_size`` are accepted so callers can pass the same
        options to any local runtime: ``device`` picks GPU offload (all layers when llama.cpp
        was built with GPU support and ``device`` is not ``cpu``), the precision is the GGUF
        file's own quantisation (``dtype`` must stay ``auto``), and llama.cpp answers one
        conversation at a time whatever ``batch_size`` says."""
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependencyError("llama-cpp-python", "llama-cpp", "fast GGUF") from exc
        if dtype != "auto":
            raise ConfigError(f"dtype '{dtype}': a GGUF file's precision is its quantisation")
        gguf_path = Path(path).expanduser()
        if not gguf_path.is_file():
            raise ModelLoadError(f"GGUF file '{path}' does not exist; pass gguf:/path/to/file.gguf")
        self.label = label or f"gguf:{gguf_path.stem}"
        if n_gpu_layers is None:
            gpu = device != "cpu" and bool(getattr(llama_cpp, "llama_supports_gpu_offload", bool)())
            n_gpu_layers = -1 if gpu else 0
        if n_threads is None and (os.cpu_count() or 8) <= 4:
            # llama.cpp defaults to half the logical CPUs (assuming hyper-threads); on small
            # VMs every vCPU is a core, and using both of 2 measured ~1.3x faster here.
            n_threads = os.cpu_count()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(gguf_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp cannot load '{gguf_path}': {exc}") from None

    def _sampling(self, config: Decoding) -> dict[str, Any]:
        return llama_cpp_args(config)

    def chat(self, conversations: list[list[ChatMessage]], config: Decoding) -> list[str]:
        answers = []
        for conversation in conversations:
            reply = self._llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in conversation],
                **self._sampling(config),
            )
            text = reply["choices"][0]["message"].get("content") or ""
            answers.append(trim_at_stop(text, config.stop).strip())
        return answers

    def complete(self, prompts: list[str], config: Decoding) -> list[str]:
        answers = []
        for prompt in prompts:
            reply = self._llm.create_completion(prompt, **self._sampling(config))
            answers.append(trim_at_stop(reply["choices"][0]["text"], config.stop).strip())
        return answers

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def load_gguf(
    path: str | Path,
    *,
    runtime: str = "auto",
    cache_dir: str | Path | None = None,
    label: str | None = None,
    **options: Any,
) -> TextLLM:
    """Open a GGUF file with the best runtime installed (``runtime`` forces one).

    ``options`` go to the runtime: ``n_ctx``/``n_threads``/``n_gpu_layers`` for llama.cpp,
    ``device``/``dtype``/``batch_size``/``max_input_tokens`` for transformers.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"GGUF runtime '{runtime}' is not one of: {', '.join(RUNTIMES)}")
    gguf_path = Path(path).expanduser()
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file '{path}' does not exist; pass gguf:/path/to/model.gguf")
    label = label or f"gguf:{gguf_path.stem}"
    if runtime == "llama-cpp" or (runtime == "auto" and llama_cpp_available()):
        from captionkit.llm.loader import validate_options

        what = f"GGUF runtime llama-cpp ({label})"
        options = validate_options(LlamaCppLLM, options, what, ("label",))
        return LlamaCppLLM(gguf_path, label=label, **options)
    from captionkit.llm.hf_causal import HFCausalLLM
    from captionkit.llm.loader import validate_options

    fixed = ("label", "local_files_only", "revision", "trust_remote_code")
    what = f"GGUF runtime transformers ({label})"
    options = validate_options(HFCausalLLM, options, what, fixed)
    checkpoint = convert_gguf(gguf_path, Path(cache_dir).expanduser() if cache_dir else None)
    return HFCausalLLM(checkpoint, label=label, local_files_only=True, **options)
