"""Turning user inputs into a lazy, ordered stream of sources without reading pixels."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import pytest

from captionkit.errors import ImageDecodeError, InputError
from captionkit.inputs import sources as sources_mod
from captionkit.inputs.fetch import read_source
from captionkit.inputs.sources import count_sources, iter_sources, looks_like_image, walk_folder
from helpers.fakes import write_image


def names(sources) -> list[str]:
    return [s.rel.as_posix() for s in sources]


def test_folder_recursive_by_default_files_before_subfolders(photo_dir):
    (photo_dir / "bad").rename(photo_dir.parent / "bad-elsewhere")
    got = list(iter_sources([str(photo_dir)]))
    assert names(got) == ["blue.png", "red.jpg", "sub/green.jpg"]
    assert all(s.path is not None and s.path.is_file() and s.url is None for s in got)
    assert got[0].key == str(photo_dir / "blue.png")


def test_recursion_off_stays_in_the_top_folder(photo_dir):
    got = list(iter_sources([str(photo_dir)], recursive=False))
    assert names(got) == ["blue.png", "red.jpg"]


def test_include_and_exclude_globs(photo_dir):
    inc = list(iter_sources([str(photo_dir)], include=("*.jpg",)))
    assert "blue.png" not in names(inc)
    assert {"red.jpg", "sub/green.jpg"} <= set(names(inc))
    # A pattern with a slash matches the relative path; a bare pattern matches the name.
    exc = list(iter_sources([str(photo_dir)], exclude=("sub/*", "bad/*")))
    assert names(exc) == ["blue.png", "red.jpg"]
    both = list(iter_sources([str(photo_dir)], include=("*.jpg",), exclude=("red*",)))
    assert "red.jpg" not in names(both)
    assert "sub/green.jpg" in names(both)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / ".thumb.jpg")
    write_image(tmp_path / ".cache" / "b.jpg")
    write_image(tmp_path / "sub" / ".c.png")
    assert names(walk_folder(tmp_path)) == ["a.jpg"]


def test_suffixless_image_found_by_content_and_junk_ignored(tmp_path):
    write_image(tmp_path / "photo_no_suffix", fmt="JPEG")
    write_image(tmp_path / "scan.weird", fmt="PNG")
    write_image(tmp_path / "webp_file", fmt="WEBP")
    (tmp_path / "README").write_text("hello")
    (tmp_path / "data.bin").write_bytes(b"\x00" * 64)
    assert names(walk_folder(tmp_path)) == ["photo_no_suffix", "scan.weird", "webp_file"]


def test_upper_case_suffix_counts_as_image(tmp_path):
    write_image(tmp_path / "IMG_0001.JPG", fmt="JPEG")
    assert names(walk_folder(tmp_path)) == ["IMG_0001.JPG"]


def test_txt_and_other_sidecars_are_never_opened(tmp_path, monkeypatch):
    # A .txt that *contains* JPEG bytes must still be skipped without a read.
    write_image(tmp_path / "cap.txt", fmt="JPEG")
    write_image(tmp_path / "meta.json", fmt="JPEG")
    write_image(tmp_path / "x", fmt="JPEG")
    opened: list[str] = []
    real = sources_mod.sniff_image

    def spy(path: Path) -> bool:
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(sources_mod, "sniff_image", spy)
    assert names(walk_folder(tmp_path)) == ["x"]
    assert opened == ["x"]
    assert not looks_like_image(Path("anything.txt"))


def test_order_is_deterministic_regardless_of_creation_order(tmp_path):
    for name in ["c.jpg", "a.jpg", "b/z.jpg", "b/a.jpg", "aa/x.jpg", "B.jpg"]:
        write_image(tmp_path / name)
    first = names(walk_folder(tmp_path))
    assert first == names(walk_folder(tmp_path))
    # Files of a folder in name order (code-point order), then its sub-folders depth-first.
    assert first == ["B.jpg", "a.jpg", "c.jpg", "aa/x.jpg", "b/a.jpg", "b/z.jpg"]


def test_lazy_first_item_before_the_tree_is_listed(tmp_path, monkeypatch):
    write_image(tmp_path / "first.jpg")
    for i in range(30):
        write_image(tmp_path / f"dir{i:02d}" / "img.png", size=(8, 8))
    scanned: list[str] = []
    real = os.scandir

    def counting(path):
        scanned.append(str(path))
        return real(path)

    monkeypatch.setattr(sources_mod.os, "scandir", counting)
    it = iter_sources([str(tmp_path)])
    assert scanned == []  # nothing happens until the first item is asked for
    first = next(it)
    assert first.rel == Path("first.jpg")
    assert len(scanned) == 1  # only the top folder, none of the 30 sub-folders
    rest = list(it)
    assert len(rest) == 30
    assert len(scanned) == 31


def test_iter_sources_is_a_generator_that_fails_when_reached(photo_dir):
    it = iter_sources([str(photo_dir / "red.jpg"), str(photo_dir / "nope")])
    first = next(it)
    assert first.path == photo_dir / "red.jpg"
    assert first.rel == Path("red.jpg")
    with pytest.raises(InputError, match="no such file or folder"):
        next(it)


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        list(iter_sources([str(tmp_path / "missing.jpg")]))
    assert "missing.jpg" in str(info.value)
    assert "\n" not in str(info.value)


def test_explicit_file_is_taken_whatever_its_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    (got,) = iter_sources([str(path)])
    assert got.path == path


def test_stdin_lines_and_urls_in_order(photo_dir):
    stream = io.StringIO(
        f"\n# a comment\n{photo_dir / 'red.jpg'}\n  https://example.org/a.jpg  \n"
        f"{photo_dir / 'sub'}\n"
    )
    got = list(iter_sources(["http://h/x.png", "-"], stdin=stream))
    assert [s.key for s in got] == [
        "http://h/x.png",
        str(photo_dir / "red.jpg"),
        "https://example.org/a.jpg",
        str(photo_dir / "sub" / "green.jpg"),
    ]
    assert got[0].is_url and got[0].url == "http://h/x.png" and got[0].path is None
    assert not got[1].is_url


def test_stdin_missing_path_is_yielded_and_fails_alone_when_read(tmp_path):
    # `find ... | captionkit caption -` where a file was deleted meanwhile: that one image
    # fails when read; the list goes on (issue #11, item 8).
    good = write_image(tmp_path / "a.png")
    gone = tmp_path / "gone.png"
    later = write_image(tmp_path / "b.png")
    stream = io.StringIO(f"{good}\n{gone}\n{later}\n")
    got = list(iter_sources(["-"], stdin=stream))
    assert [s.path for s in got] == [good, gone, later]
    assert got[1].key == str(gone) and got[1].rel == Path("gone.png")
    with pytest.raises(ImageDecodeError, match=r"^no such file$"):
        read_source(got[1])


def test_stdin_broken_symlink_fails_alone_with_a_clear_reason(tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "deleted.png")
    (got,) = iter_sources(["-"], stdin=io.StringIO(f"{link}\n"))
    with pytest.raises(ImageDecodeError, match="broken symlink"):
        read_source(got)


def test_command_line_missing_path_is_still_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        list(iter_sources([str(tmp_path / "gone.png"), "-"], stdin=io.StringIO("")))


def test_count_sources_tolerates_a_missing_path(photo_dir, tmp_path):
    # The progress total runs in a background thread: it must never raise, only count.
    assert count_sources([str(photo_dir), str(tmp_path / "gone"), "-"], recursive=False) == 2


def _planted_skips(root: Path) -> None:
    write_image(root / "a.jpg")
    write_image(root / ".thumb.jpg")  # hidden file
    write_image(root / ".cache" / "b.jpg")  # hidden folder: counted once, not walked
    write_image(root / "sub" / "c.png")
    write_image(root / "sub" / ".d.png")
    (root / "dead.jpg").symlink_to(root / "deleted.jpg")
    (root / "sub" / "dead2").symlink_to(root / "nowhere")
    (root / "alias.jpg").symlink_to(root / "a.jpg")  # a working link to a file is taken
    (root / "README").write_text("hello")  # neither image by suffix nor by content
    (root / "a.txt").write_text("a sidecar")  # a sidecar: expected, not reported


def test_skipped_entries_are_counted_by_reason(tmp_path):
    _planted_skips(tmp_path)
    skipped: Counter[str] = Counter()
    got = list(iter_sources([str(tmp_path)], skipped=skipped))
    assert names(got) == ["a.jpg", "alias.jpg", "sub/c.png"]
    assert skipped == Counter({"hidden": 3, "broken symlink": 2, "not an image": 1})
    walked: Counter[str] = Counter()
    assert names(walk_folder(tmp_path, recursive=False, skipped=walked)) == ["a.jpg", "alias.jpg"]
    assert walked == Counter({"hidden": 2, "broken symlink": 1, "not an image": 1})


def test_skipped_counter_is_optional_and_not_filled_by_count_sources(tmp_path):
    _planted_skips(tmp_path)
    assert names(iter_sources([str(tmp_path)])) == ["a.jpg", "alias.jpg", "sub/c.png"]
    skipped: Counter[str] = Counter()
    assert count_sources([str(tmp_path)], skipped=skipped) == 3
    assert skipped == Counter()  # the run's own walk counts; the ETA walk must not add to it


def test_count_sources_ignores_stdin(photo_dir):
    assert count_sources([str(photo_dir), "-"], recursive=False) == 2
    assert count_sources([str(photo_dir)]) == len(list(iter_sources([str(photo_dir)])))


def test_source_meta_defaults_empty_is_read_only_and_survives_pickle():
    import pickle

    from captionkit.inputs.sources import Source

    plain = Source(key="a.jpg")
    assert dict(plain.meta) == {}
    frame = Source(key="clip.mp4#t=1.000", meta={"video": "clip.mp4", "t": 1.0, "frame": 3})
    with pytest.raises(TypeError):
        frame.meta["t"] = 2.0  # type: ignore[index]
    given = {"col": "x"}
    row = Source(key="r", meta=given)
    given["col"] = "changed"  # the caller's dict is copied, not shared
    assert row.meta["col"] == "x"
    assert Source(key="r", meta={"col": "y"}) == row and hash(Source(key="r")) == hash(row)
    back = pickle.loads(pickle.dumps(frame))
    assert back == frame and dict(back.meta) == dict(frame.meta)
