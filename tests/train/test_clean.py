"""`data clean` finds planted problems, changes nothing on a dry run, never deletes."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from train_helpers import flickr, flickr_references

from captionkit.train.clean import (
    CleanOptions,
    apply,
    near_duplicates,
    normalise_caption,
    scan,
    write_csv,
)
from captionkit.train.language import language_problem


def test_normalise_caption():
    assert normalise_caption("  A dog\truns  on  grass . ") == "A dog runs on grass"
    assert normalise_caption("A dog runs.") == "A dog runs."
    assert normalise_caption(" . ") == ""


@pytest.mark.parametrize(
    ("text", "lang", "bad"),
    [
        ("A black dog runs across the grass", "en", False),
        ("Ein schwarzer Hund läuft über die Wiese mit dem Ball", "en", True),
        ("Ein schwarzer Hund läuft über die Wiese mit dem Ball", "de", False),
        ("一只黑狗在草地上奔跑", "en", True),
        ("Un chien noir court dans le jardin avec la balle", "en", True),
        ("Dog", "en", False),  # too short to judge
    ],
)
def test_language_heuristic(text, lang, bad):
    assert (language_problem(text, lang) is not None) == bad


def test_near_duplicates_by_band_lookup():
    base = 0x0123456789ABCDEF
    hashes = [("a", base), ("b", base ^ 0b101), ("c", ~base & (2**64 - 1)), ("d", base ^ 0xFF)]
    found = near_duplicates(hashes, 4)
    assert found == [("b", "a", 2)]
    assert near_duplicates(hashes, -1) == []


@pytest.fixture
def planted(tmp_path):
    """Six real photos with sidecars, plus one of every problem `data clean` looks for."""
    refs = flickr_references()
    names = sorted(refs)[:6]
    root = tmp_path / "photos"
    root.mkdir()
    for name in names:
        shutil.copy(flickr() / "images" / name, root / name)
        (root / name).with_suffix(".txt").write_text("\n".join(refs[name][:2]) + "\n")
    rng = np.random.default_rng(0)

    def noise(w, h):
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    shutil.copy(root / names[0], root / "copy.jpg")  # exact duplicate
    (root / "copy.txt").write_text("A copy of the first photo with the same bytes\n")
    src = Image.open(root / names[1])  # near duplicate: resized and re-encoded
    src.resize((src.width // 2, src.height // 2)).save(root / "smaller.jpg", quality=80)
    (root / "smaller.txt").write_text("A smaller copy of the second photo here\n")
    data = (root / names[2]).read_bytes()
    (root / "broken.jpg").write_bytes(data[:200])  # truncated
    (root / "broken.txt").write_text("Whatever was in the broken file\n")
    noise(40, 40).save(root / "tiny.png")
    (root / "tiny.txt").write_text("A very small picture of noise\n")
    noise(900, 100).save(root / "banner.png")
    (root / "banner.txt").write_text("A very wide banner of noise\n")
    Image.new("RGB", (300, 200), (128, 128, 128)).save(root / "grey.png")
    (root / "grey.txt").write_text("A plain grey picture with nothing\n")
    # caption problems on an otherwise good image
    (root / names[3]).with_suffix(".txt").write_text(
        "A dog .\n"  # too short after normalisation
        + "Ein Hund läuft über die Wiese mit dem Ball im Park\n"  # German
        + " ".join(["word"] * 80)
        + "\n"  # too long
        + "A  man   in a red jacket climbs a rock face .\n"  # fine after normalising
    )
    # every caption bad: the image itself is set aside
    (root / names[4]).with_suffix(".txt").write_text("ok\n")
    return root, names


def test_scan_reports_planted_problems_and_apply_moves_them_aside(planted, tmp_path):
    root, names = planted
    report = scan(root, CleanOptions())
    by_check = {}
    for p in report.problems:
        by_check.setdefault(p.check, []).append(p.path)
    assert by_check["duplicate"] == ["copy.jpg"]
    assert by_check["near-duplicate"] == ["smaller.jpg"]
    assert by_check["unreadable"] == ["broken.jpg"]
    assert by_check["tiny"] == ["tiny.png"]
    assert by_check["aspect"] == ["banner.png"]
    assert by_check["uniform"] == ["grey.png"]
    assert by_check["short-caption"] == [names[3], names[4]]
    assert by_check["language"] == [names[3]]
    assert by_check["long-caption"] == [names[3]]
    assert by_check["no-caption"] == [names[4]]
    assert report.caption_source == "sidecars" and report.normalised >= 1
    assert report.cleaned[root / names[3]] == ["A man in a red jacket climbs a rock face"]

    csv_path = write_csv(report, tmp_path / "report.csv")
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert {r["check"] for r in rows} >= {"duplicate", "unreadable", "language"}
    assert (root / "copy.jpg").exists()  # a dry run changes nothing

    qdir = apply(report)
    moved = sorted(p.name for p in qdir.iterdir() if p.suffix in {".jpg", ".png"})
    assert moved == sorted(
        ["copy.jpg", "smaller.jpg", "broken.jpg", "tiny.png", "banner.png", "grey.png", names[4]]
    )
    assert not (root / "grey.png").exists() and (qdir / "grey.txt").exists()
    kept = (root / names[3]).with_suffix(".txt").read_text().splitlines()
    assert kept == ["A man in a red jacket climbs a rock face"]
    original = (qdir / "captions" / names[3]).with_suffix(".txt").read_text()
    assert "Ein Hund" in original  # the original caption file is kept, not deleted
    assert (qdir / "clean_report.csv").is_file()
    again = scan(root)  # the cleaned folder is clean
    assert [p for p in again.problems if p.action == "quarantine"] == []


def test_references_json_dataset_is_rewritten_with_a_backup(tmp_path):
    refs = flickr_references()
    names = sorted(refs)[:3]
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    for n in names:
        shutil.copy(flickr() / "images" / n, root / "images" / n)
    data = {n: [*refs[n][:2], "", "Un chien court dans le parc avec la balle"] for n in names}
    (root / "references.json").write_text(json.dumps(data))
    report = scan(root)
    assert report.caption_source == "references.json"
    assert sum(p.check == "language" for p in report.problems) == 3
    qdir = apply(report)
    cleaned = json.loads((root / "references.json").read_text())
    assert cleaned == {n: [normalise_caption(c) for c in refs[n][:2]] for n in names}
    assert json.loads((qdir / "references.json.orig").read_text()) == data


def _photo(path, seed=0, size=(160, 120)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("link_name", ["link.jpg", "0link.jpg"])  # after and before the target
def test_a_symlink_duplicate_is_quarantined_never_its_target(tmp_path, link_name):
    root = tmp_path / "ds"
    root.mkdir()
    real = _photo(root / "a.jpg")
    _photo(root / "b.jpg", seed=1)
    link = root / link_name
    link.symlink_to("a.jpg")  # relative, as `ln -s a.jpg link.jpg` makes it
    report = scan(root, CleanOptions(near_duplicate_distance=-1))
    dups = [(p.path, p.detail) for p in report.problems if p.check == "duplicate"]
    assert dups == [(link_name, "same bytes as a.jpg")]
    assert report.quarantined() == [link_name]
    qdir = apply(report)
    assert real.is_file() and not real.is_symlink()  # the real file never moves
    assert not link.exists() and not link.is_symlink()
    moved = qdir / link_name
    assert moved.is_symlink() and moved.read_bytes() == real.read_bytes()  # not dangling
    assert not (qdir / "a.jpg").exists()


def test_a_symlink_flagged_for_itself_is_moved_not_the_file_it_points_to(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = _photo(outside / "small.png", size=(40, 40))  # too small for a fine-tune
    root = tmp_path / "ds"
    root.mkdir()
    _photo(root / "a.jpg")
    (root / "small_link.png").symlink_to(target)
    report = scan(root, CleanOptions(near_duplicate_distance=-1))
    assert [(p.path, p.check) for p in report.problems] == [("small_link.png", "tiny")]
    qdir = apply(report)
    assert target.is_file()  # the file outside the dataset is untouched
    assert not (root / "small_link.png").is_symlink()
    assert (qdir / "small_link.png").is_symlink()
    assert (qdir / "small_link.png").resolve() == target.resolve()
    assert (root / "a.jpg").is_file()


def test_a_malformed_references_file_is_an_error_not_no_captions(tmp_path):
    """A references.json that cannot be read stops the scan with one line; it used to be read
    as "this folder has no captions", so caption checks were skipped without a word."""
    from captionkit.errors import InputError

    root = tmp_path / "ds"
    root.mkdir()
    _photo(root / "a.jpg")
    (root / "references.json").write_text('{"a.jpg": ["a dog", "a cat"],')  # cut short
    with pytest.raises(InputError, match="cannot read"):
        scan(root)
    (root / "references.json").unlink()
    assert scan(root).caption_source == "none"  # a plain folder of images still scans
