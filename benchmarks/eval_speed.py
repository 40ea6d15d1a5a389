"""How fast the Java-free COCO metrics are, against pycocoevalcap on the same inputs.

Prints absolute times and ratios measured in one run on the Flickr8k dev sample
(../shared/data/flickr8k-dev): tokenising 750 references (Python vs the Stanford jar),
CIDEr-D for 150 images (pycocoevalcap's Cider vs captionkit's cider_d), and the repeated
scoring self-critical training does (CiderD.score with document frequencies kept).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from contextlib import redirect_stderr
from pathlib import Path

from captionkit.eval.metrics import CiderD, cider_d, ptb_tokenize
from captionkit.eval.tokenize import ptb_tokenize_one

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "flickr8k-dev"


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    refs = json.loads((DATA / "references.json").read_text(encoding="utf-8"))
    texts = [c for caps in refs.values() for c in caps]
    cands = {k: v[0] for k, v in refs.items()}
    others = {k: v[1:] for k, v in refs.items()}

    ptb_tokenize_one.cache_clear()
    py_tok = timed(lambda: ptb_tokenize(texts))
    print(f"tokenise 750 refs, Python (cold cache): {py_tok * 1000:.1f} ms")
    if shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        data = {str(i): [{"caption": t}] for i, t in enumerate(texts)}
        with redirect_stderr(io.StringIO()):
            java_tok = timed(lambda: PTBTokenizer().tokenize(data))
        print(f"tokenise 750 refs, Stanford jar:        {java_tok * 1000:.1f} ms "
              f"({java_tok / py_tok:.1f}x the Python time)")  # fmt: skip

    ct = dict(zip(cands, ptb_tokenize(list(cands.values())), strict=True))
    rt = {k: ptb_tokenize(v) for k, v in others.items()}
    ours = timed(lambda: cider_d(ct, rt, tokenized=True), 5)
    from pycocoevalcap.cider.cider import Cider

    res = {k: [v] for k, v in ct.items()}
    theirs = timed(lambda: Cider().compute_score(rt, res), 5)
    print(f"CIDEr-D 150 images: captionkit {ours * 1000:.1f} ms, "
          f"pycocoevalcap {theirs * 1000:.1f} ms ({theirs / ours:.2f}x)")  # fmt: skip
    scorer = CiderD(rt, tokenized=True)
    steady = timed(lambda: scorer.score(ct), 20)
    print(f"CiderD.score, DF kept (SCST step, 150 captions): {steady * 1000:.1f} ms "
          f"({theirs / steady:.2f}x faster than a pycocoevalcap call)")  # fmt: skip


if __name__ == "__main__":
    main()
