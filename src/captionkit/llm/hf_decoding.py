"""The transformers adapter of :class:`~captionkit.types.Decoding`: ``generate`` arguments.

One mapping for every caller of ``model.generate`` (the ``hf`` captioner, the text LLMs in
:mod:`captionkit.llm.hf_causal`, training's validation), so ``--top-k 0`` means "off" and a
seed repeats the same way in all three.

Seeds without global state: ``torch.manual_seed`` reseeds the process-wide generator, so two
requests running at once through one loaded model (the server's micro-batcher) would reseed
each other. ``generate`` takes no ``torch.Generator``, so a seeded, single-beam sampling run
instead samples inside a logits processor with its own generator (the Gumbel-max trick:
``argmax(log p + Gumbel noise)`` is a draw from ``p``) and hands ``generate`` a one-hot
distribution, which its greedy step (or its sampler, for N sequences) can only follow.
Beam *sampling* keeps transformers' sampler; it is reseeded under a lock with the global
state restored afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captionkit.types import Decoding

#: Serialises the one path that still has to reseed torch's global generator (beam sampling).
_GLOBAL_SEED_LOCK = threading.Lock()


def generate_kwargs(decoding: Decoding) -> dict[str, Any]:
    """``model.generate`` keyword arguments for ``decoding``.

    Every value is explicit, so a checkpoint's own defaults (a ``generation_config.json``
    with ``do_sample: true`` or ``repetition_penalty: 1.2``) never override what was asked.
    Sampling knobs are sent only when sampling: transformers warns about them otherwise.
    """
    d = decoding
    kwargs: dict[str, Any] = {
        "max_new_tokens": d.max_new_tokens,
        "num_beams": d.num_beams,
        "do_sample": d.do_sample,
        "repetition_penalty": d.repetition_penalty,
    }
    if d.do_sample:
        kwargs.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k)
    return kwargs


def save_as_defaults(decoding: Decoding, generation_config: Any) -> None:
    """Make ``decoding`` a model's saved defaults (training writes them with the checkpoint),
    leaving no sampling or beam knob that would warn when the checkpoint loads."""
    for key, value in generate_kwargs(decoding).items():
        setattr(generation_config, key, value)
    if not decoding.do_sample:
        generation_config.top_p = None
        generation_config.top_k = None
        generation_config.temperature = None
    generation_config.early_stopping = True if decoding.num_beams > 1 else None


class SeededSampler:
    """A logits processor that draws the next token with its own seeded generator.

    It must be the last processor: it receives the warped scores, keeps them when
    ``keep_scores`` (so candidates can still be ranked by their log-probability) and returns
    a distribution with all its mass on the drawn token.
    """

    def __init__(self, seed: int, *, keep_scores: bool = False) -> None:
        self.seed = seed
        self.keep_scores = keep_scores
        self.scores: list[Any] = []
        self._generator: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._generator is None:
            self._generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        if self.keep_scores:
            self.scores.append(scores.detach().clone())
        logp = torch.log_softmax(scores.float(), dim=-1)
        uniform = torch.rand(
            logp.shape, generator=self._generator, device=logp.device, dtype=logp.dtype
        )
        gumbel = -torch.log(-torch.log(uniform))  # u == 0 gives -inf: never drawn
        choice = (logp + gumbel).argmax(dim=-1, keepdim=True)
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter_(1, choice, 0.0)


def seeded_generation(
    decoding: Decoding, kwargs: dict[str, Any], *, keep_scores: bool = False
) -> tuple[dict[str, Any], SeededSampler | None]:
    """``kwargs`` rewritten so a seeded single-beam sampling run draws with its own generator.

    Returns the kwargs to pass to ``generate`` and the sampler (``None`` when nothing is
    seeded, or for beam sampling: use :func:`global_seed` around that call).
    """
    if decoding.seed is None or not decoding.do_sample or decoding.num_beams > 1:
        return kwargs, None
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors: list[Any] = []
    if decoding.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(decoding.temperature))
    if decoding.top_k:
        processors.append(TopKLogitsWarper(decoding.top_k))
    if decoding.top_p < 1.0:
        processors.append(TopPLogitsWarper(decoding.top_p))
    sampler = SeededSampler(decoding.seed, keep_scores=keep_scores)
    processors.append(sampler)
    # The warpers are ours now: transformers must not add its own after the sampler.
    out = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
    if out.get("num_return_sequences", 1) > 1:
        # transformers samples N sequences only in sampling mode; its sampler then draws
        # from the one-hot (a draw from torch's global generator that changes nothing).
        out.update(temperature=1.0, top_p=1.0, top_k=0)
    else:
        out["do_sample"] = False  # greedy over the one-hot: the global generator is untouched
    out["logits_processor"] = LogitsProcessorList(
        [*kwargs.get("logits_processor", []), *processors]
    )
    return out, sampler


@contextmanager
def global_seed(decoding: Decoding, device: str) -> Iterator[None]:
    """Seed torch's global generator for one call and restore it afterwards (beam sampling
    only: :func:`seeded_generation` covers the rest); calls through it run one at a time."""
    if decoding.seed is None or not decoding.do_sample or decoding.num_beams == 1:
        yield
        return
    import torch

    devices = [torch.cuda.current_device()] if str(device).startswith("cuda") else []
    with _GLOBAL_SEED_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(decoding.seed)
        yield
