"""The SQLite results store: keys, round trips, durability across a killed process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from captionkit.engine.store import ResultStore, default_store_path, result_key
from captionkit.errors import StoreError
from captionkit.types import Candidate, CaptionRequest, CaptionResult, Decoding


def make_result(source="a.jpg", text="a red image", **kw) -> CaptionResult:
    base = dict(
        source=source,
        text=text,
        candidates=[Candidate(text, 0.9)] if text else [],
        backend="fake",
        model="fake-model",
        style="short",
        sha256="ab" * 32,
        seconds=0.25,
        extra={"colour": "red", "nested": {"k": [1, 2]}},
        path=f"/photos/{source}",
    )
    base.update(kw)
    return CaptionResult(**base)


@pytest.fixture
def store(tmp_path):
    s = ResultStore(tmp_path / "results.sqlite")
    yield s
    s.close()


def key(sha="ab" * 32, request=None, options="{}", backend="fake", model="fake-model"):
    request = request or CaptionRequest()
    return result_key(sha, backend, model, request.fingerprint(), options)


def test_put_get_roundtrip(store):
    original = make_result()
    assert store.put_many([(key(), original)]) == 1
    got = store.get(key())
    assert got is not None
    assert got.cached is True
    assert original.cached is False
    got.cached = False
    assert got == original
    assert store.count() == 1


def test_unknown_key_is_none(store):
    assert store.get("nope") is None


def test_failures_are_not_stored(store):
    failed = make_result(text=None, error="corrupt image")
    no_text = make_result(source="b.jpg", text=None)
    ok = make_result(source="c.jpg")
    written = store.put_many([("k1", failed), ("k2", no_text), ("k3", ok)])
    assert written == 1
    assert store.get("k1") is None and store.get("k2") is None
    assert store.get("k3") is not None
    assert store.put_many([]) == 0


def test_key_changes_with_every_part():
    base = key()
    assert key() == base  # stable
    variants = {
        key(sha="cd" * 32),
        key(backend="other"),
        key(model="other-model"),
        key(options='{"variant":"v2"}'),
        key(request=CaptionRequest(style="detailed")),
        key(request=CaptionRequest(prompt="Describe it")),
        key(request=CaptionRequest(num_captions=3)),
        key(request=CaptionRequest(decoding=Decoding(num_beams=3))),
        key(request=CaptionRequest(decoding=Decoding(seed=1))),
        key(request=CaptionRequest(language="de")),
    }
    assert base not in variants
    assert len(variants) == 10


def test_request_fingerprint_stable_and_sensitive():
    assert CaptionRequest().fingerprint() == CaptionRequest().fingerprint()
    assert len(CaptionRequest().fingerprint()) == 16
    temps = {CaptionRequest(decoding=Decoding(temperature=t)).fingerprint() for t in (0.7, 1.0)}
    assert len(temps) == 2


def test_reopening_keeps_rows(tmp_path):
    path = tmp_path / "deep" / "folder" / "store.sqlite"
    s1 = ResultStore(path)
    s1.put_many([(f"k{i}", make_result(source=f"{i}.jpg")) for i in range(5)])
    s1.close()
    s2 = ResultStore(path)
    try:
        assert s2.count() == 5
        assert s2.get("k3").source == "3.jpg"
    finally:
        s2.close()


def test_insert_or_replace_same_key(store):
    store.put_many([("k", make_result(text="old"))])
    store.put_many([("k", make_result(text="new"))])
    assert store.count() == 1
    assert store.get("k").text == "new"


def test_reads_from_another_thread(store):
    store.put_many([("k", make_result())])
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.get("k").text))
    thread.start()
    thread.join()
    assert seen == ["a red image"]


def test_iter_results_filters(store):
    store.put_many(
        [
            ("1", make_result(source="1.jpg", backend="fake", model="m1")),
            ("2", make_result(source="2.jpg", backend="fake", model="m2")),
            ("3", make_result(source="3.jpg", backend="hf", model="m1")),
        ]
    )
    assert {r.source for r in store.iter_results()} == {"1.jpg", "2.jpg", "3.jpg"}
    assert [r.source for r in store.iter_results(backend="fake")] == ["1.jpg", "2.jpg"]
    assert sorted(r.source for r in store.iter_results(model="m1")) == ["1.jpg", "3.jpg"]
    assert [r.source for r in store.iter_results(backend="hf", model="m1")] == ["3.jpg"]
    assert list(store.iter_results(backend="nobody")) == []
    assert all(not r.cached for r in store.iter_results())


def test_default_path_is_in_the_user_cache(tmp_path):
    # conftest points XDG_CACHE_HOME at a temporary home.
    assert str(default_store_path()).startswith(os.environ["XDG_CACHE_HOME"])
    assert default_store_path().name == "results.sqlite"


def test_wal_survives_sigkill_right_after_commit(tmp_path):
    path = tmp_path / "store.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from captionkit.engine.store import ResultStore
        from captionkit.types import CaptionResult
        store = ResultStore({str(path)!r})
        store.put_many([(f"k{{i}}", CaptionResult(source=f"{{i}}.jpg", text=f"caption {{i}}",
                         sha256="x")) for i in range(20)])
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "committed" in proc.stdout
    # The process died with the WAL not checkpointed: the rows must still be there.
    assert (tmp_path / "store.sqlite-wal").exists()
    reopened = ResultStore(path)
    try:
        assert reopened.count() == 20
        assert reopened.get("k7").text == "caption 7"
    finally:
        reopened.close()


def test_journal_mode_is_wal(store):
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not a database at all" * 50)
    with pytest.raises(StoreError, match="not a captionkit results store"):
        ResultStore(path)
