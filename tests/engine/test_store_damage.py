"""The results store when the file is damaged, foreign, locked or read-only, and with file
names that are not UTF-8 (issue #11, items 1 and 7)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from captionkit.engine.runner import Runner, RunOptions
from captionkit.engine.sinks import SidecarSink
from captionkit.engine.store import ResultStore
from captionkit.errors import StoreError
from captionkit.inputs.sources import iter_sources
from captionkit.types import CaptionRequest, CaptionResult
from helpers.fakes import FakeCaptioner, write_image

LATIN1 = os.fsdecode(b"/photos/caf\xe9.jpg")


def fill(path: Path, n: int = 300) -> None:
    store = ResultStore(path)
    store.put_many(
        [(f"k{i}", CaptionResult(source=f"{i}.jpg", text="x" * 200, sha256="s")) for i in range(n)]
    )
    store.close()
    with sqlite3.connect(path) as db:  # move the rows from the WAL into the main file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def damage(path: Path) -> None:
    """Overwrite one b-tree page in the middle with noise, as a bad disk or a bad copy would."""
    with open(path, "r+b") as fh:
        fh.seek(4096 * 5)
        fh.write(os.urandom(4096))


def test_non_utf8_source_roundtrips(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    try:
        result = CaptionResult(source=LATIN1, text="a red image", sha256="s", path=LATIN1)
        assert store.put_many([("k", result)]) == 1
        got = store.get("k")
        assert got is not None and got.source == LATIN1 and got.path == LATIN1
        assert os.fsencode(got.source) == b"/photos/caf\xe9.jpg"
        assert [r.source for r in store.iter_results()] == [LATIN1]
    finally:
        store.close()


def test_damaged_pages_detected_at_open_with_a_move_aside_hint(tmp_path):
    path = tmp_path / "results.sqlite"
    fill(path)
    damage(path)
    with pytest.raises(StoreError) as info:
        ResultStore(path)
    message = str(info.value)
    assert str(path) in message and f"mv {path} " in message and "damaged" in message
    assert "\n" not in message
    with pytest.raises(StoreError, match="damaged"):
        ResultStore(path, readonly=True)


def test_quick_check_is_cheap(tmp_path):
    path = tmp_path / "big.sqlite"
    fill(path, 20_000)
    start = time.perf_counter()
    ResultStore(path).close()
    assert time.perf_counter() - start < 2  # measured: 0.13 s for 200k rows (200 MB)


def test_not_a_database(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not a database at all" * 50)
    with pytest.raises(StoreError, match=r"not a captionkit results store.*mv "):
        ResultStore(path)
    assert path.read_bytes().startswith(b"this is not")  # never overwritten


def test_another_apps_database(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (id INTEGER, name TEXT)")
    with pytest.raises(StoreError, match="not a captionkit results store"):
        ResultStore(path)


def test_a_folder_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="folder"):
        ResultStore(tmp_path)


def test_locked_store_is_one_line(tmp_path):
    path = tmp_path / "s.sqlite"
    fill(path, 3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            ResultStore(path, timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only files")
def test_read_only_store_file(tmp_path):
    path = tmp_path / "s.sqlite"
    fill(path, 3)
    path.chmod(0o444)
    try:
        with pytest.raises(StoreError, match="read-only"):
            ResultStore(path)
    finally:
        path.chmod(0o644)


def test_readonly_mode_reads_without_writing(tmp_path):
    path = tmp_path / "s.sqlite"
    fill(path, 3)
    store = ResultStore(path, readonly=True)
    try:
        assert store.count() == 3
    finally:
        store.close()
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


class _Broken:
    """A connection whose every statement fails like a page that went bad mid-run."""

    def execute(self, *args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    executemany = execute

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_store_damaged_mid_run_stops_the_run_and_never_blames_images(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    for i, colour in enumerate(["red", "green", "blue"]):
        write_image(photos / f"{i}.png", colour)
    store = ResultStore(tmp_path / "s.sqlite")
    monkeypatch.setattr(store, "_conn", lambda: _Broken())
    runner = Runner(FakeCaptioner(), CaptionRequest(), store=store, sinks=[SidecarSink()])
    with pytest.raises(StoreError, match=r"damaged.*mv "):
        runner.run(iter_sources([str(photos)]))
    # With --force the lookup is skipped and the commit hits the damage: same one line, and
    # the batch computed is still written to the sinks.
    forced = Runner(
        FakeCaptioner(),
        CaptionRequest(),
        store=store,
        sinks=[SidecarSink()],
        options=RunOptions(force=True),
    )
    with pytest.raises(StoreError, match="damaged"):
        forced.run(iter_sources([str(photos)]))
    assert sorted(p.name for p in photos.glob("*.txt")) == ["0.txt", "1.txt", "2.txt"]
