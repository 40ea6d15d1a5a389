"""The batch engine: skip what is done, batch, prefetch, isolate failures, record, write.

One set of stages (``stages.py``: prepare, caption, finish) and three drivers over them:
``runner.py`` streams sources for the CLI and the Python API, ``batcher.py`` turns single
submits into batches for the server, ``batch.py`` captions a batch of records for a Ray Data
actor. ``store.py`` remembers results, ``sinks.py`` writes them, ``progress.py`` shows them.
"""
