"""The results store: every caption ever made, in one SQLite file, keyed by what made it.

The key is (image content hash, backend, model, request fingerprint, backend-options
fingerprint), so the same photo under another name is not recomputed, and changing the style,
prompt or decoding settings is. Rows are committed once per batch in WAL mode: a ``kill -9``
loses at most the batch in flight, and a rerun neither recomputes nor duplicates the rest.
Failures are never stored, so a rerun retries them.

A store that cannot be used (damaged pages, another file at that path, locked by another
process, read-only) is refused when it is opened, in one line that says how to move it aside
(:class:`StoreError`), never image by image. Opening runs ``PRAGMA quick_check``: it reads
every page once, about 0.13 s for 200,000 captions (200 MB) from the page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from captionkit.engine.sinks import to_json
from captionkit.errors import StoreError
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
_COLUMNS = ["key", "sha256", "backend", "model", "style", "source", "text", "record", "created"]


def _column_text(text: str) -> str:
    """SQLite text must be UTF-8: a lone surrogate (an undecodable file-name byte) becomes a
    visible ``\\udce9``. Only the searchable columns use this; ``record`` is exact JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def default_store_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("captionkit")) / "results.sqlite"


def result_key(sha256: str, backend: str, model: str, request_fp: str, options_fp: str) -> str:
    blob = "\x1f".join((sha256, backend, model, request_fp, options_fp))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultStore:
    """Thread-safe reads (one connection per thread), writes from the engine's thread.

    ``readonly`` opens an existing store without writing to it (``captionkit results``);
    ``timeout`` is how long to wait for another process's write lock.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        timeout: float = 30.0,
        check: bool = True,
    ) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise StoreError(
                f"the results store {self.path} is a folder; pass a file path with --store"
            )
        if readonly and not self.path.is_file():
            raise StoreError(f"no results store at {self.path}; pass the right one with --store")
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store folder {self.path.parent}: "
                    f"{exc.strerror or exc}; choose another with --store (or --store none)"
                ) from None
        try:
            conn = self._conn()
            self._check_schema(conn, empty_ok=not readonly)
            if not readonly:
                conn.executescript(_SCHEMA)
            if check:
                rows = conn.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    raise sqlite3.DatabaseError(
                        f"database disk image is malformed: {rows[0][0] if rows else '?'}"
                    )
            if not readonly:  # take the write lock once: a locked or read-only file says so now
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            error = self._error(exc)
            self.close()
            raise error from None

    def _check_schema(self, conn: sqlite3.Connection, *, empty_ok: bool) -> None:
        """Another program's database (its own ``results`` table) is not ours to write to."""
        columns = [row[1] for row in conn.execute("PRAGMA table_info(results)")]
        if columns != _COLUMNS and not (empty_ok and not columns):
            raise sqlite3.DatabaseError("file is not a database: no captionkit results table")

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """One line: what is wrong with the store file, and the command that moves it aside."""
        text = str(exc)
        low = text.lower()
        where = shlex.quote(str(self.path))
        if "not a database" in low or "encrypted" in low:
            aside = shlex.quote(f"{self.path}.not-a-store")
            return StoreError(
                f"{self.path} is not a captionkit results store ({text}); move it aside "
                f"(mv {where} {aside}) or choose another file with --store"
            )
        if "locked" in low or "busy" in low:
            return StoreError(
                f"the results store {self.path} is locked by another process (another "
                "captionkit run?); wait for it to finish, or use another --store"
            )
        if "readonly" in low or "read-only" in low:
            return StoreError(
                f"the results store {self.path} is read-only; make it and its folder writable, "
                "or use another --store (or --store none)"
            )
        if "unable to open" in low:
            return StoreError(
                f"cannot open the results store {self.path} ({text}); check it and its folder, "
                "or use another --store (or --store none)"
            )
        aside = shlex.quote(f"{self.path}.damaged")
        return StoreError(
            f"the results store {self.path} is damaged ({text}); move it aside and rerun "
            f"(missing captions are recomputed): mv {where} {aside} (and its -wal/-shm files "
            "if present), or use another --store (or --store none)"
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Each connection is used by one thread only; check_same_thread=False lets close()
            # release the worker threads' connections from the engine's thread.
            if self.readonly:
                uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, check_same_thread=False)
            else:
                conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
            with self._lock:
                self._all.append(conn)
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against process crashes (kill -9) in WAL mode; only a
                # power cut can lose the last commits, which a rerun then recomputes.
                conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> CaptionResult | None:
        try:
            row = (
                self._conn().execute("SELECT record FROM results WHERE key = ?", (key,)).fetchone()
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from None
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
                    _column_text(result.source),
                    _column_text(result.text or ""),
                    to_json(record),
                    now,
                )
            )
        if rows:
            try:
                conn = self._conn()
                with conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)", rows
                    )
            except sqlite3.Error as exc:
                raise self._error(exc) from None
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
        try:
            for (record,) in self._conn().execute(query, args):
                yield CaptionResult.from_dict(json.loads(record))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def count(self) -> int:
        try:
            return self._conn().execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Close every thread's connection (worker threads read through their own)."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
