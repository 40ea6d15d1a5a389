"""Everything one training run needs, as one plain value saved beside the model.

Saving it (``captionkit_train.json``) is what lets ``captionkit train --output DIR --resume``
rebuild the same run without the user restating every flag.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from captionkit.errors import ConfigError

CONFIG_NAME = "captionkit_train.json"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    data: str = ""
    output: str = ""
    encoder: str | None = None
    decoder: str | None = None
    init: str | None = None
    freeze: tuple[str, ...] = ()
    scst: bool = False
    epochs: int = 3
    batch_size: int = 16
    lr: float | None = None  # None: 5e-5 for teacher forcing, 1e-5 for self-critical
    weight_decay: float = 0.0
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    grad_accum: int = 1
    precision: str = "auto"
    val_split: float = 0.1
    seed: int = 42
    max_length: int = 40
    augment: bool = False
    # validation decoding (also saved as the model's default decoding)
    decoding: str = "greedy"
    num_beams: int = 3
    top_p: float = 0.9
    temperature: float = 1.0
    # self-critical
    scst_samples: int = 5
    # bookkeeping
    save_every: int = 1  # epochs between checkpoints; 0 keeps only the final model
    log_every: int = 10
    workers: int | None = None  # dataloader workers; None: 0 on CPU, 4 on GPU
    device: str = "auto"  # auto | cpu
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.freeze = tuple(self.freeze)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "scst_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("--label-smoothing must be in [0, 1)")
        if self.save_every < 0:
            raise ConfigError("--save-every must be 0 or more")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-5 if self.scst else 5e-5

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no {CONFIG_NAME} in '{directory}': nothing to resume there")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
