"""Phase 2 (self-critical training): EOS handling and a reward that really rises."""

from __future__ import annotations

import json

from train_helpers import greedy_captions, quick_config

from captionkit.train.scst import EOS_WORD, end_mask, texts_with_eos


class _Tok:
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{i}" for i in ids if i > 3)


def test_eos_is_counted_in_mask_and_reward_text():
    import torch

    tokens = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 2, 2, 2], [5, 6, 7, 8, 9]])
    mask, has_eos = end_mask(tokens, eos_id=2)
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert has_eos.tolist() == [True, True, False]
    texts = texts_with_eos(_Tok(), tokens, 2)
    # an ended caption carries the EOS word; one cut off at the length limit does not
    assert texts == [f"w5 w6 {EOS_WORD}", f"w5 {EOS_WORD}", "w5 w6 w7 w8 w9"]


def test_scst_raises_cider_d_on_the_training_set(
    tmp_path, tiny_encoder, tiny_decoder, eight_images
):
    """Teacher forcing on captions that mostly end in a spurious " and a dog" makes greedy
    decoding add it; self-critical training against the true captions must learn to stop
    (the EOS word in the reward is what pays for stopping at the right place)."""
    from captionkit.eval.metrics import cider_d
    from captionkit.train.loop import run

    refs = json.loads((eight_images / "references.json").read_text())
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    (noisy / "images").symlink_to(eight_images / "images")
    (noisy / "references.json").write_text(
        json.dumps(
            {n: [r[0]] * 2 + [r[0].rstrip(" .") + " and a dog ."] * 3 for n, r in refs.items()}
        )
    )
    quiet = {"echo": lambda _: None}
    xe = run(
        quick_config(
            noisy, tmp_path / "xe", encoder=str(tiny_encoder), decoder=str(tiny_decoder), epochs=30
        ),
        **quiet,
    )
    names = sorted(refs)
    images = [eight_images / "images" / n for n in names]

    def score(model_dir):
        caps = greedy_captions(model_dir, images)
        return cider_d(dict(zip(names, caps, strict=True)), refs)[0], caps

    before, caps = score(xe.output)
    assert sum(c.endswith("and a dog") for c in caps) >= 6, caps

    sc = run(
        quick_config(
            eight_images,
            tmp_path / "scst",
            init=str(xe.output),
            scst=True,
            epochs=20,
            lr=3e-4,
            scst_samples=5,
            log_every=2,
        ),
        **quiet,
    )
    after, caps = score(sc.output)
    assert after > before + 1.0, (before, after, caps)
    assert sum(c.endswith("and a dog") for c in caps) <= 2, caps
    logged = [row["baseline"] for row in sc.history if "baseline" in row]
    assert logged[-1] > logged[0]  # the greedy (baseline) reward logged during training rose
