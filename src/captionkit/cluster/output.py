"""The cluster run's output folder: Parquet shards, a manifest, and what a rerun skips.

    out/shards/part-<run>-00000.parquet   one row per image (see ``engine.exports.RESULT_COLUMNS``)
    out/manifest.json                     settings, runs, shards and their row counts

Only the driver writes here, each shard under a temporary name then renamed, so a shard is
either whole or absent: a killed driver loses at most the rows it had not yet written, and
those ids are simply missing on the next scan and captioned again. Ids are unique across the
folder: the driver drops any id it has already written or that an earlier run captioned, and
an image that failed before is tried again and its old failure row removed (:meth:`compact`),
so the final output has exactly one row per image.

A folder written with other settings (another model, style, prompt, decoding) is refused:
resuming it would mix two runs' captions under one name.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from captionkit.engine.sinks import atomic_write_text, probe_folder
from captionkit.errors import OutputError

MANIFEST = "manifest.json"
SHARDS = "shards"


class OutputDir:
    """Scan, append to and describe one cluster output folder."""

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path).expanduser()
        self.settings = settings
        self.run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.shards_dir = self.path / SHARDS
        self.manifest: dict[str, Any] = {
            "version": 1,
            "settings": settings,
            "runs": [],
            "shards": [],
        }
        self._seq = 0

    # -- before the run --------------------------------------------------------------------
    def check(self) -> None:
        """Writable, and not another run's output (before any model loads)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(
                f"{self.path} is a file; the cluster output (--output-dir) is a folder"
            )
        try:
            probe_folder(self.path)
        except OSError as exc:
            raise OutputError(
                f"cannot write the cluster output {self.path}: {exc.strerror}; "
                "choose another --output-dir"
            ) from None
        old = self.read_manifest()
        if old is not None:
            if old.get("settings") != self.settings:
                raise OutputError(
                    f"{self.path} holds results made with other settings "
                    f"({_differs(old.get('settings') or {}, self.settings)}); "
                    "choose another --output-dir, or rerun with the same settings to resume"
                )
            self.manifest = old

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{path} cannot be read ({exc}); move the folder aside or choose another "
                "--output-dir"
            ) from None

    def shard_files(self) -> list[Path]:
        if not self.shards_dir.is_dir():
            return []
        return sorted(p for p in self.shards_dir.glob("*.parquet") if not p.name.startswith("."))

    def done_ids(self) -> set[str]:
        """Every id the output holds a caption for. Ids recorded only as failures are not
        done: a rerun tries them again (a timeout, a node lost with its disk), as the
        single-machine store does, and :meth:`compact` then drops the older failure row."""
        import pyarrow.parquet as pq

        done: set[str] = set()
        for shard in self.shard_files():
            table = pq.read_table(shard, columns=["id", "error"])
            for rid, error in zip(
                table.column("id").to_pylist(), table.column("error").to_pylist(), strict=True
            ):
                if rid is not None and error is None:
                    done.add(rid)
        return done

    def compact(self) -> int:
        """Drop every row that a newer shard supersedes (a failure retried by a later run),
        so each id has exactly one row; shards are rewritten whole (temporary + rename).

        Idempotent: a driver killed between writing the retry and compacting leaves both
        rows until the next run, whose start compacts again. Returns the rows dropped.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shard_files()
        latest: dict[str, int] = {}
        for i, shard in enumerate(shards):  # names sort by run time, then sequence
            for rid in pq.read_table(shard, columns=["id"]).column("id").to_pylist():
                latest[rid] = i
        dropped = 0
        for i, shard in enumerate(shards):
            table = pq.read_table(shard)
            keep = [latest[rid] == i for rid in table.column("id").to_pylist()]
            if all(keep):
                continue
            kept = table.filter(pa.array(keep, pa.bool_()))
            dropped += table.num_rows - kept.num_rows
            name = f"{SHARDS}/{shard.name}"
            entries = [e for e in self.manifest["shards"] if e["file"] != name]
            if kept.num_rows:
                tmp = shard.with_name(f".{shard.name}.tmp")
                pq.write_table(kept, tmp)
                os.replace(tmp, shard)
                failed = sum(1 for e in kept.column("error").to_pylist() if e is not None)
                entries.append({"file": name, "rows": kept.num_rows, "failed": failed})
            else:
                shard.unlink()
            self.manifest["shards"] = sorted(entries, key=lambda e: e["file"])
        if dropped:
            self._write_manifest()
        return dropped

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row of the output, shard by shard (exports read this)."""
        import pyarrow.parquet as pq

        for shard in self.shard_files():
            yield from pq.read_table(shard).to_pylist()

    # -- during the run --------------------------------------------------------------------
    def start(self) -> None:
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.compact()  # what a killed run left superseded
        self.manifest["runs"].append({"run": self.run_id, "started": time.time()})
        self._write_manifest()

    def write_shard(self, rows: list[dict[str, Any]]) -> Path:
        """Write ``rows`` as one new shard, whole or not at all, and list it in the manifest."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from captionkit.engine.exports import RESULT_COLUMNS, arrow_schema

        extra = [k for k in rows[0] if k not in RESULT_COLUMNS]
        schema = arrow_schema([(k, _type_of(rows, k)) for k in extra])
        table = pa.Table.from_pylist(rows, schema=schema)
        name = f"part-{self.run_id}-{self._seq:05d}.parquet"
        self._seq += 1
        final = self.shards_dir / name
        tmp = self.shards_dir / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(
                f"cannot write {final}: {exc.strerror}; finished shards are kept, rerun to resume"
            ) from None
        failed = sum(1 for r in rows if r.get("error"))
        self.manifest["shards"].append(
            {"file": f"{SHARDS}/{name}", "rows": len(rows), "failed": failed}
        )
        self._write_manifest()
        return final

    def finish(self, **counts: Any) -> None:
        self.compact()
        run = self.manifest["runs"][-1]
        run.update(finished=time.time(), **counts)
        self.manifest["rows"] = sum(s["rows"] for s in self.manifest["shards"])
        self.manifest["failed"] = sum(s["failed"] for s in self.manifest["shards"])
        self._write_manifest()

    def _write_manifest(self) -> None:
        try:
            atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=1) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path / MANIFEST}: {exc.strerror}") from None


def _type_of(rows: list[dict[str, Any]], key: str) -> Any:
    import pyarrow as pa

    try:
        kind = pa.array([r.get(key) for r in rows]).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
    return pa.string() if pa.types.is_null(kind) else kind


def _differs(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3])


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of a cluster output folder (for ``captionkit results export --from``)."""
    folder = Path(path).expanduser()
    if not (folder / MANIFEST).exists() and not (folder / SHARDS).is_dir():
        from captionkit.errors import InputError

        raise InputError(f"{folder} is not a cluster output folder (no {MANIFEST})")
    return OutputDir(folder, {}).rows()
