"""Does a LoRA-trained writer beat the template writer? Cross-validated on the dev photos (#16).

The 150 Flickr8k dev photos are split into folds *by image* (a hash of the file name). For
each fold, a SmolLM2-135M writer is LoRA-trained on the (facts -> reference) pairs of the
other folds' photos only, then the grounded backend captions the held-out photos with

* the template writer (the default),
* the untrained SmolLM2 writer as shipped (chat, few-shot examples, template draft),
* the untrained SmolLM2 writer with the trained writer's prompt (no few-shot) - the control,
* the LoRA writer (``--writer hf:OUT -o few_shot=false``, the prompt it was trained on),

and each is scored with captionkit's CIDEr-D, BLEU-4 and CHAIR-i against the held-out
references; img/s is end to end through ``captionkit.api.caption`` (model loading included,
so it is a floor). No photo is ever scored by a writer that trained on it, and nothing was
tuned on the held-out photos. Flickr8k is for research use: the adapters stay in --out.

    python benchmarks/writer_training.py [--folds 2] [--epochs 1] [--eval-images 75]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "flickr8k-dev"


def fold_of(key: str, folds: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % folds


def score(cands: dict[str, str], refs: dict[str, list[str]]) -> dict[str, float]:
    from captionkit.eval.bleu import bleu
    from captionkit.eval.chair import chair
    from captionkit.eval.cider import cider_d

    sub = {k: refs[k] for k in cands}
    return {
        "cider_d": cider_d(cands, sub)[0],
        "bleu4": bleu(cands, sub)[0][3],
        "chair_i": chair(cands, sub).chair_i,
    }


def caption_with(writer: str, images: list[Path], few_shot: bool) -> tuple[dict[str, str], float]:
    from captionkit import api

    t0 = time.perf_counter()
    results = api.caption(
        [str(p) for p in images], "grounded", writer=writer, few_shot=few_shot, store=False
    )
    seconds = time.perf_counter() - t0
    return {Path(r.source).name: (r.text or ".") for r in results}, len(images) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--eval-images", type=int, default=None, help="held-out photos per fold")
    ap.add_argument("--max-steps", type=int, default=None, help="smoke runs")
    ap.add_argument("--refs-per-image", type=int, default=None, help="training pairs per photo")
    ap.add_argument("--reuse", action="store_true", help="keep adapters already trained in --out")
    ap.add_argument("--skip-shipped", action="store_true", help="leave out the few-shot row")
    ap.add_argument("--only-folds", type=int, default=None, help="run the first N folds")
    ap.add_argument("--pairs", default=None, help="reuse a pairs file (no few-shot, facts)")
    ap.add_argument("--out", default="/tmp/captionkit-writer-bench")
    args = ap.parse_args()

    from captionkit.train.pairs import PairOptions, build_pairs, read_pairs, write_jsonl
    from captionkit.train.writer import WriterConfig, run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs_path = Path(args.pairs) if args.pairs else out / "pairs.jsonl"
    if not pairs_path.is_file():
        opts = PairOptions(eval_share=0.0, few_shot=False)
        write_jsonl(build_pairs(str(DATA), opts, echo=lambda m: None), pairs_path)
    pairs = read_pairs(pairs_path)
    refs: dict[str, list[str]] = json.loads((DATA / "references.json").read_text())
    rows: dict[str, list[dict[str, float]]] = {}
    speeds: list[float] = []
    for k in range(args.only_folds or args.folds):
        held = sorted(key for key in refs if fold_of(key, args.folds) == k)[: args.eval_images]
        fold_pairs = []
        for p in pairs:
            if fold_of(p["image"], args.folds) == k:
                if p["image"] not in held or not p["id"].endswith("#0"):
                    continue  # eval loss on one reference per held-out photo: cheap
                fold_pairs.append({**p, "split": "eval"})
            elif (
                args.refs_per_image is None or int(p["id"].rsplit("#", 1)[1]) < args.refs_per_image
            ):
                fold_pairs.append({**p, "split": "train"})
        data = write_jsonl(fold_pairs, out / f"fold{k}.jsonl")
        adapter = out / f"fold{k}-lora"
        cfg = WriterConfig(
            base="smollm2", data=str(data), output=str(adapter), epochs=args.epochs,
            batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
            eval_images=0, device="cpu", max_steps=args.max_steps,
        )  # fmt: skip
        if not (args.reuse and (adapter / "adapter_model.safetensors").is_file()):
            result = run(cfg, echo=lambda m, k=k: print(f"[fold {k}] {m}", flush=True))
            speeds.append(result.samples_per_second)
        images = [DATA / "images" / key for key in held]
        writers = [
            ("template", "template", True),
            ("SmolLM2 untrained (shipped prompt, few-shot)", "smollm2", True),
            ("SmolLM2 untrained (training prompt, no few-shot)", "smollm2", False),
            ("SmolLM2 + LoRA (this fold's adapter)", f"hf:{adapter}", False),
        ]
        if args.skip_shipped:
            writers.pop(1)
        for name, writer, few_shot in writers:
            cands, rate = caption_with(writer, images, few_shot)
            row = {**score(cands, refs), "img_s": rate}
            rows.setdefault(name, []).append(row)
            print(
                f"[fold {k}] {name}: " + ", ".join(f"{m} {v:.3f}" for m, v in row.items()),
                flush=True,
            )
            (
                out / f"fold{k}-{writer.replace('/', '_').replace(':', '_')}-{few_shot}.json"
            ).write_text(json.dumps(cands, indent=1))
    if speeds:
        print(f"\nwriter training {statistics.mean(speeds):.2f} samples/s on this CPU")
    print(f"\n{len(rows['template'])} fold(s), {args.eval_images or 'all'} held-out photos each\n")
    print("| writer | CIDEr-D | BLEU-4 | CHAIR-i | img/s |\n|---|---|---|---|---|")
    for name, per in rows.items():
        m = {key: statistics.mean(r[key] for r in per) for key in per[0]}
        print(
            f"| {name} | {m['cider_d']:.3f} | {m['bleu4']:.3f} | {m['chair_i']:.3f} "
            f"| {m['img_s']:.2f} |"
        )
    (out / "summary.json").write_text(json.dumps({"rows": rows, "samples_per_s": speeds}, indent=1))


if __name__ == "__main__":
    main()
