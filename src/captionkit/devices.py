"""One device and dtype resolver for everything that runs torch: ``hf``, the text LLMs,
training and the Ultralytics detector.

Each of them used to carry its own copy, and the copies drifted (one checked that a CUDA GPU
is really there, another did not; one knew ``mps``). Here ``auto`` means the same thing
everywhere and a wrong value is the same one-line :class:`~captionkit.errors.ConfigError`.
torch is imported only when a function is called, so importing this module is free.
"""

from __future__ import annotations

import re
from typing import Any

from captionkit.errors import ConfigError, require

#: Names ``--dtype`` takes; ``auto`` picks by device.
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: The devices the Ultralytics detector takes (it passes the name on to its own parser).
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _torch(extra: str, feature: str) -> Any:
    return require("torch", extra, feature)


def resolve_device(
    device: str = "auto", *, extra: str = "hf", feature: str = "torch models"
) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``mps`` on Apple silicon, else ``cpu``.

    An explicit ``cuda``/``mps`` without that hardware is a one-line error before any model
    loads, rather than a CUDA traceback minutes later. ``extra``/``feature`` name the pip extra
    a missing torch comes with, for that error.
    """
    device = (device or "auto").strip()
    torch = _torch(extra, feature)
    if device != "auto":
        try:
            torch.device(device)  # any device torch knows (xpu, npu...) passes through
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps"
            ) from None
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but no CUDA GPU is visible; "
                              "use --device cpu")  # fmt: skip
        index = device.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    if device == "mps" and not has_mps:
        raise ConfigError("--device mps was asked for but MPS is not available; use --device cpu")
    return device


def resolve_dtype(
    dtype: str, device: str, *, extra: str = "hf", feature: str = "torch models"
) -> Any:
    """The torch dtype for ``dtype`` on the (resolved) ``device``.

    ``auto`` is bf16 on GPUs that support it (else fp16) and fp32 on CPU and MPS, where half
    precision is slower or unsupported for many ops.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}'; use {', '.join(DTYPES)}")
    torch = _torch(extra, feature)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
