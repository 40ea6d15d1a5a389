"""``captionkit data pairs``: facts/description -> caption pairs, split by image, filtered."""

from __future__ import annotations

import json

import pytest
from train_helpers import make_subset
from typer.testing import CliRunner

from captionkit.llm.base import ChatMessage


def fake_prompts(images, options, echo):
    out = []
    for p in images:
        text = f"Objects: {p.stem[:4]}"
        out.append({"instruction": "Write.", "input": text, "turns": [ChatMessage("user", text)]})
    return out


def test_pairs_are_split_by_image_deduplicated_and_length_filtered(tmp_path, monkeypatch):
    from captionkit.train import pairs

    data = make_subset(tmp_path / "d", 12, per_image=2)
    refs = json.loads((data / "references.json").read_text())
    first = sorted(refs)[0]
    refs[first] = ["A dog runs.", "a dog runs", "too short", " ".join(["word"] * 50)]
    (data / "references.json").write_text(json.dumps(refs))
    monkeypatch.setattr(pairs, "facts_prompts", fake_prompts)
    lines: list[str] = []
    records = pairs.build_pairs(
        str(data), pairs.PairOptions(eval_share=0.5, min_words=3, max_words=40), lines.append
    )
    ofirst = [r["output"] for r in records if r["image"] == first]
    assert ofirst == [
        "A dog runs."
    ]  # the duplicate (case, full stop) and both length misfits dropped
    assert "dropped 1 duplicates, 2 outside 3-40 words" in lines[-1]
    splits: dict[str, set[str]] = {}
    for r in records:
        splits.setdefault(r["image"], set()).add(r["split"])
        assert r["messages"][-1] == {"role": "assistant", "content": r["output"]}
        assert r["messages"][0]["content"] == r["input"]
    assert all(len(s) == 1 for s in splits.values())  # never one photo on both sides
    assert {"train", "eval"} == set().union(*splits.values())
    # the split of a photo does not move when photos are added
    assert pairs.split_of(first, 0.5) == next(iter(splits[first]))


def test_read_pairs_accepts_plain_instruction_input_output(tmp_path):
    from captionkit.errors import InputError
    from captionkit.train.pairs import read_pairs

    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"instruction": "Caption.", "input": "dog, ball", "output": "a dog plays"})
        + "\n"
    )
    (r,) = read_pairs(path)
    assert r["messages"] == [
        {"role": "user", "content": "Caption.\n\ndog, ball"},
        {"role": "assistant", "content": "a dog plays"},
    ]
    assert r["split"] in ("train", "eval")
    path.write_text("{not json\n")
    with pytest.raises(InputError, match=r"p\.jsonl:1: not JSON"):
        read_pairs(path)


def test_description_needs_a_describer(tmp_path):
    from captionkit.errors import ConfigError
    from captionkit.train.pairs import PairOptions

    with pytest.raises(ConfigError, match="needs --model"):
        PairOptions(input="description")


def test_cli_writes_facts_pairs_in_the_writers_own_prompt(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    from captionkit.captioners.grounded.prompts import SYSTEM
    from captionkit.cli.data import app

    data = make_subset(tmp_path / "d", 2, per_image=2)
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(
        app, ["pairs", str(data), "--output", str(out), "--no-few-shot", "--preview", "1"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and "wrote 4 pairs" in result.output
    r = rows[0]
    assert r["source"] == "facts" and r["teacher"] == "references"
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert r["messages"][0]["content"] == SYSTEM
    assert r["input"] in r["messages"][1]["content"] and "Draft caption:" in r["input"]


def test_description_pairs_use_the_rewriters_prompt_and_record_the_teacher(tmp_path):
    pytest.importorskip("torch")
    from writer_helpers import build_tiny_llama

    from captionkit.captioners.rewrite import SYSTEM
    from captionkit.train.pairs import PairOptions, build_pairs
    from helpers.fakes import registered

    data = make_subset(tmp_path / "d", 3, per_image=2)
    with registered():
        refs = build_pairs(str(data), PairOptions(input="description", model="fake"), print)
        teacher = build_tiny_llama(tmp_path / "teacher")
        opts = PairOptions(
            input="description", model="fake", teacher=f"hf:{teacher}", min_words=0,
            teacher_prompt="Write a fun caption.",
        )  # fmt: skip
        taught = build_pairs(str(data), opts, print)
    assert len(refs) == 6 and {r["teacher"] for r in refs} == {"references"}
    r = refs[0]
    assert r["messages"][0] == {"role": "system", "content": SYSTEM}
    assert r["messages"][-2]["content"].endswith(f"Description: {r['input']}\n\nCaption:")
    assert len(taught) == len({r["input"] for r in refs})  # one per distinct description
    assert all(t["teacher"] == f"hf:{teacher}" for t in taught)
    assert all(t["teacher_prompt"] == "Write a fun caption." for t in taught)
