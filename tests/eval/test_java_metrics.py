"""METEOR and SPICE degrade to a one-line note when Java or SPICE's jars are missing."""

from __future__ import annotations

import pytest

from captionkit.eval import java
from captionkit.eval.metrics import score_all

from .conftest import java_available

CANDS = {"a": "a dog runs on the grass", "b": "two men ride bikes"}
REFS = {"a": ["a dog running on grass", "a brown dog"], "b": ["men on bicycles", "two cyclists"]}


def test_no_java_skips_meteor_and_spice(monkeypatch) -> None:
    monkeypatch.setattr(java.shutil, "which", lambda name: None)
    notes: list[str] = []
    result = score_all(CANDS, REFS, warn=notes.append)
    assert set(result.skipped) == {"METEOR", "SPICE"}
    assert all("Java" in msg for msg in result.skipped.values())
    assert "CIDEr-D" in result.corpus and "BLEU-4" in result.corpus
    assert len(notes) == 2 and all("\n" not in n for n in notes)


def test_spice_offline_is_reported_in_one_line(monkeypatch) -> None:
    pytest.importorskip("pycocoevalcap")
    monkeypatch.setattr(java.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(java, "spice_jars_present", lambda: False)
    monkeypatch.setattr(java, "_spice_failure", None)

    def offline():
        raise OSError("Name or service not known")

    import pycocoevalcap.spice.get_stanford_models as gsm

    monkeypatch.setattr(gsm, "get_stanford_models", offline)
    result = score_all(CANDS, REFS, ("cider", "spice"))
    assert "could not download" in result.skipped["SPICE"]
    assert "CIDEr-D" in result.corpus and "SPICE" not in result.corpus


@pytest.mark.slow
@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_meteor_matches_pycocoevalcap() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    from captionkit.eval.metrics import ptb_tokenize

    cands = {k: ptb_tokenize([v])[0] for k, v in CANDS.items()}
    refs = {k: ptb_tokenize(v) for k, v in REFS.items()}
    ours, per = java.meteor(cands, refs)
    theirs, their_per = Meteor().compute_score(refs, {k: [v] for k, v in cands.items()})
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert list(per.values()) == pytest.approx(their_per, abs=1e-6)
