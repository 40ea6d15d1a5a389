"""The results store: every caption ever made, in one SQLite file, keyed by what made it.

The key is (image content hash, backend, model, request fingerprint, backend-options
fingerprint), so the same photo under another name is not recomputed, and changing the style,
prompt or decoding settings is. Rows are committed once per batch in WAL mode: a ``kill -9``
loses at most the batch in flight, and a rerun neither recomputes nor duplicates the rest.
Failures are never stored, so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from captionkit.errors import ConfigError
from captionkit.types import CaptionResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key      TEXT PRIMARY KEY,
    sha256   TEXT NOT NULL,
    backend  TEXT NOT NULL,
    model    TEXT NOT NULL,
    style    TEXT NOT NULL,
    source   TEXT NOT NULL,
    text     TEXT NOT NULL,
    record   TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_sha ON results (sha256);
"""


def default_store_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "results.sqlite"


def result_key(sha256: str, backend: str, model: str, request_fp: str, options_fp: str) -> str:
    blob = "\x1f".join((sha256, backend, model, request_fp, options_fp))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultStore:
    """Thread-safe reads (one connection per thread), writes from the engine's thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the store folder {self.path.parent}: {exc.strerror}"
            ) from None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self._conn().executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # also OperationalError: unwritable folder
            raise ConfigError(
                f"{self.path} is not a usable captionkit store ({exc}); choose another with --store"
            ) from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Each connection is used by one thread only; check_same_thread=False lets close()
            # release the worker threads' connections from the engine's thread.
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against process crashes (kill -9) in WAL mode; only a power
            # cut can lose the last commits, which a rerun then recomputes.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def get(self, key: str) -> CaptionResult | None:
        row = self._conn().execute("SELECT record FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        result = CaptionResult.from_dict(json.loads(row[0]))
        result.cached = True
        return result

    def put_many(self, items: Iterable[tuple[str, CaptionResult]]) -> int:
        """Insert successful results in one transaction; returns how many were written."""
        rows = []
        now = time.time()
        for key, result in items:
            if not result.ok:
                continue
            record = result.to_dict()
            record.pop("cached", None)
            rows.append(
                (
                    key,
                    result.sha256,
                    result.backend,
                    result.model,
                    result.style,
                    result.source,
                    result.text,
                    json.dumps(record, ensure_ascii=False),
                    now,
                )
            )
        if rows:
            conn = self._conn()
            with conn:
                conn.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def iter_results(
        self, backend: str | None = None, model: str | None = None
    ) -> Iterator[CaptionResult]:
        query, args = "SELECT record FROM results", []
        where = []
        if backend:
            where.append("backend = ?")
            args.append(backend)
        if model:
            where.append("model = ?")
            args.append(model)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created, source"
        for (record,) in self._conn().execute(query, args):
            yield CaptionResult.from_dict(json.loads(record))

    def count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        """Close every thread's connection (worker threads read through their own)."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
