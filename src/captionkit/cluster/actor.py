"""One Ray Data actor = one loaded captioner; each call captions one batch of rows.

Ray Data builds the class once per actor (the model loads once, on the actor's GPU when it
has one) and calls it with batches of rows as ``pyarrow`` tables. The work is the engine's
batch function, :func:`captionkit.engine.batch.caption_records`, which runs the same prepare /
caption / finish stages as the single-machine engine: decode and backend preprocessing in
the actor's thread pool (``--workers``) ahead of the model, per-image failures recorded,
a backend bug stopping the job after three batches (the guard lives on the actor).

Ray Data runs two batches on each actor at once (``max_concurrency=2``, see
:data:`CONCURRENT_BATCHES`): while one batch is on the model, the next one is read, decoded
and preprocessed in the actor's threads, so the device does not wait for the CPU work. A
backend that is not ``thread_safe`` still sees one ``caption_batch`` at a time (a lock).

The full result of each image (hash, candidates, backend, model) comes back through the
``store`` seam of ``caption_records``: :class:`_Ledger` records what the stages commit, and
answers no lookups (resume is done before rows reach the actor, by id, so nothing here
holds state that grows with the dataset: memory per actor is flat in the number of inputs).
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any, cast

from captionkit.engine.exports import RESULT_COLUMNS, result_row
from captionkit.inputs.tables import carried_name

if TYPE_CHECKING:
    from captionkit.session import RunSpec
    from captionkit.types import CaptionResult

ID, IMAGE, CAPTION, ERROR = "__id", "__image", "__caption", "__error"
#: Batches an actor works on at once: one on the model, one being prepared.
CONCURRENT_BATCHES = 2


class _Ledger:
    """Duck-types :class:`captionkit.engine.store.ResultStore` for ``caption_records``: keeps
    every fresh result the finish stage commits, by its source key (the row's id)."""

    def __init__(self) -> None:
        self.results: dict[str, CaptionResult] = {}

    def get(self, key: str) -> None:
        return None

    def put_many(self, items: Any) -> int:
        n = 0
        for _, result in items:
            self.results[result.source] = result
            n += 1
        return n


_NOT_SETTINGS = ("api_key", "device")


def settings_of(run: RunSpec) -> dict[str, Any]:
    """What makes two runs' captions comparable; stored in the manifest and every row."""
    return {
        "backend": run.backend,
        # where it runs and the key it uses do not change the captions
        "options": {k: v for k, v in sorted(run.options.items()) if k not in _NOT_SETTINGS},
        "request": run.request.fingerprint(),
        "style": run.request.style,
        "prompt": run.request.prompt,
        "rewrite": run.rewrite,
        "decoration": run.decoration.model_dump(),
    }


class CaptionActor:
    """The callable class handed to ``Dataset.map_batches`` (one instance per actor)."""

    def __init__(self, run: RunSpec) -> None:
        from captionkit import session
        from captionkit.engine.stages import RepeatGuard

        self.run = run
        self.captioner = session.load(run)
        if not self.captioner.thread_safe:  # two batches in flight, one model call at a time
            lock = threading.Lock()
            call = self.captioner.caption_batch

            def caption_batch(inputs: Any, request: Any) -> Any:
                with lock:
                    return call(inputs, request)

            self.captioner.caption_batch = caption_batch  # type: ignore[method-assign]
        self.options = session.run_options(run)
        self.guard = RepeatGuard(self.captioner.name)
        self.settings = json.dumps(settings_of(run), sort_keys=True)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from captionkit.engine.batch import caption_records

        rows = batch.to_pylist()
        ledger = _Ledger()
        out = cast(
            list[dict[str, Any]],
            caption_records(  # rows in, rows out
                self.captioner,
                rows,
                self.run.request,
                image_column=IMAGE,
                key_column=ID,
                caption_column=CAPTION,  # never clobber an input column named "caption"
                error_column=ERROR,
                store=ledger,  # type: ignore[arg-type]  # the ledger records, it stores nothing
                options=self.options,
                guard=self.guard,
            ),
        )
        results = []
        for row in out:
            rid = str(row[ID])
            result = ledger.results.get(rid)
            if result is not None and row[CAPTION] is not None:
                record = result_row(result, id=rid, settings=self.settings)
                record["caption"] = row[CAPTION]  # decorated (prefix, trigger word)
            else:
                record = {
                    **dict.fromkeys(RESULT_COLUMNS),
                    "id": rid,
                    "candidates": [],
                    "backend": self.captioner.name,
                    "model": self.captioner.model_label,
                    "style": self.run.request.style,
                    "settings": self.settings,
                    "error": row[ERROR] or "failed",
                }
            image = row[IMAGE]
            if record["path"] is None and isinstance(image, str):
                record["path"] = image
            for name, value in row.items():
                if name in (ID, IMAGE, CAPTION, ERROR):
                    continue
                record[carried_name(name, RESULT_COLUMNS)] = value
            results.append(record)
        from captionkit.engine.exports import arrow_schema

        extra = [k for k in (results[0] if results else {}) if k not in RESULT_COLUMNS]
        types = [(k, batch.schema.field(_source_name(k, batch.schema.names)).type) for k in extra]
        return pa.Table.from_pylist(results, schema=arrow_schema(types))

    def __del__(self) -> None:  # an actor that goes away releases its model
        captioner = getattr(self, "captioner", None)
        if captioner is not None:
            with contextlib.suppress(Exception):  # best effort at interpreter shutdown
                captioner.close()


def _source_name(name: str, names: list[str]) -> str:
    return name if name in names else name.removeprefix("input_")
