"""Phase 1: teacher forcing with (optionally label-smoothed) cross-entropy."""

from __future__ import annotations

from typing import Any

from captionkit.errors import require

_tf = require("transformers", "train", "training captioners")
_Seq2SeqTrainer: Any = _tf.Seq2SeqTrainer  # a runtime import: typed Any for the checker


class CaptionTrainer(_Seq2SeqTrainer):
    """Seq2SeqTrainer whose losses are computed here, not by the model.

    VisionEncoderDecoder's ``forward(**kwargs)`` makes the Trainer believe the model
    normalises its loss over gradient-accumulation steps; it does not, so that is switched
    off and the Trainer divides by the accumulation steps itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False


class TeacherForcingTrainer(CaptionTrainer):
    def __init__(self, *args: Any, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        import torch.nn.functional as F

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )
        return (loss, outputs) if return_outputs else loss
