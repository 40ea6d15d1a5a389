"""Phase 2: self-critical sequence training (Rennie et al., 2017) with a CIDEr-D reward.

Per image, K captions are sampled from the model and one is decoded greedily; each sample's
advantage is its CIDEr-D minus the greedy caption's (the baseline), and the loss is
``-advantage * log p(sample)`` over the sample's tokens.

The end-of-sequence token is counted in the reward, as the SacreEOS paper (Hu et al., 2023)
recommends: a caption that ended by emitting EOS gets an extra word :data:`EOS_WORD`, which
every reference also ends with, so a sample that stops properly earns the matching n-grams
and one cut off at the length limit does not. Leaving EOS out lets the model learn to trail
off into fragments ("a man riding a wave on top of a"). The EOS token is also inside the
log-probability sum. CIDEr-D itself is the evaluation room's :class:`CiderD`, built once
over the training references so document frequencies are those of the training corpus.
"""

from __future__ import annotations

from typing import Any

from captionkit.train.teacher import CaptionTrainer

#: A word no caption contains, that survives PTB tokenisation (letters only, lower case).
EOS_WORD = "xxeosxx"


def end_mask(tokens: Any, eos_id: int) -> tuple[Any, Any]:
    """(mask over tokens up to and including the first EOS, whether each row has an EOS)."""
    import torch

    is_eos = tokens.eq(eos_id)
    has_eos = is_eos.any(dim=1)
    # position of the first EOS (argmax returns the first maximum), or the last position
    first = torch.where(
        has_eos,
        is_eos.int().argmax(dim=1),
        torch.full_like(has_eos, tokens.shape[1] - 1, dtype=torch.long),
    )
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    return positions.le(first.unsqueeze(1)), has_eos


def texts_with_eos(tokenizer: Any, tokens: Any, eos_id: int) -> list[str]:
    """Decode generated tokens (without the start token); append EOS_WORD where EOS ended them."""
    _, has_eos = end_mask(tokens, eos_id)
    out = []
    for row, ended in zip(tokens.tolist(), has_eos.tolist(), strict=True):
        if ended:
            row = row[: row.index(eos_id)]
        text = " ".join(tokenizer.decode(row, skip_special_tokens=True).split())
        out.append(f"{text} {EOS_WORD}".strip() if ended else text)
    return out


class SCSTTrainer(CaptionTrainer):
    """Trainer whose loss is the self-critical policy gradient."""

    def __init__(
        self,
        *args: Any,
        references: list[list[str]],
        samples: int = 5,
        max_new_tokens: int = 40,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        from captionkit.eval.metrics import CiderD

        self.samples = samples
        self.max_new_tokens = max_new_tokens
        self.scorer = CiderD(
            {str(i): [f"{r} {EOS_WORD}" for r in refs] for i, refs in enumerate(references)}
        )
        self._stats: list[tuple[float, float]] = []

    def rewards(self, tokens: Any, keys: list[str]) -> Any:
        """CIDEr-D (EOS counted) of each generated row against its image's references."""
        import torch

        tok = self.processing_class
        texts = texts_with_eos(tok, tokens, tok.eos_token_id)
        scores: list[float] = [0.0] * len(texts)
        # The scorer takes one caption per key, so score the k-th sample of each image together.
        per_key = max(1, len(texts) // max(1, len(set(keys))))
        for k in range(per_key):
            rows = range(k, len(texts), per_key)
            _, per = self.scorer.score({keys[i]: texts[i] for i in rows})
            for i in rows:
                scores[i] = per[keys[i]]
        return torch.tensor(scores, dtype=torch.float32, device=tokens.device)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        net = self.accelerator.unwrap_model(model)
        pixels = inputs["pixel_values"]
        keys = [str(i) for i in inputs["index"].tolist()]
        # generate() and the encoder call below bypass the autocast wrapper accelerate puts on
        # the model's forward, so mixed precision is switched on here explicitly
        with self.accelerator.autocast():
            return self._scst_loss(model, net, pixels, keys, return_outputs)

    def _scst_loss(
        self, model: Any, net: Any, pixels: Any, keys: list[str], return_outputs: bool
    ) -> Any:
        import torch

        from captionkit.llm.hf_decoding import generate_kwargs
        from captionkit.types import Decoding

        k = self.samples
        eos = self.processing_class.eos_token_id
        # The baseline is greedy; the samples come from the model's whole distribution
        # (no top-k, no top-p, temperature 1), as self-critical training needs.
        greedy_settings = Decoding(max_new_tokens=self.max_new_tokens)
        sample_settings = greedy_settings.replace(do_sample=True)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            greedy = net.generate(pixel_values=pixels, **generate_kwargs(greedy_settings))
            sampled = net.generate(
                pixel_values=pixels, num_return_sequences=k, **generate_kwargs(sample_settings)
            )
        model.train(was_training)
        baseline = self.rewards(greedy[:, 1:], keys)
        reward = self.rewards(sampled[:, 1:], [key for key in keys for _ in range(k)])
        advantage = reward - baseline.repeat_interleave(k)

        targets = sampled[:, 1:]
        mask, _ = end_mask(targets, eos)
        if self.accelerator.num_processes > 1:  # keep DDP's gradient hooks: go through model
            outputs = model(
                pixel_values=pixels.repeat_interleave(k, 0), decoder_input_ids=sampled[:, :-1]
            )
        else:  # encode each image once and share it across its k samples
            hidden = net.encoder(pixel_values=pixels).last_hidden_state
            outputs = net(
                encoder_outputs=(hidden.repeat_interleave(k, 0),),
                decoder_input_ids=sampled[:, :-1],
            )
        logp = torch.log_softmax(outputs.logits.float(), dim=-1)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        weights = mask.float()
        loss = -(advantage.unsqueeze(1) * token_logp * weights).sum() / weights.sum().clamp(min=1)
        self._stats.append((float(reward.mean()), float(baseline.mean())))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean sampled and greedy rewards since the last log to training logs."""
        if "loss" in logs and self._stats:
            logs["reward"] = sum(s[0] for s in self._stats) / len(self._stats)
            logs["baseline"] = sum(s[1] for s in self._stats) / len(self._stats)
            self._stats = []
        super().log(logs, *args, **kwargs)
