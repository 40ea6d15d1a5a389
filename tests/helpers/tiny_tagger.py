"""A tiny WD-style tagger built in the tests: a small conv net exported with
``torch.onnx.export`` plus a generated ``selected_tags.csv``.

The net is readable on purpose: a 1x1 identity convolution, a global mean, then one linear
layer and a sigmoid, so each tag's score is ``sigmoid(w . mean_bgr / 255 + b)`` and a test can
compute the exact scores of a solid-colour image (:func:`expected_scores`). The weights of
``red dress`` read the third channel: a tagger fed RGB instead of BGR gets it wrong.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

#: (name, category, (w_b, w_g, w_r), bias). Constant tags have zero weights.
SPEC: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0.0, 0.0, 0.0), math.log(0.9 / 0.1)),
    ("sensitive", 9, (0.0, 0.0, 0.0), math.log(0.05 / 0.95)),
    ("questionable", 9, (0.0, 0.0, 0.0), math.log(0.03 / 0.97)),
    ("explicit", 9, (0.0, 0.0, 0.0), math.log(0.02 / 0.98)),
    ("red_dress", 0, (0.0, 0.0, 8.0), -4.0),
    ("blue_sky", 0, (8.0, 0.0, 0.0), -4.0),
    ("^_^", 0, (0.0, 0.0, 0.0), 0.0),  # 0.5
    ("long_hair", 0, (0.0, 0.0, 0.0), math.log(0.4 / 0.6)),
    ("smile", 0, (0.0, 0.0, 0.0), math.log(0.38 / 0.62)),
    ("solo", 0, (0.0, 0.0, 0.0), math.log(0.2 / 0.8)),
    ("hatsune_miku", 4, (0.0, 8.0, 0.0), -4.0),
    ("some_character", 4, (0.0, 0.0, 0.0), math.log(0.6 / 0.4)),
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def expected_scores(rgb: tuple[int, int, int]) -> dict[str, float]:
    """Scores of a square solid ``rgb`` image (no padding, so the mean is the colour)."""
    r, g, b = (c / 255.0 for c in rgb)
    return {name: sigmoid(w[0] * b + w[1] * g + w[2] * r + bias) for name, _, w, bias in SPEC}


def write_tags_csv(path: Path, spec=SPEC, header=("tag_id", "name", "category", "count")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, (name, category, _, _) in enumerate(spec):
            writer.writerow([1000 + i, name, category, 100 - i])
    return path


def build_tagger(out: Path, size: int = 32, fixed_batch: int | None = None) -> Path:
    """Write ``model.onnx`` (input NHWC ``size``x``size``) and ``selected_tags.csv`` to ``out``.

    Uses the TorchScript exporter (``dynamo=False``): it needs ``onnx`` but not
    ``onnxscript``, and takes under a second.
    """
    import pytest

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)
            self.fc = torch.nn.Linear(3, len(SPEC))

        def forward(self, x):  # x: (batch, height, width, 3) BGR 0-255
            x = self.conv(x.permute(0, 3, 1, 2) / 255.0)
            return torch.sigmoid(self.fc(x.mean(dim=(2, 3))))

    net = Net().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        net.fc.weight.copy_(torch.tensor([list(w) for _, _, w, _ in SPEC]))
        net.fc.bias.copy_(torch.tensor([bias for *_, bias in SPEC]))
    out.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(fixed_batch or 2, size, size, 3)
    axes = None if fixed_batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    torch.onnx.export(
        net,
        (example,),
        str(out / "model.onnx"),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=axes,
        dynamo=False,
    )
    write_tags_csv(out / "selected_tags.csv")
    return out
